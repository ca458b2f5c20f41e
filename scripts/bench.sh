#!/usr/bin/env bash
# Measures applicant-validator against two plain proxies (nginx and HAProxy) and the raw fake upstream, in one
# run, interleaved, at several client concurrencies, and reports ratios (absolute numbers drift on a shared
# machine; ratios in one run do not).
#
#   A:   POST /v1/score straight to the fake RiskShield                      (the physical limit of this hop)
#   B:   nginx proxy_pass + keepalive, no access log
#   BJ:  nginx with a JSON access log to a file                              (buffered like the service's logs)
#   P:   HAProxy, http-reuse always, nbthread = cores, no log
#   PJ:  HAProxy with a log line per request to a file
#   C:   POST /api/v1/validate through applicant-validator, LOG_LEVEL=WARN  (no line per request)
#   CI:  the same at LOG_LEVEL=INFO, a JSON line per request and per upstream attempt to a file
#   BT, PT, CT: nginx, HAProxy and the service to the fake over HTTPS (certificate verified against a CA
#        made at startup, sessions resumed)
#   CA:  C with AUTH_MODE=entra and a valid bearer token from a local OpenID issuer (examples/fake_issuer.rs)
#   L:   C with per-client rate limiting on (a limit the load never reaches)  } at the lowest concurrency
#   H:   GET /health on the service (the inbound side alone)                   } only
# Pairs compared: C with B and P (quiet), CI with BJ and PJ (logging), CT with BT and PT (TLS upstream), CA
# with C (the cost of caller authentication).
#
# For every run: the serving process's CPU time (user + system from /proc, nginx's workers included) over the
# requests wrk counted; the upstream connections the fake accepted per 1,000 requests it answered; and the
# kernel's listen-queue overflows and drops (TcpExtListenOverflows / TcpExtListenDrops, as `nstat` shows them),
# so a latency that measures a full accept queue shows as one. Before every measured run the same wrk load
# runs once unmeasured (the warm-up), so pools, caches and the allocator are in their steady state.
#
# Usage: scripts/bench.sh [--quick] [--write]
#   --quick   a few seconds at one concurrency, every row once (CI runs this so the script never rots; it
#             never fails on a speed figure)
#   --write   also write the report to docs/benchmarks.md (default for full runs, off for --quick): the new
#             figures become the first section and every earlier section is kept below them
# Tunables (env): BENCH_DURATION (10s), BENCH_WARMUP (3s), BENCH_LEVELS ("50 1000 4000": client connections),
#                 BENCH_THREADS (2), BENCH_RUNS (5 interleaved rounds, each in an order of its own),
#                 BENCH_SAMPLES (20, for cold start and healthcheck), BENCH_KEEP (a directory to keep every wrk
#                 output and log in).
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
  DURATION=${BENCH_DURATION:-2s}; WARMUP=${BENCH_WARMUP:-1s}; LEVELS=${BENCH_LEVELS:-20}
  RUNS=${BENCH_RUNS:-1}; SAMPLES=${BENCH_SAMPLES:-3}
else
  DURATION=${BENCH_DURATION:-10s}; WARMUP=${BENCH_WARMUP:-3s}; LEVELS=${BENCH_LEVELS:-50 1000 4000}
  RUNS=${BENCH_RUNS:-5}; SAMPLES=${BENCH_SAMPLES:-20}
fi
THREADS=${BENCH_THREADS:-2}
# wrk leaves requests slower than its timeout (2 s by default) out of its latency figures and counts them as
# errors instead; a long timeout keeps every answer in the percentiles.
WRK_TIMEOUT=30s
TARGET=x86_64-unknown-linux-musl
CORES=$(nproc)
read -r -a levels <<<"$LEVELS"
LOWEST=${levels[0]}

log() { printf '[bench] %s\n' "$*" >&2; }

# Every client connection is a descriptor in wrk and one in the proxy, which holds upstream ones besides.
max_level=$(printf '%s\n' "${levels[@]}" | sort -n | tail -n 1)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FDS=$(ulimit -n)
[ "$FDS" = unlimited ] && FDS=1048576
if [ "$FDS" -lt $(( 2 * max_level + 1024 )) ]; then
  log "warning: ulimit -n is $FDS, low for $max_level connections"
fi
# A client and an upstream connection per request in flight, in nginx's workers and HAProxy alike.
PROXY_CONNECTIONS=$(( (FDS - 256) / 2 ))

# --- tools -------------------------------------------------------------------------------------------------
need_apt=()
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
command -v musl-gcc >/dev/null 2>&1 || need_apt+=(musl-tools)
[ -x /usr/bin/time ] || need_apt+=(time)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
rustup target add "$TARGET" >/dev/null 2>&1 || true

log "building the static release binary, the fake upstream and the fake issuer"
# As scripts/build-image.sh builds them (scripts/tools.sh): the benchmark measures the shipped binary, and
# after an image build there is nothing to rebuild. The issuer only signs one token and serves the keys once.
. scripts/tools.sh
build_service
build_fake
cargo auditable build --locked --release --target "$TARGET" --example fake_issuer >&2
BIN=$SERVICE_BIN
FAKE=$FAKE_BIN
ISSUER_BIN="$SHIPPED_DIR/examples/fake_issuer"

# --- processes ---------------------------------------------------------------------------------------------
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  # BENCH_KEEP=DIR keeps the raw material (every wrk output, the results, the logs) for a closer look.
  if [ -n "${BENCH_KEEP:-}" ]; then mkdir -p "$BENCH_KEEP" && cp -r "$WORK"/. "$BENCH_KEEP"/; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

probe() { python3 scripts/bench_probe.py "$@"; }
port() { probe free-port; }
B_PORT=$(port); BJ_PORT=$(port); BT_PORT=$(port)
P_PORT=$(port); PJ_PORT=$(port); PT_PORT=$(port)

# start_fake ROW [tls]: a fake RiskShield for that row alone; sets ROW_UP (its port), ROW_CA (its CA file, for
# tls) and ROW_FAKE_PID. One per row, so each row's upstream connections are counted apart, and the TIME_WAIT
# sockets one row's connection churn leaves (60 s each, on loopback every one of them holds a port of the
# same 28,000-port range towards the same address) never starve the next row of ports.
start_fake() {
  local row=$1 tls=${2:-} port ca=
  port=$(port)
  if [ -n "$tls" ]; then
    ca="$WORK/ca-$row.pem"
    "$FAKE" --listen "127.0.0.1:$port" --score 42 --level MEDIUM --tls "$ca" >"$WORK/fake-$row.log" 2>&1 &
  else
    "$FAKE" --listen "127.0.0.1:$port" --score 42 --level MEDIUM >"$WORK/fake-$row.log" 2>&1 &
  fi
  PIDS+=("$!")
  printf -v "${row}_FAKE_PID" '%s' "$!"
  probe wait-http "$port" /health ${ca:+"$ca"}
  printf -v "${row}_UP" '%s' "$port"
  printf -v "${row}_CA" '%s' "$ca"
}
for row in A B BJ P PJ C CI CA L; do start_fake "$row"; done
for row in BT PT CT; do start_fake "$row" tls; done

"$ISSUER_BIN" >"$WORK/issuer.json" 2>"$WORK/issuer.log" &
PIDS+=("$!")
AUTH_ISSUER=$(probe wait-json "$WORK/issuer.json" issuer)
AUTH_CA=$(probe wait-json "$WORK/issuer.json" ca_file)
AUTH_AUDIENCE=$(probe wait-json "$WORK/issuer.json" audience)
AUTH_ROLE=$(probe wait-json "$WORK/issuer.json" role)
TOKEN=$(probe wait-json "$WORK/issuer.json" token)

mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes auto;
worker_rlimit_nofile $FDS;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections $PROXY_CONNECTIONS; }
http {
  access_log off;
  # The same fields as the service's request line; buffered the way the service batches its lines
  # (at most 64 KiB or 20 ms in memory).
  log_format json escape=json '{"time":"\$time_iso8601","method":"\$request_method","path":"\$uri",'
                              '"status":\$status,"duration_ms":\$request_time,"request_id":"\$request_id"}';
  # Idle upstream connections kept per worker: the service's pool keeps 256 per worker too.
  upstream riskshield_b { server 127.0.0.1:$B_UP; keepalive 256; }
  upstream riskshield_bj { server 127.0.0.1:$BJ_UP; keepalive 256; }
  upstream riskshield_bt { server 127.0.0.1:$BT_UP; keepalive 256; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  server {
    listen 127.0.0.1:$B_PORT backlog=4096;
    location /health { return 200 "ok"; }
    location / { proxy_pass http://riskshield_b; }
  }
  server {
    listen 127.0.0.1:$BJ_PORT backlog=4096;
    access_log $WORK/nginx/logs/access.json json buffer=64k flush=20ms;
    location / { proxy_pass http://riskshield_bj; }
  }
  server {
    listen 127.0.0.1:$BT_PORT backlog=4096;
    location /health { return 200 "ok"; }
    location / {
      proxy_pass https://riskshield_bt;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $BT_CA;
      proxy_ssl_name localhost;
      proxy_ssl_server_name on;
      proxy_ssl_session_reuse on;
    }
  }
}
NGINX
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
probe wait-http "$B_PORT" /health
probe wait-http "$BT_PORT" /health

# HAProxy's log line is written to its stdout, a file here: one write per request, as HAProxy does.
cat >"$WORK/haproxy.cfg" <<HAPROXY
global
  nbthread $CORES
  maxconn $PROXY_CONNECTIONS
  log stdout format raw local0 info
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
  option http-keep-alive
  maxconn $PROXY_CONNECTIONS
  backlog 4096
frontend quiet
  bind 127.0.0.1:$P_PORT
  monitor-uri /health
  default_backend riskshield_p
frontend logged
  bind 127.0.0.1:$PJ_PORT
  log global
  unique-id-format %{+X}o\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid
  log-format '{"time":"%tr","method":"%HM","path":"%HPO","status":%ST,"duration_ms":%Ta,"request_id":"%ID"}'
  default_backend riskshield_pj
frontend tls
  bind 127.0.0.1:$PT_PORT
  monitor-uri /health
  default_backend riskshield_pt
backend riskshield_p
  server fake 127.0.0.1:$P_UP
backend riskshield_pj
  server fake 127.0.0.1:$PJ_UP
backend riskshield_pt
  server fake 127.0.0.1:$PT_UP ssl verify required ca-file $PT_CA sni str(localhost) verifyhost localhost
HAPROXY
"$HAPROXY" -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>"$WORK/haproxy.err" &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")
probe wait-http "$P_PORT" /health
probe wait-http "$PT_PORT" /health

# start_service NAME ENV=VALUE...: the service on a free port with the common settings plus ENV, its upstream
# the row's own fake; sets NAME_PORT and NAME_PID. MAX_CONNECTIONS is raised (default 4,096) to what nginx's worker_connections and
# HAProxy's maxconn are set to, so the highest concurrency is admitted by all of them.
start_service() {
  local name=$1 port pid up
  shift
  port=$(port)
  up=${name}_UP
  env HOST=127.0.0.1 PORT="$port" RISKSHIELD_API_KEY=bench-key "RISKSHIELD_API_URL=http://127.0.0.1:${!up}/v1" \
    LOG_LEVEL=WARN LOG_FORMAT=json MAX_CONNECTIONS=$PROXY_CONNECTIONS "$@" "$BIN" serve >"$WORK/service-$name.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  probe wait-http "$port" /health
  printf -v "${name}_PORT" '%s' "$port"
  printf -v "${name}_PID" '%s' "$pid"
}
start_service C
read -r IDLE_RSS IDLE_HWM < <(probe rss "$C_PID")
start_service CI LOG_LEVEL=INFO
start_service L RATE_LIMIT_PER_MINUTE=1000000000
start_service CT "RISKSHIELD_API_URL=https://127.0.0.1:$CT_UP/v1" "EXTRA_CA_CERTS=$CT_CA"
start_service CA AUTH_MODE=entra "AUTH_ISSUER=$AUTH_ISSUER" "AUTH_AUDIENCE=$AUTH_AUDIENCE" \
  "AUTH_REQUIRED_ROLE=$AUTH_ROLE" "EXTRA_CA_CERTS=$AUTH_CA"
probe wait-http "$CA_PORT" /ready

BODY='{"firstName":"Thandi","lastName":"Nkosi","idNumber":"9001011234088"}'
cat >"$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
LUA
cat >"$WORK/post-auth.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
LUA

# to_ms VALUE: wrk prints latencies as 512.00us, 1.23ms or 1.02s.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) n = n / 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n = n * 1000
    printf "%.3f", n }'
}

# fake_stats ROW: "requests connections" of the row's fake ("0 0" for a row without one).
fake_stats() {
  local up=${1}_UP ca=${1}_CA
  if [ -n "${!up:-}" ]; then probe stats "${!up}" ${!ca:+"${!ca}"}; else echo "0 0"; fi
}

# run NAME CONNECTIONS PID URL [SCRIPT]: one warm-up and one measured wrk run against the process PID serves,
# whose upstream is the row's own fake (H has none); appends "NAME CONNECTIONS rps p50_ms p99_ms errors
# cpu_us_per_request upstream_connections_per_1000 listen_overflows listen_drops" to results.
run() {
  local name=$1 conns=$2 pid=$3 url=$4 script=${5:-} out cpu0 cpu1 r0 k0 r1 k1 o0 d0 o1 d1
  wrk -t"$THREADS" -c"$conns" -d"$WARMUP" --timeout "$WRK_TIMEOUT" ${script:+-s "$script"} "$url" >/dev/null
  cpu0=$(probe cpu "$pid"); read -r r0 k0 < <(fake_stats "$name"); read -r o0 d0 < <(probe listen-drops)
  out=$(wrk -t"$THREADS" -c"$conns" -d"$DURATION" --timeout "$WRK_TIMEOUT" --latency ${script:+-s "$script"} "$url")
  printf '== %s at %s\n%s\n' "$name" "$conns" "$out" >>"$WORK/wrk.log"
  cpu1=$(probe cpu "$pid"); read -r r1 k1 < <(fake_stats "$name"); read -r o1 d1 < <(probe listen-drops)
  local rps p50 p99 non2xx sock total cpu_us per_k
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")
  # "  Socket errors: connect N, read N, write N, timeout N": the numbers are fields 5, 7, 9 and 11.
  sock=$(awk -F'[ ,]+' '/Socket errors:/ {print $5 + $7 + $9 + $11}' <<<"$out")
  cpu_us=$(awk -v a="$cpu0" -v b="$cpu1" -v n="${total:-0}" 'BEGIN { printf "%.1f", (n > 0 ? (b - a) * 1e6 / n : 0) }')
  if [ "$name" = H ]; then
    per_k=-
  else
    per_k=$(awk -v r=$(( r1 - r0 )) -v k=$(( k1 - k0 )) 'BEGIN { printf "%.2f", (r > 0 ? k * 1000 / r : 0) }')
  fi
  echo "$name $conns ${rps:-0} $p50 $p99 $(( ${non2xx:-0} + ${sock:-0} )) $cpu_us $per_k $(( o1 - o0 )) $(( d1 - d0 ))" >>"$WORK/results"
  log "$name at $conns: ${rps:-0} req/s, p50 $p50 ms, p99 $p99 ms, $cpu_us µs CPU per request, $per_k upstream connections per 1,000, listen overflows $(( o1 - o0 ))"
}

validate() { echo "http://127.0.0.1:$1/api/v1/validate"; }
score() { echo "http://127.0.0.1:$1/v1/score"; }
# row NAME CONNECTIONS: one row's run, by name: the process that serves it and the address wrk loads.
row() {
  local name=$1 conns=$2 pid port=${1}_PORT url script=$WORK/post.lua
  case "$name" in
    A) pid=$A_FAKE_PID; url=$(score "$A_UP") ;;
    H) pid=$C_PID; url="http://127.0.0.1:$C_PORT/health"; script= ;;
    B | BJ | BT) pid=$NGINX_PID; url=$(score "${!port}") ;;
    P | PJ | PT) pid=$HAPROXY_PID; url=$(score "${!port}") ;;
    *) pid=${name}_PID; pid=${!pid}; url=$(validate "${!port}") ;;
  esac
  if [ "$name" = CA ]; then script=$WORK/post-auth.lua; fi
  run "$name" "$conns" "$pid" "$url" ${script:+"$script"}
}
# The rows of one round at one concurrency, shuffled with the round and the concurrency as the seed: a row's
# figures can depend on the row run just before it (measured in docs/benchmarks.md), so no row always follows
# the same one, and the same seeds give the same order in every run of the script.
order() {
  local seed=$1 names=(A B P C BJ PJ CI BT PT CT CA)
  [ "$2" = "$LOWEST" ] && names+=(L H)
  python3 -c 'import random, sys; names = sys.argv[2:]; random.Random(sys.argv[1]).shuffle(names); print(*names)' \
    "$seed" "${names[@]}"
}
LOAD_START=$(cut -d' ' -f1 /proc/loadavg)
for i in $(seq 1 "$RUNS"); do
  for conns in "${levels[@]}"; do
    read -r -a names < <(order "$i-$conns" "$conns")
    log "round $i of $RUNS, $conns connections: ${names[*]}"
    printf '== round %s at %s: %s\n' "$i" "$conns" "${names[*]}" >>"$WORK/wrk.log"
    for name in "${names[@]}"; do row "$name" "$conns"; done
  done
done
LOAD_END=$(cut -d' ' -f1 /proc/loadavg)
read -r LOAD_RSS LOAD_HWM < <(probe rss "$C_PID")

log "cold start and healthcheck ($SAMPLES samples each)"
COLD_PORT=$(port)
COLD_MS=$(probe cold-start "$BIN" "$SAMPLES" "$COLD_PORT" RISKSHIELD_API_KEY=bench-key "RISKSHIELD_API_URL=http://127.0.0.1:$C_UP/v1")
HC_MS=$(probe healthcheck "$BIN" "$SAMPLES" "$C_PORT")
# Max RSS through /usr/bin/time: a small parent, so the figure is the healthcheck's own, not a fork of Python.
HC_RSS=$(PORT=$C_PORT /usr/bin/time -f %M "$BIN" healthcheck 2>&1 >/dev/null | tail -n 1)
BIN_BYTES=$(stat -c %s "$BIN")
LOG_LINES=$(wc -l <"$WORK/service-CI.log")
NGINX_LOG_LINES=$(wc -l <"$WORK/nginx/logs/access.json")
HAPROXY_LOG_LINES=$(wc -l <"$WORK/haproxy.log")
TOKEN_BYTES=${#TOKEN}

# --- report ------------------------------------------------------------------------------------------------
REPORT=$(python3 - "$WORK/results" "$LEVELS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, conns, rps, p50, p99, errors, cpu, per_k, overflows, drops = line.split()
    rows.setdefault((name, int(conns)), []).append(
        (float(rps), float(p50), float(p99), int(errors), float(cpu),
         None if per_k == "-" else float(per_k), int(overflows), int(drops)))
levels = [int(c) for c in sys.argv[2].split()]
def med(name, conns, i):
    return statistics.median(r[i] for r in rows[(name, conns)])
def total(name, conns, i):
    return sum(r[i] for r in rows[(name, conns)])
labels = {"A": "A: fake upstream direct (POST /v1/score)",
          "B": "B: nginx, keepalive, no access log",
          "P": "P: HAProxy, http-reuse always, no log",
          "C": "C: applicant-validator, LOG_LEVEL=WARN",
          "BJ": "BJ: nginx, JSON access log to a file",
          "PJ": "PJ: HAProxy, a log line per request to a file",
          "CI": "CI: applicant-validator, LOG_LEVEL=INFO (JSON lines to a file)",
          "BT": "BT: nginx to the fake over HTTPS",
          "PT": "PT: HAProxy to the fake over HTTPS",
          "CT": "CT: applicant-validator to the fake over HTTPS",
          "CA": "CA: C with AUTH_MODE=entra and a bearer token",
          "L": "L: C with rate limiting on (limit never reached)",
          "H": "H: applicant-validator GET /health"}
order = ["A", "B", "P", "C", "BJ", "PJ", "CI", "BT", "PT", "CT", "CA", "L", "H"]
print("| path | clients | req/s | p50 ms | p99 ms | CPU µs per request | upstream connections per 1,000 | listen overflows / drops | errors |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for conns in levels:
    for name in order:
        if (name, conns) not in rows:
            continue
        per_k = [r[5] for r in rows[(name, conns)] if r[5] is not None]
        per_k = f"{statistics.median(per_k):,.1f}" if per_k else "–"
        print(f"| {labels[name]} | {conns:,} | {med(name, conns, 0):,.0f} | {med(name, conns, 1):.2f} | "
              f"{med(name, conns, 2):.2f} | {med(name, conns, 4):.1f} | {per_k} | "
              f"{total(name, conns, 6)} / {total(name, conns, 7)} | {total(name, conns, 3)} |")
print()
def ok(value, goal, at_least):
    return "yes" if (value >= goal if at_least else value <= goal) else "**no**"
print("| ratio | clients | throughput (≥ 0.90) | p99 latency (≤ 1.20) | CPU per request (≤ 1.20) |")
print("|---|---:|---:|---:|---:|")
pairs = [("C", "B", "quiet"), ("C", "P", "quiet"), ("CI", "BJ", "both logging"), ("CI", "PJ", "both logging"),
         ("CT", "BT", "HTTPS upstream"), ("CT", "PT", "HTTPS upstream")]
for conns in levels:
    for ours, theirs, what in pairs:
        if min(med(ours, conns, 0), med(theirs, conns, 0)) < 1:
            print(f"| {ours}/{theirs} ({what}) | {conns:,} | – (a row answered nothing) | – | – |")
            continue
        rps = med(ours, conns, 0) / max(med(theirs, conns, 0), 1)
        p99 = med(ours, conns, 2) / max(med(theirs, conns, 2), 0.001)
        cpu = med(ours, conns, 4) / max(med(theirs, conns, 4), 0.1)
        print(f"| {ours}/{theirs} ({what}) | {conns:,} | {rps:.2f} {ok(rps, 0.9, True)} | "
              f"{p99:.2f} {ok(p99, 1.2, False)} | {cpu:.2f} {ok(cpu, 1.2, False)} |")
print()
print("| caller authentication (CA/C) | clients | throughput | p99 latency | CPU per request (goal ≤ 1.15) |")
print("|---|---:|---:|---:|---:|")
for conns in levels:
    rps = med("CA", conns, 0) / max(med("C", conns, 0), 1)
    p99 = med("CA", conns, 2) / max(med("C", conns, 2), 0.001)
    cpu = med("CA", conns, 4) / max(med("C", conns, 4), 0.1)
    print(f"| CA/C | {conns:,} | {rps:.2f} | {p99:.2f} | {cpu:.2f} {ok(cpu, 1.15, False)} |")
low = levels[0]
print()
print(f"H/A throughput (/health against the bare fake, {low} clients): "
      f"{med('H', low, 0) / med('A', low, 0):.2f} (goal ≥ 0.90); "
      f"rate limiting on / off (L/C): {med('L', low, 0) / med('C', low, 0):.2f}.")
PY
)
MACHINE="$CORES cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
OUT=$(cat <<MD
## Benchmark of $(date -u '+%Y-%m-%d %H:%M UTC')

\`scripts/bench.sh$($quick && echo ' --quick')\` on $MACHINE; nginx $("$NGINX" -v 2>&1 | sed 's|.*/||'), HAProxy $("$HAPROXY" -v | awk 'NR == 1 {print $3}'), wrk $THREADS threads.
Every row at $(echo "$LEVELS" | sed 's/ /, /g') client connections (L and H at $LOWEST only); rounds: $RUNS, interleaved,
each in an order of its own (shuffled, seeded by round and concurrency, so that no row always follows the same
one); medians (errors, listen overflows and drops: summed over the rounds). Each measured run ($DURATION) follows an unmeasured
warm-up run of $WARMUP at the same concurrency, so upstream pools and caches are in their steady state; wrk
still opens its connections at the start of the measured run, and a burst that overflows an accept queue shows
in the listen overflows column. All processes share the same cores on 127.0.0.1, so compare the ratios, not the
absolute numbers. CPU per request: the serving process's user + system time during the run (nginx: master and
workers; HAProxy: its $CORES threads) over the requests wrk completed. Upstream connections per 1,000: TCP
connections the row's own fake accepted over the requests it answered during the run (for A, wrk's own
connections); every row has a fake of its own, so no row inherits another's TIME_WAIT sockets.
Load average (1 min) at the start and the end of the measurements: $LOAD_START / $LOAD_END (other work on the
machine competes for the same $CORES cores).
The service runs with its default WORKERS (one per CPU) and MAX_CONNECTIONS=$PROXY_CONNECTIONS (nginx's
\`worker_connections\` and HAProxy's \`maxconn\` alike); nginx with
\`worker_processes auto\` and 256 idle upstream connections per worker (the service's pool keeps 256 per
worker too); HAProxy with \`nbthread $CORES\` and \`http-reuse always\`. HTTPS rows: the fake serves a certificate
for localhost from a CA made at startup, which each client verifies; nginx with \`proxy_ssl_session_reuse on\`.
CA: a $TOKEN_BYTES-byte RS256 token from \`examples/fake_issuer.rs\`, with AUTH_REQUIRED_ROLE set.

$REPORT

| measure | value | goal |
|---|---:|---|
| static binary size | $BIN_BYTES bytes ($(awk -v b="$BIN_BYTES" 'BEGIN {printf "%.2f", b/1048576}') MiB) | |
| cold start (exec to first 200 on /health, median of $SAMPLES) | $COLD_MS ms | <= 20 ms |
| RSS idle (VmRSS) | $(( IDLE_RSS / 1024 )) MiB ($IDLE_RSS KiB) | <= 8 MB |
| RSS after load (VmRSS / VmHWM) | $(( LOAD_RSS / 1024 )) / $(( LOAD_HWM / 1024 )) MiB | <= 32 MB |
| healthcheck subcommand wall time (median of $SAMPLES) | $HC_MS ms | <= 5 ms |
| healthcheck subcommand max RSS | $HC_RSS KiB | |
| log lines written: service at INFO (CI) / nginx (BJ) / HAProxy (PJ) | $LOG_LINES / $NGINX_LOG_LINES / $HAPROXY_LOG_LINES | |
MD
)
echo "$OUT"
if $write; then
  mkdir -p docs
  # The new section goes first, under the title; every earlier section (figures and notes) stays below it.
  python3 - docs/benchmarks.md "$OUT" <<'PY'
import os, sys
path, new = sys.argv[1], sys.argv[2].strip()
old = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
at = old.find("\n## ")
if at < 0:
    text = f"{old.rstrip()}\n\n{new}\n"
else:
    text = f"{old[:at].rstrip()}\n\n{new}\n\n{old[at + 1:]}"
open(path, "w").write(text)
PY
  log "wrote docs/benchmarks.md"
fi
