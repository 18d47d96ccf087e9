#!/usr/bin/env bash
# Opens the demo's report page in headless Chromium and checks that it loads with every image
# decoded (the page records the count of broken images in <body data-broken-images>).
# Usage: scripts/check_report.sh alens-demo/index.html [screenshot.png]
set -euo pipefail
page="$(realpath "$1")"
shot="${2:-}"
chromium_bin="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$chromium_bin" ]; then
  echo "SKIPPED: no chromium on this machine (apt-get install chromium to run this check)"
  exit 0
fi
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
       --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --virtual-time-budget=5000)
dom="$("$chromium_bin" "${flags[@]}" --dump-dom "file://$page" 2>/dev/null)"
broken="$(grep -o 'data-broken-images="[0-9]*"' <<<"$dom" | grep -o '[0-9]*' || true)"
images="$(grep -o '<img ' <<<"$dom" | wc -l)"
if [ -z "$broken" ]; then
  echo "FAILED: the page did not finish loading in Chromium"; exit 1
fi
if [ "$broken" != "0" ]; then
  echo "FAILED: $broken of $images images did not load"; exit 1
fi
if [ -n "$shot" ]; then
  "$chromium_bin" "${flags[@]}" --window-size=1200,3000 --screenshot="$(realpath -m "$shot")" "file://$page" 2>/dev/null
fi
echo "OK: report loads in Chromium with all $images images"
