#!/usr/bin/env bash
# Measures applicant-validator against the best plain proxy (nginx) and the raw fake upstream, in one run,
# interleaved, and reports ratios (absolute numbers drift on a shared machine; ratios in one run do not).
#
#   A:  POST /v1/score straight to the fake RiskShield                 (the physical limit of this hop)
#   B:  the same POST through nginx proxy_pass with keepalive, no access log
#   BJ: the same through nginx with a JSON access log to a file        (buffered like the service's logs)
#   C:  POST /api/v1/validate through applicant-validator, LOG_LEVEL=WARN (no line per request)
#   CI: the same at LOG_LEVEL=INFO, a JSON line per request and per upstream attempt to a file
#   L:  C with per-client rate limiting on (a limit the load never reaches)
#   H:  GET /health on the service (the inbound side alone)
# Pairs compared: C with B (quiet), CI with BJ (both logging). For every run the serving process's CPU time
# (user + system, from /proc, nginx's workers included) is divided by the requests wrk counted.
#
# Usage: scripts/bench.sh [--quick] [--write]
#   --quick   a few seconds, same code paths (CI runs this so the script never rots)
#   --write   also write the report to docs/benchmarks.md (default for full runs, off for --quick); a section
#             starting "## Profile and notes" in that file is kept below the new figures
# Tunables (env): BENCH_DURATION (10s), BENCH_CONNECTIONS (50), BENCH_THREADS (2), BENCH_RUNS (5: on a shared
#                 machine one disturbed round in five still leaves the median alone), BENCH_SAMPLES (20, for
#                 cold start and healthcheck).
# Everything runs on 127.0.0.1; every load is bounded in time; everything started is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
write=true
for arg in "$@"; do
  case "$arg" in
    --quick) quick=true; write=false ;;
    --write) write=true ;;
    *) echo "usage: $0 [--quick] [--write]" >&2; exit 64 ;;
  esac
done
if $quick; then
  DURATION=${BENCH_DURATION:-2s}; CONNECTIONS=${BENCH_CONNECTIONS:-10}; RUNS=${BENCH_RUNS:-1}; SAMPLES=${BENCH_SAMPLES:-3}
else
  DURATION=${BENCH_DURATION:-10s}; CONNECTIONS=${BENCH_CONNECTIONS:-50}; RUNS=${BENCH_RUNS:-5}; SAMPLES=${BENCH_SAMPLES:-20}
fi
THREADS=${BENCH_THREADS:-2}
TARGET=x86_64-unknown-linux-musl

log() { printf '[bench] %s\n' "$*" >&2; }

# --- tools -------------------------------------------------------------------------------------------------
need_apt=()
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v musl-gcc >/dev/null 2>&1 || need_apt+=(musl-tools)
[ -x /usr/bin/time ] || need_apt+=(time)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
rustup target add "$TARGET" >/dev/null 2>&1 || true

log "building the static release binary and the fake upstream"
# As scripts/build-image.sh builds them (scripts/tools.sh): the benchmark measures the shipped binary, and
# after an image build there is nothing to rebuild.
. scripts/tools.sh
build_service
build_fake
BIN=$SERVICE_BIN
FAKE=$FAKE_BIN

# --- processes ---------------------------------------------------------------------------------------------
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

probe() { python3 scripts/bench_probe.py "$@"; }
FAKE_PORT=$(probe free-port)
NGINX_PORT=$(probe free-port)
NGINX_LOG_PORT=$(probe free-port)
SVC_PORT=$(probe free-port)
INFO_PORT=$(probe free-port)

"$FAKE" --listen "127.0.0.1:$FAKE_PORT" --score 42 --level MEDIUM >"$WORK/fake.log" 2>&1 &
FAKE_PID=$!
PIDS+=("$FAKE_PID")
probe wait-http "$FAKE_PORT" /health

mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes auto;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  # The same fields as the service's request line; buffered the way the service batches its lines
  # (at most 64 KiB or 20 ms in memory).
  log_format json escape=json '{"time":"\$time_iso8601","method":"\$request_method","path":"\$uri",'
                              '"status":\$status,"duration_ms":\$request_time,"request_id":"\$request_id"}';
  upstream riskshield { server 127.0.0.1:$FAKE_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location /health { return 200 "ok"; }
    location / {
      proxy_pass http://riskshield;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  server {
    listen 127.0.0.1:$NGINX_LOG_PORT;
    access_log $WORK/nginx/logs/access.json json buffer=64k flush=20ms;
    location / {
      proxy_pass http://riskshield;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
probe wait-http "$NGINX_PORT" /health

HOST=127.0.0.1 PORT=$SVC_PORT RISKSHIELD_API_KEY=bench-key RISKSHIELD_API_URL="http://127.0.0.1:$FAKE_PORT/v1" \
  LOG_LEVEL=WARN LOG_FORMAT=json "$BIN" serve >"$WORK/service.log" 2>&1 &
SVC_PID=$!
PIDS+=("$SVC_PID")
probe wait-http "$SVC_PORT" /health
read -r IDLE_RSS IDLE_HWM < <(probe rss "$SVC_PID")

# The same binary at INFO: a JSON line per request and per upstream attempt, to a file.
HOST=127.0.0.1 PORT=$INFO_PORT RISKSHIELD_API_KEY=bench-key RISKSHIELD_API_URL="http://127.0.0.1:$FAKE_PORT/v1" \
  LOG_LEVEL=INFO LOG_FORMAT=json "$BIN" serve >"$WORK/service-info.log" 2>&1 &
INFO_PID=$!
PIDS+=("$INFO_PID")
probe wait-http "$INFO_PORT" /health

# The same binary with per-client rate limiting on (a limit this load never reaches), to show its cost.
LIM_PORT=$(probe free-port)
HOST=127.0.0.1 PORT=$LIM_PORT RISKSHIELD_API_KEY=bench-key RISKSHIELD_API_URL="http://127.0.0.1:$FAKE_PORT/v1" \
  RATE_LIMIT_PER_MINUTE=1000000000 LOG_LEVEL=WARN LOG_FORMAT=json "$BIN" serve >"$WORK/service-limited.log" 2>&1 &
LIM_PID=$!
PIDS+=("$LIM_PID")
probe wait-http "$LIM_PORT" /health

BODY='{"firstName":"Thandi","lastName":"Nkosi","idNumber":"9001011234088"}'
cat >"$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
LUA

# to_ms VALUE: wrk prints latencies as 512.00us, 1.23ms or 1.02s.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) n = n / 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n = n * 1000
    printf "%.3f", n }'
}

# run NAME PID URL [SCRIPT]: one wrk run against the process PID serves, appends
# "NAME rps p50_ms p99_ms errors cpu_us_per_request" to results.
run() {
  local name=$1 pid=$2 url=$3 script=${4:-} out cpu0 cpu1
  cpu0=$(probe cpu "$pid")
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency ${script:+-s "$script"} "$url")
  cpu1=$(probe cpu "$pid")
  local rps p50 p99 non2xx sock total cpu_us
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")
  sock=$(awk -F'[ ,]+' '/Socket errors:/ {print $4 + $6 + $8 + $10}' <<<"$out")
  cpu_us=$(awk -v a="$cpu0" -v b="$cpu1" -v n="${total:-0}" 'BEGIN { printf "%.1f", (n > 0 ? (b - a) * 1e6 / n : 0) }')
  echo "$name ${rps:-0} $p50 $p99 $(( ${non2xx:-0} + ${sock:-0} )) $cpu_us" >>"$WORK/results"
  log "$name: ${rps:-0} req/s, p50 ${p50} ms, p99 ${p99} ms, ${cpu_us} µs CPU per request"
}

stat_of() { curl_stats | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
curl_stats() {
  python3 - "$FAKE_PORT" <<'PY'
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as s:
    s.sendall(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
print(data.split(b"\r\n\r\n", 1)[1].decode())
PY
}

c_requests=0
c_connections=0
for i in $(seq 1 "$RUNS"); do
  log "round $i of $RUNS"
  run A "$FAKE_PID" "http://127.0.0.1:$FAKE_PORT/v1/score" "$WORK/post.lua"
  run B "$NGINX_PID" "http://127.0.0.1:$NGINX_PORT/v1/score" "$WORK/post.lua"
  r0=$(stat_of requests); k0=$(stat_of connections)
  run C "$SVC_PID" "http://127.0.0.1:$SVC_PORT/api/v1/validate" "$WORK/post.lua"
  r1=$(stat_of requests); k1=$(stat_of connections)
  c_requests=$(( c_requests + r1 - r0 ))
  c_connections=$(( c_connections + k1 - k0 ))
  run BJ "$NGINX_PID" "http://127.0.0.1:$NGINX_LOG_PORT/v1/score" "$WORK/post.lua"
  run CI "$INFO_PID" "http://127.0.0.1:$INFO_PORT/api/v1/validate" "$WORK/post.lua"
  run L "$LIM_PID" "http://127.0.0.1:$LIM_PORT/api/v1/validate" "$WORK/post.lua"
  run H "$SVC_PID" "http://127.0.0.1:$SVC_PORT/health"
done
read -r LOAD_RSS LOAD_HWM < <(probe rss "$SVC_PID")

log "cold start and healthcheck ($SAMPLES samples each)"
COLD_PORT=$(probe free-port)
COLD_MS=$(probe cold-start "$BIN" "$SAMPLES" "$COLD_PORT" RISKSHIELD_API_KEY=bench-key "RISKSHIELD_API_URL=http://127.0.0.1:$FAKE_PORT/v1")
HC_MS=$(probe healthcheck "$BIN" "$SAMPLES" "$SVC_PORT")
# Max RSS through /usr/bin/time: a small parent, so the figure is the healthcheck's own, not a fork of Python.
HC_RSS=$(PORT=$SVC_PORT /usr/bin/time -f %M "$BIN" healthcheck 2>&1 >/dev/null | tail -n 1)
BIN_BYTES=$(stat -c %s "$BIN")
LOG_LINES=$(wc -l <"$WORK/service-info.log")
NGINX_LOG_LINES=$(wc -l <"$WORK/nginx/logs/access.json")

# --- report ------------------------------------------------------------------------------------------------
REPORT=$(python3 - "$WORK/results" <<PY
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, rps, p50, p99, errors, cpu = line.split()
    rows.setdefault(name, []).append((float(rps), float(p50), float(p99), int(errors), float(cpu)))
def med(name, i):
    return statistics.median(r[i] for r in rows[name])
def errs(name):
    return sum(r[3] for r in rows[name])
labels = {"A": "A: fake upstream direct (POST /v1/score)",
          "B": "B: nginx proxy_pass + keepalive, no access log",
          "BJ": "BJ: nginx, JSON access log to a file",
          "C": "C: applicant-validator, LOG_LEVEL=WARN",
          "CI": "CI: applicant-validator, LOG_LEVEL=INFO (JSON lines to a file)",
          "L": "L: C with rate limiting on (limit never reached)",
          "H": "H: applicant-validator GET /health"}
print("| path | req/s (median) | p50 ms | p99 ms | CPU µs per request | errors |")
print("|---|---:|---:|---:|---:|---:|")
for name in ["A", "B", "BJ", "C", "CI", "L", "H"]:
    print(f"| {labels[name]} | {med(name, 0):,.0f} | {med(name, 1):.2f} | {med(name, 2):.2f} | {med(name, 4):.1f} | {errs(name)} |")
print()
def ok(value, goal, at_least):
    return "yes" if (value >= goal if at_least else value <= goal) else "**no**"
print("| ratio | value | goal | met |")
print("|---|---:|---|---|")
for ours, theirs, what in [("C", "B", "quiet"), ("CI", "BJ", "both logging")]:
    rps = med(ours, 0) / med(theirs, 0)
    p99 = med(ours, 2) / med(theirs, 2)
    cpu = med(ours, 4) / max(med(theirs, 4), 0.1)
    print(f"| {ours}/{theirs} throughput ({what}) | {rps:.2f} | >= 0.90 | {ok(rps, 0.9, True)} |")
    print(f"| {ours}/{theirs} p99 latency ({what}) | {p99:.2f} | <= 1.20 | {ok(p99, 1.2, False)} |")
    print(f"| {ours}/{theirs} CPU per request ({what}) | {cpu:.2f} | <= 1.20 | {ok(cpu, 1.2, False)} |")
health = med("H", 0) / med("A", 0)
print(f"| H/A throughput (/health against the bare fake) | {health:.2f} | >= 0.90 | {ok(health, 0.9, True)} |")
print(f"| C/A throughput | {med('C', 0) / med('A', 0):.2f} | | |")
print(f"| rate limiting on / off (L/C) throughput | {med('L', 0) / med('C', 0):.2f} | | |")
PY
)
conn_ratio=$(python3 -c "print(f'{$c_requests / max($c_connections, 1):,.0f}')")
MACHINE="$(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
OUT=$(cat <<MD
# Benchmarks

Measured $(date -u '+%Y-%m-%d %H:%M UTC') with \`scripts/bench.sh$($quick && echo ' --quick')\` on $MACHINE.
wrk: $THREADS threads, $CONNECTIONS connections, $DURATION per run, $RUNS interleaved rounds of every row (medians).
All processes share the same cores on 127.0.0.1, so compare the ratios, not the absolute numbers. CPU per
request is the serving process's user + system time during the run (nginx: master and workers) over the
requests wrk completed. The service runs with its default WORKERS (one per CPU); nginx with
\`worker_processes auto\`.

$REPORT

| measure | value | goal |
|---|---:|---|
| static binary size | $BIN_BYTES bytes ($(awk -v b="$BIN_BYTES" 'BEGIN {printf "%.2f", b/1048576}') MiB) | |
| cold start (exec to first 200 on /health, median of $SAMPLES) | $COLD_MS ms | <= 20 ms |
| RSS idle (VmRSS) | $(( IDLE_RSS / 1024 )) MiB ($IDLE_RSS KiB) | <= 8 MB |
| RSS after load (VmRSS / VmHWM) | $(( LOAD_RSS / 1024 )) / $(( LOAD_HWM / 1024 )) MiB | <= 32 MB |
| healthcheck subcommand wall time (median of $SAMPLES) | $HC_MS ms | <= 5 ms |
| healthcheck subcommand max RSS | $HC_RSS KiB | |
| upstream requests per upstream connection (C) | $conn_ratio ($c_requests requests over $c_connections connections) | >= 100 |
| log lines written during the run: service at INFO (CI) / nginx access log (BJ) | $LOG_LINES / $NGINX_LOG_LINES | |
MD
)
echo "$OUT"
if $write; then
  mkdir -p docs
  # The hand-written analysis (profiles, what was tried) below the measured figures survives a new run.
  NOTES=""
  [ -f docs/benchmarks.md ] && NOTES=$(awk '/^## Profile and notes/ {keep = 1} keep' docs/benchmarks.md)
  echo "$OUT" >docs/benchmarks.md
  if [ -n "$NOTES" ]; then printf '\n%s\n' "$NOTES" >>docs/benchmarks.md; fi
  log "wrote docs/benchmarks.md"
fi
