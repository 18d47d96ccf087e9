#!/usr/bin/env bash
# Every test of aligner-lens, from a fresh clone: Rust (unit, end-to-end, the server through
# real HTTP, the knob page in headless Chromium), formatting and lints, the Python package
# (with the notebook tour and the official openai client), and the Slurm recipe on a real
# one-node Slurm. What a part needs is installed first where this machine allows it (PyPI
# into .venv; as root with apt: Chromium, Slurm; npm: playwright-core); a part that cannot
# run says SKIPPED with its reason. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$SECONDS
step() { printf '\n== %s (%ds)\n' "$1" "$((SECONDS - started))"; }
as_root_with_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
apt_updated=""
apt_install() {
    as_root_with_apt || return 1
    if [ -z "$apt_updated" ]; then apt-get update -qq >/dev/null && apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

step "prerequisites"
# The Python side: one venv for the package's tests, the notebook and the openai client.
venv="${ALENS_VENV:-$root/.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r python/requirements-test.txt
export PYTHON="$venv/bin/python"
# The browser test: Debian's Chromium driven by playwright-core from npm.
if [ ! -x /usr/bin/chromium ]; then
    apt_install chromium || echo "no chromium: the browser test will say SKIPPED"
fi
if command -v npm >/dev/null 2>&1 && [ ! -d serve/tests/browser/node_modules/playwright-core ]; then
    npm install --silent --no-audit --no-fund --prefix serve/tests/browser >/dev/null \
        || echo "npm could not install playwright-core: the browser test will say SKIPPED"
fi

step "cargo test"
cargo test

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "python package"
python/test.sh

if [ -x deploy/slurm/test-slurm.sh ]; then
    step "the Slurm recipe"
    deploy/slurm/test-slurm.sh
fi

step "done"
