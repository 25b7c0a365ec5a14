#!/usr/bin/env bash
# Screenshot a report.html in headless Chromium (Debian's `chromium` package:
# `apt-get install -y chromium`), to check by eye that the inline SVG plots render.
#
#   scripts/screenshot-report.sh REPORT_HTML OUT_PNG
#
# WINDOW_SIZE (default 1200,3000) sets the viewport, i.e. the screenshot's size in CSS pixels.
# The browser gets a throw-away profile and no network, sync or component updates, so the
# screenshot is of the file alone (report.html has no external resources anyway).
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 REPORT_HTML OUT_PNG" >&2
    exit 2
fi
html=$1
out=$2
if [[ ! -f $html ]]; then
    echo "$0: $html: no such file" >&2
    exit 2
fi
browser=${CHROMIUM:-chromium}
if ! command -v "$browser" >/dev/null 2>&1; then
    echo "$0: $browser not found; install Debian's chromium (apt-get install -y chromium) or set CHROMIUM" >&2
    exit 2
fi

html_abs=$(realpath "$html")
out_abs=$(realpath -m "$out")
mkdir -p "$(dirname "$out_abs")"
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT

# Chromium prints harmless D-Bus/GPU noise on stderr in containers; keep it unless it fails.
log="$profile/chromium.log"
if ! timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --user-data-dir="$profile" \
    --screenshot="$out_abs" --window-size="${WINDOW_SIZE:-1200,3000}" \
    "file://$html_abs" >"$log" 2>&1; then
    cat "$log" >&2
    echo "$0: chromium failed" >&2
    exit 1
fi
if [[ ! -s $out_abs ]]; then
    cat "$log" >&2
    echo "$0: chromium wrote no screenshot" >&2
    exit 1
fi
echo "$out_abs"
