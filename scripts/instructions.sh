#!/usr/bin/env bash
# Instructions per validation, as docs/benchmarks.md reports them: valgrind's callgrind counts the instructions
# the release binary (static musl, with symbols) executes while one keep-alive client sends validations to
# it, with WORKERS=1 and the fake RiskShield on 127.0.0.1.
#
# - The service runs twice per log level, once for 500 and once for 2,500 validations; the figure is
#   (count_2500 - count_500) / 2000, so start-up, the first connections and shutdown cancel out.
# - Only the worker threads are counted (a thread whose profile has HTTP parsing or a handler in it). Under
#   valgrind the main thread accrues instructions in proportion to wall time, which it does not do natively,
#   and the log writer only hands batches to the kernel.
# - Counts move between runs: how often a request's future is polled, and the clock read, before the answer
#   arrives depends on timing (about ±0.5 % on a quiet machine, a few per cent on a loaded one). Compare two
#   builds back to back (--binary, --fake), more than once, not against old figures.
#
# Usage: scripts/instructions.sh [--binary PATH] [--fake PATH]
#   Without them both are built here with symbols (target/instr). LEVELS (env, default "WARN INFO"): the
#   LOG_LEVELs measured, one figure each. Everything runs on 127.0.0.1; everything started is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN='' FAKE=''
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BIN=${2:?}; shift 2 ;;
    --fake) FAKE=${2:?}; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--fake PATH]" >&2; exit 64 ;;
  esac
done
LEVELS=${LEVELS:-WARN INFO}
log() { printf '[instructions] %s\n' "$*" >&2; }

command -v valgrind >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }

# The shipped build (scripts/tools.sh: musl, so musl's memcpy and mimalloc are what is counted) with its
# symbols kept; its own target dir, so the shipped binary is not rebuilt. Two cargo invocations, as there:
# building the example in the same command would unify the dev-dependencies' features into the service.
TARGET=x86_64-unknown-linux-musl
build() {
  command -v musl-gcc >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null; }
  rustup target add "$TARGET" >/dev/null 2>&1 || true
  CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_TARGET_DIR=target/instr \
    cargo build --locked --release --target "$TARGET" "$@" >&2
}
if [ -z "$BIN" ]; then log "building the service with symbols"; build --bin applicant-validator; BIN=target/instr/$TARGET/release/applicant-validator; fi
if [ -z "$FAKE" ]; then log "building the fake RiskShield"; build --example fake_riskshield; FAKE=target/instr/$TARGET/release/examples/fake_riskshield; fi

WORK=$(mktemp -d)
FAKE_PID='' SVC_PID=''
cleanup() {
  for pid in $SVC_PID $FAKE_PID; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

probe() { python3 scripts/bench_probe.py "$@"; }
FAKE_PORT=$(probe free-port)
"$FAKE" --listen "127.0.0.1:$FAKE_PORT" --threads 1 >"$WORK/fake.log" 2>&1 &
FAKE_PID=$!
probe wait-http "$FAKE_PORT" /health

# The client: waits for /health (valgrind starts slowly), then sends N validations on that one connection.
cat >"$WORK/client.py" <<'PY'
import http.client, json, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
deadline = time.monotonic() + 300
while True:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", "/health")
        answer = conn.getresponse()
        answer.read()
        if answer.status == 200:
            break
    except OSError:
        pass
    conn.close()
    if time.monotonic() > deadline:
        sys.exit("the service did not answer /health")
    time.sleep(0.2)
body = json.dumps({"firstName": "Thandi", "lastName": "Nkosi", "idNumber": "9001011234088"})
for _ in range(n):
    conn.request("POST", "/api/v1/validate", body, {"Content-Type": "application/json"})
    answer = conn.getresponse()
    text = answer.read()
    if answer.status != 200:
        sys.exit(f"validation answered {answer.status}: {text[:200]!r}")
conn.close()
PY

# count LEVEL N: sets COUNT to the instructions the worker threads executed in one run of N validations.
count() {
  local level=$1 n=$2 port out f status=0
  COUNT=0
  port=$(probe free-port)
  out=$WORK/$level-$n
  mkdir "$out"
  HOST=127.0.0.1 PORT=$port WORKERS=1 LOG_LEVEL=$level LOG_FORMAT=json RISKSHIELD_API_KEY=instr-key \
    RISKSHIELD_API_URL="http://127.0.0.1:$FAKE_PORT/v1" \
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/callgrind.out" \
    "$BIN" serve >"$out/service.log" 2>&1 &
  SVC_PID=$!
  python3 "$WORK/client.py" "$port" "$n"
  kill -TERM "$SVC_PID"
  wait "$SVC_PID" || status=$?
  SVC_PID=
  [ "$status" -eq 0 ] || { log "the service exited $status"; cat "$out/service.log" >&2; exit 1; }
  for f in "$out"/callgrind.out-*; do
    if grep -qE '^c?fn=\([0-9]+\) .*(httparse::|hyper::proto|handlers::)' "$f"; then
      COUNT=$(( COUNT + $(awk '/^summary:/ {print $2}' "$f") ))
    fi
  done
  [ "$COUNT" -gt 0 ] || { log "no worker thread found in the profiles of $level-$n"; exit 1; }
}

for level in $LEVELS; do
  count "$level" 500; c500=$COUNT
  count "$level" 2500; c2500=$COUNT
  log "LOG_LEVEL=$level: worker threads $c500 (500 validations), $c2500 (2,500 validations)"
  python3 -c "import sys; print(f'instructions per validation (LOG_LEVEL={sys.argv[1]}): {round((int(sys.argv[3]) - int(sys.argv[2])) / 2000):,}')" \
    "$level" "$c500" "$c2500"
done
