#!/usr/bin/env bash
# The knob page in a real browser: headless Chromium (Debian's `chromium`) driven by
# playwright-core loads `alens serve`'s page, fills in a record, moves the slider to the
# lowest and the highest alpha, and checks the page shows exactly what /v1/correct returns;
# then the side-by-side grid. Installs nothing; skips with one line where something is missing.
#
#   npm install --prefix serve/tests/browser playwright-core   # once
#   cargo build && serve/tests/browser.sh [SCREENSHOT.png]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
chromium=${CHROMIUM:-/usr/bin/chromium}
alens=${ALENS:-$repo/target/debug/alens}
shot=${1:-$repo/target/serve-knob.png}
if [ ! -x "$chromium" ] || ! command -v node >/dev/null; then
    echo "skipped: the browser test needs $chromium and node (apt-get install chromium nodejs)"
    exit 0
fi
if [ ! -d "$here/browser/node_modules/playwright-core" ]; then
    echo "skipped: the browser test needs playwright-core (npm install --prefix serve/tests/browser playwright-core)"
    exit 0
fi
if [ ! -x "$alens" ]; then
    echo "error: no alens binary at $alens (cargo build, or set ALENS)" >&2
    exit 1
fi
log=$(mktemp)
"$alens" serve --model mini-aligner --port 0 >"$log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; rm -f "$log"' EXIT
url=""
for _ in $(seq 1 300); do
    url=$(sed -n 's/^alens serve: listening on //p' "$log")
    [ -n "$url" ] && break
    kill -0 $server 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$url" ] || { echo "error: alens serve printed no URL" >&2; cat "$log" >&2; exit 1; }
node "$here/browser/knob.mjs" "$url" "$chromium" "$shot"
kill -TERM $server
wait $server
echo "browser test passed ($url; screenshot $shot)"
