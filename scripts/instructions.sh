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
# Usage: scripts/instructions.sh [--binary PATH] [--fake PATH] [--issuer PATH] [--auth]
#   Without them the binaries are built here with symbols (target/instr). LEVELS (env, default "WARN INFO"): the
#   LOG_LEVELs measured, one figure each. --auth measures each level twice, interleaved: as above, and with
#   AUTH_MODE=entra and a valid bearer token from a local issuer (examples/fake_issuer.rs), so the two figures'
#   difference is what caller authentication costs per validation once the token is cached. Everything runs on
#   127.0.0.1; everything started is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN='' FAKE='' ISSUER='' AUTH=false
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BIN=${2:?}; shift 2 ;;
    --fake) FAKE=${2:?}; shift 2 ;;
    --issuer) ISSUER=${2:?}; shift 2 ;;
    --auth) AUTH=true; shift ;;
    *) echo "usage: $0 [--binary PATH] [--fake PATH] [--issuer PATH] [--auth]" >&2; exit 64 ;;
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
if $AUTH && [ -z "$ISSUER" ]; then log "building the fake issuer"; build --example fake_issuer; ISSUER=target/instr/$TARGET/release/examples/fake_issuer; fi

WORK=$(mktemp -d)
FAKE_PID='' SVC_PID='' ISSUER_PID=''
cleanup() {
  for pid in $SVC_PID $FAKE_PID $ISSUER_PID; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

probe() { python3 scripts/bench_probe.py "$@"; }
FAKE_PORT=$(probe free-port)
"$FAKE" --listen "127.0.0.1:$FAKE_PORT" --threads 1 >"$WORK/fake.log" 2>&1 &
FAKE_PID=$!
probe wait-http "$FAKE_PORT" /health
AUTH_ENV=() TOKEN=''
if $AUTH; then
  "$ISSUER" >"$WORK/issuer.json" 2>"$WORK/issuer.log" &
  ISSUER_PID=$!
  AUTH_ENV=(AUTH_MODE=entra "AUTH_ISSUER=$(probe wait-json "$WORK/issuer.json" issuer)"
    "AUTH_AUDIENCE=$(probe wait-json "$WORK/issuer.json" audience)"
    "AUTH_REQUIRED_ROLE=$(probe wait-json "$WORK/issuer.json" role)"
    "EXTRA_CA_CERTS=$(probe wait-json "$WORK/issuer.json" ca_file)")
  TOKEN=$(probe wait-json "$WORK/issuer.json" token)
fi

# The client: waits for /ready (valgrind starts slowly; with AUTH_MODE=entra the issuer's keys come first), then
# sends N validations on that one connection.
cat >"$WORK/client.py" <<'PY'
import http.client, json, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
headers = {"Content-Type": "application/json"}
if len(sys.argv) > 3:
    headers["Authorization"] = "Bearer " + sys.argv[3]
deadline = time.monotonic() + 300
while True:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", "/ready")
        answer = conn.getresponse()
        answer.read()
        if answer.status == 200:
            break
    except OSError:
        pass
    conn.close()
    if time.monotonic() > deadline:
        sys.exit("the service did not become ready")
    time.sleep(0.2)
body = json.dumps({"firstName": "Thandi", "lastName": "Nkosi", "idNumber": "9001011234088"})
for _ in range(n):
    conn.request("POST", "/api/v1/validate", body, headers)
    answer = conn.getresponse()
    text = answer.read()
    if answer.status != 200:
        sys.exit(f"validation answered {answer.status}: {text[:200]!r}")
conn.close()
PY

# count LEVEL N [auth]: sets COUNT to the instructions the worker threads executed in one run of N validations
# (with caller authentication when the third argument is given).
count() {
  local level=$1 n=$2 mode=${3:-} port out f status=0 env=() token=()
  COUNT=0
  port=$(probe free-port)
  out=$WORK/$level-$n${mode:+-$mode}
  mkdir "$out"
  if [ -n "$mode" ]; then env=("${AUTH_ENV[@]}"); token=("$TOKEN"); fi
  env "${env[@]}" HOST=127.0.0.1 PORT=$port WORKERS=1 LOG_LEVEL=$level LOG_FORMAT=json RISKSHIELD_API_KEY=instr-key \
    RISKSHIELD_API_URL="http://127.0.0.1:$FAKE_PORT/v1" \
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/callgrind.out" \
    "$BIN" serve >"$out/service.log" 2>&1 &
  SVC_PID=$!
  python3 "$WORK/client.py" "$port" "$n" "${token[@]}"
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

MODES=('')
$AUTH && MODES=('' auth)
for level in $LEVELS; do
  for mode in "${MODES[@]}"; do
    count "$level" 500 "$mode"; c500=$COUNT
    count "$level" 2500 "$mode"; c2500=$COUNT
    label="LOG_LEVEL=$level${mode:+, AUTH_MODE=entra}"
    log "$label: worker threads $c500 (500 validations), $c2500 (2,500 validations)"
    python3 -c "import sys; print(f'instructions per validation ({sys.argv[1]}): {round((int(sys.argv[3]) - int(sys.argv[2])) / 2000):,}')" \
      "$label" "$c500" "$c2500"
  done
done
