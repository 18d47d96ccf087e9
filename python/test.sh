#!/usr/bin/env bash
# Builds the alens Python package from this checkout into a venv and runs its tests.
# Needs only PyPI (and a Rust toolchain): pip builds the package with maturin.
#
#   python/test.sh [pytest args]
#
# ALENS_VENV: the venv (default: .venv at the repository root); PYTHON: the interpreter that
# creates it (default: python3). The tests compare with the CLI: ALENS_BIN, else
# target/debug/alens (built here when missing).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${ALENS_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
pip_quiet=(--quiet --disable-pip-version-check)

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install "${pip_quiet[@]}" -r "$root/python/requirements-test.txt"

# The tests build the package with cargo's dev profile, which shares its compiled
# dependencies with `cargo test` (a release build is a second cold build of candle); the
# arithmetic is the same, so the package still equals the CLI bit for bit. `pip install
# ./python` without this builds the release profile, what users get.
export MATURIN_PEP517_ARGS="${MATURIN_PEP517_ARGS:---profile dev}"
started=$(date +%s)
"$venv/bin/python" -m pip install "${pip_quiet[@]}" --force-reinstall --no-deps "$root/python"
echo "pip install ./python: $(( $(date +%s) - started ))s"

if [ -z "${ALENS_BIN:-}" ] && [ ! -x "$root/target/debug/alens" ]; then
    (cd "$root" && cargo build -p alens)
fi

# From the repository root, so `import alens` is the installed package, not python/alens.
cd "$root"
"$venv/bin/python" -c "import alens; m = alens.Model('mini-aligner'); print(m.run_with_cache('hello', names=['blocks.0.hook_resid_post'])[1]['blocks.0.hook_resid_post'].shape)"
exec "$venv/bin/pytest" -q "$root/python/tests" "$@"
