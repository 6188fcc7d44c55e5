#!/usr/bin/env python3
"""Checks the declared `rust-version` honestly, with the one toolchain this machine has: no
dependency the library builds with (all features, normal edges) may declare a newer one.
That is a lower bound, not a build on the old compiler (no other toolchain can be fetched
here); the language features the crate itself uses are checked by clippy's
`incompatible_msrv` lint, which reads the same `rust-version`."""
import json
import subprocess
import sys


def version(text):
    return tuple(int(p) for p in text.split(".")[:3]) + (0,) * (3 - len(text.split(".")[:3]))


meta = json.loads(subprocess.check_output(
    ["cargo", "metadata", "--format-version", "1", "--locked", "--all-features"]))
ours = next(p for p in meta["packages"] if p["name"] == "pandaprobe")
declared = ours["rust_version"]
tree = subprocess.check_output(
    ["cargo", "tree", "--locked", "-p", "pandaprobe", "-e", "normal", "--all-features",
     "--prefix", "none", "--format", "{p}"], text=True)
used = {line.split()[0] + " " + line.split()[1].lstrip("v") for line in tree.splitlines() if line.strip()}
newest = ("", "0")
for p in meta["packages"]:
    if p["name"] != "pandaprobe" and f"{p['name']} {p['version']}" in used and p.get("rust_version"):
        if version(p["rust_version"]) > version(newest[1]):
            newest = (f"{p['name']} {p['version']}", p["rust_version"])
print(f"declared rust-version {declared}; the newest any dependency needs: {newest[1]} ({newest[0]})")
if version(newest[1]) > version(declared):
    sys.exit("rust-version is older than a dependency needs: raise it")
