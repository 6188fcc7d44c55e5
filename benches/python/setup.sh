#!/usr/bin/env bash
# Create (once) the virtualenv that runs the Python-SDK baseline benchmark and
# print its python interpreter's absolute path on stdout. Everything else goes
# to stderr. Idempotent: a second run installs nothing when requirements.txt is
# unchanged and the venv still works.
#
#   PY_BENCH_VENV   venv location (default target/py-bench-venv); a relative
#                   path is taken relative to the repository root, not the cwd.
#   PYTHON          interpreter used to create the venv (default python3).
set -euo pipefail

here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
repo_root="$(cd -- "$here/../.." && pwd -P)"
req="$here/requirements.txt"

venv="${PY_BENCH_VENV:-target/py-bench-venv}"
case "$venv" in
  /*) ;;
  *) venv="$repo_root/$venv" ;;
esac
py="$venv/bin/python"
stamp="$venv/.bench-requirements.sha256"

want="$(sha256sum "$req" | cut -d' ' -f1)"

venv_ok() {
  [ -x "$py" ] && "$py" -c 'import sys; sys.exit(0)' >/dev/null 2>&1
}

if ! venv_ok; then
  echo "setup.sh: creating virtualenv at $venv" >&2
  rm -rf -- "$venv"
  mkdir -p -- "$(dirname -- "$venv")"
  "${PYTHON:-python3}" -m venv "$venv" >&2
fi

have="$(cat "$stamp" 2>/dev/null || true)"
if [ "$have" != "$want" ] || ! "$py" -c 'import pandaprobe' >/dev/null 2>&1; then
  echo "setup.sh: installing $req into $venv" >&2
  "$py" -m pip install --quiet --disable-pip-version-check --no-input -r "$req" >&2
  "$py" -c 'import pandaprobe, sys; print("setup.sh: pandaprobe", pandaprobe.__version__, file=sys.stderr)' 
  printf '%s\n' "$want" >"$stamp"
else
  echo "setup.sh: $venv already has requirements.txt installed" >&2
fi

# Absolute, normalised path of the venv's interpreter (not resolved through its
# symlink: the venv only works when started as <venv>/bin/python), and nothing
# else, on stdout.
printf '%s/bin/python\n' "$(cd -- "$venv" && pwd -P)"
