#!/usr/bin/env bash
# Sourced by the scripts in scripts/ and by .ci/run: the few things each of them needs and that used to be
# written out again in every one (a log line, root for a package install, a free port, waiting for a server,
# stopping what was started). One copy means one behaviour: every script logs the same way, asks for root
# the same way and never leaves a process behind.
#
#   log MSG...                  one line on stderr, prefixed with the script's name
#   die MSG...                  log, then exit 1
#   as_root CMD...              CMD as root: directly when already root, else through sudo
#   apt_install PKG...          installs the packages that are not installed yet (apt-get update first, once)
#   free_port                   prints a TCP port on 127.0.0.1 that nothing listens on
#   wait_http URL [TIMEOUT_S]   until URL answers with any HTTP status (default 30 s); fails after that
#   start_bg NAME LOG CMD...    starts CMD in the background, output to LOG; its PID goes to $BG_PID and onto
#                               the list stop_all works through
#   stop_all                    SIGTERM to every process start_bg started, SIGKILL after 5 s; for a trap
#
# Plain bash, coreutils and Python's standard library. Sourcing it sets no option and no trap: the caller
# keeps its own `set -euo pipefail` and decides where stop_all runs.

LIB_NAME="${LIB_NAME:-$(basename "$0" .sh)}"
LIB_PIDS=()
LIB_PID_NAMES=()
LIB_APT_UPDATED=0
BG_PID=""

log() { printf '%s: %s\n' "$LIB_NAME" "$*" >&2; }

die() {
    log "$@"
    exit 1
}

as_root() {
    if [[ "$(id -u)" == 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo -- "$@"
    else
        die "needs root for: $* (run as root, or install sudo)"
    fi
}

# Only the packages dpkg does not list as installed are passed to apt-get, so a machine that has them all is
# left alone (no update, no root needed).
apt_install() {
    local absent=() pkg
    for pkg in "$@"; do
        [[ "$(dpkg-query -W -f '${db:Status-Status}' "$pkg" 2>/dev/null)" == installed ]] || absent+=("$pkg")
    done
    ((${#absent[@]})) || return 0
    log "installing ${absent[*]} (apt-get)"
    if ((!LIB_APT_UPDATED)); then
        as_root apt-get update -qq
        LIB_APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${absent[@]}" >/dev/null
}

# The kernel picks the port (bind to port 0), so it is free at that moment; a caller binds it soon after.
free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# Any status counts (a 503 from /ready still means the server is up); no proxy is consulted.
wait_http() {
    local url="$1" timeout_s="${2:-30}"
    python3 - "$url" "$timeout_s" <<'PY' || die "no HTTP answer from $url within ${timeout_s}s"
import sys, time, urllib.error, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
while True:
    try:
        opener.open(url, timeout=2).close()
        break
    except urllib.error.HTTPError:
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(0.05)
PY
}

start_bg() {
    local name="$1" logfile="$2"
    shift 2
    "$@" >"$logfile" 2>&1 </dev/null &
    BG_PID=$!
    LIB_PIDS+=("$BG_PID")
    LIB_PID_NAMES+=("$name")
}

# lib_alive PID: the process exists and has not exited (an exited child stays a zombie until it is reaped).
# The state is the field after the command name, which is in parentheses and may hold spaces.
lib_alive() { [[ -e "/proc/$1" && "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d ' ' -f 1)" != Z ]]; }

# Newest first, so a service goes before the fake it calls. Only the recorded PIDs are signalled.
stop_all() {
    local i pid deadline
    for ((i = ${#LIB_PIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM "${LIB_PIDS[i]}" 2>/dev/null || true
    done
    deadline=$((SECONDS + 5))
    for ((i = ${#LIB_PIDS[@]} - 1; i >= 0; i--)); do
        pid="${LIB_PIDS[i]}"
        while lib_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
        if lib_alive "$pid"; then
            log "${LIB_PID_NAMES[i]} (pid $pid) did not stop on SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    LIB_PIDS=()
    LIB_PID_NAMES=()
}
