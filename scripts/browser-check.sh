#!/usr/bin/env bash
# The /docs page in a real browser: starts the service in demo mode on a free loopback port and drives Debian's
# headless Chromium through the DevTools protocol (scripts/browser_check.py, Python's standard library only):
# the page loads with no console error or CSP violation, the "Try it" form sends a valid applicant and shows
# 200 with its score, an invalid one shows the 422, nothing typed lands in the address or in storage, and with
# JavaScript off the form stays hidden behind its <noscript> note. Fails on any of that; one summary line last.
#
# Usage: scripts/browser-check.sh [BINARY]
#   BINARY  the service binary to run; default: the static release binary, built as scripts/conformance.sh
#           builds it (CI calls this right after conformance, so nothing is rebuilt)
# Env:    BROWSER_CHECK_SCREENSHOT=PATH  also save a PNG of the page after the form was used
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# --- tools -------------------------------------------------------------------------------------------------
command -v chromium >/dev/null || apt_install chromium
CHROMIUM=$(command -v chromium)
log "$("$CHROMIUM" --version 2>/dev/null | head -n 1)"

if [[ $# -ge 1 ]]; then
  BIN=$1
else
  log "building the static release binary"
  . scripts/tools.sh
  build_service
  BIN=$SERVICE_BIN
fi
if [[ ! -x "$BIN" ]]; then
  log "no executable service binary at $BIN"
  exit 1
fi

# --- the service (started and stopped by scripts/lib.sh) ---------------------------------------------------
WORK=$(mktemp -d)
trap 'stop_all; rm -rf "$WORK"' EXIT

PORT=$(free_port)
start_bg service "$WORK/service.log" env HOST=127.0.0.1 PORT="$PORT" DEMO_MODE=true LOG_LEVEL=WARN "$BIN" serve
if ! (wait_http "http://127.0.0.1:$PORT/health"); then
  log "the service did not come up; its output:"
  cat "$WORK/service.log" >&2
  exit 1
fi

# --- the browser -------------------------------------------------------------------------------------------
shot=()
if [[ -n "${BROWSER_CHECK_SCREENSHOT:-}" ]]; then shot=(--screenshot "$BROWSER_CHECK_SCREENSHOT"); fi
# Chromium's own settings and caches (dconf, crash reports) go to this run's temporary folder, not the home
# directory, so the check leaves nothing behind.
if ! XDG_CONFIG_HOME="$WORK/config" XDG_CACHE_HOME="$WORK/cache" \
  python3 scripts/browser_check.py "${shot[@]}" "$CHROMIUM" "http://127.0.0.1:$PORT"; then
  log "the service's log, last lines:"
  tail -n 20 "$WORK/service.log" >&2
  exit 1
fi
