#!/usr/bin/env python3
"""Fail when a crate's files import each other in a circle.

Reads every `crate::`, `super::` and `self::` path in a crate's `src/` (in `use` items, braces
expanded, and in expressions), resolves it to the file that defines the module it names, and
looks for strongly connected components in the resulting file graph. Test code is left out:
files named `tests.rs` and everything from a `#[cfg(test)]` module to the end of its file (our
files keep their tests last). A module's `mod x;` declaration is not an import.

Usage: import_cycles.py <crate-src-dir>...   (exit 1 and a list of the circles if any)
"""
import os
import re
import sys

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def module_of(src, path):
    """The module path (list of names) a file defines, e.g. src/worker/mod.rs -> ['worker']."""
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return rel


def file_of(files, module):
    """The file of the longest prefix of `module` that is a module of this crate."""
    for n in range(len(module), -1, -1):
        key = tuple(module[:n])
        if key in files:
            return files[key]
    return None


def expand(tree):
    """`a::{b, c::{d, e}}` -> ['a::b', 'a::c::d', 'a::c::e'] (aliases and globs dropped)."""
    tree = tree.strip()
    brace = tree.find("{")
    if brace < 0:
        return [tree.split(" as ")[0].strip()]
    head, body = tree[:brace], tree[brace + 1 : tree.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for part in parts:
        if part.strip():
            out += [head + p for p in expand(part)]
    return out


def strip_tests(text):
    cut = re.search(r"#\[cfg\(test\)\]\s*(pub(\([a-z]+\))?\s+)?mod\s+" + IDENT + r"\s*\{", text)
    text = text[: cut.start()] if cut else text
    text = re.sub(r"//[^\n]*", "", text)
    return text


def edges(src):
    files = {}
    for root, _, names in os.walk(src):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(root, name)
                files[tuple(module_of(src, path))] = path
    graph = {path: set() for path in files.values()}
    reexports = {}
    root = files.get(())
    if root:
        for use in re.finditer(r"\bpub\s+use\s+([^;]+);", strip_tests(open(root).read())):
            for p in expand(use.group(1)):
                names = [n for n in p.replace(" ", "").split("::") if n and n != "crate"]
                if names:
                    reexports[names[-1]] = names
    for module, path in files.items():
        if os.path.basename(path).endswith("tests.rs"):
            continue
        text = strip_tests(open(path, encoding="utf-8").read())
        here = list(module)
        # the module `super` and `self` are relative to
        paths = []
        for use in re.finditer(r"\buse\s+([^;]+);", text):
            paths += expand(use.group(1))
        paths += re.findall(r"\b((?:crate|super|self)(?:::" + IDENT + r")+)", text)
        for p in paths:
            names = [n for n in p.replace(" ", "").split("::") if n and n != "*"]
            if not names:
                continue
            if names[0] == "crate":
                target = names[1:]
            elif names[0] in ("super", "self"):
                base = list(here)
                while names and names[0] in ("super", "self"):
                    if names.pop(0) == "super":
                        base = base[:-1]
                target = base + names
            elif tuple(here + names[:1]) in files:
                target = here + names  # a child module, named without `self::`
            else:
                continue
            if len(target) == 1 and tuple(target) not in files:
                # `crate::Client`: an item the crate root re-exports from its module
                target = reexports.get(target[0], target)
            dest = file_of(files, target)
            if dest and dest != path:
                graph[path].add(dest)
    return graph


def cycles(graph):
    """Tarjan's strongly connected components with more than one file."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    bad = False
    for src in sys.argv[1:]:
        graph = edges(src)
        found = cycles(graph)
        for comp in found:
            bad = True
            print(f"import circle in {src} ({len(comp)} files):")
            members = set(comp)
            for f in comp:
                inside = sorted(d for d in graph[f] if d in members)
                print(f"  {f} -> {', '.join(inside)}")
        if not found:
            print(f"{src}: {len(graph)} files, no import circle")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
