#!/usr/bin/env bash
# Builds the container images (scripts/build-image.sh, nothing is pulled) and proves what the image promises,
# one line per check: `PASS name: detail` or `FAIL name: detail`. Exits 1 if any check failed.
#
# Traffic goes only to 127.0.0.1 (ports published on loopback) and between this run's own containers on a
# private Docker network. Every container, network and image is uniquely named and removed on exit.
#
# Needs Docker Engine 25+ (API 1.44) for the image's HEALTHCHECK --start-interval and Compose v2.20+ for
# compose.yaml. `scripts/engine.sh run scripts/check-image.sh` provides both without touching the machine's
# engine (on Debian bookworm, a sandboxed one); that is how .ci/run calls it. Compose is $COMPOSE when set
# (engine.sh sets it), else `docker compose` or `docker-compose` if either is v2.20+. With the sandbox this
# runs without a network beyond it, so the cargo build inside cannot download anything: on a fresh machine,
# build once before (`. scripts/tools.sh && build_service && build_fake`, as .ci/run does).
#
# Environment: SIZE_BUDGET_BYTES (default 8 MiB), SIZE_GOAL_BYTES (default 4 MiB), HEALTHY_LIMIT_MS (default
# 500: the median time to healthy allowed); CARGO_TARGET_DIR is honoured by the build.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

SIZE_BUDGET_BYTES="${SIZE_BUDGET_BYTES:-$((8 * 1024 * 1024))}"
SIZE_GOAL_BYTES="${SIZE_GOAL_BYTES:-$((4 * 1024 * 1024))}"
HEALTHY_LIMIT_MS="${HEALTHY_LIMIT_MS:-500}"
RUN_ID="avcheck-$(date +%s)-$$-${RANDOM}"
IMAGE="applicant-validator-check:$RUN_ID"
FAKE_IMAGE="fake-riskshield-check:$RUN_ID"
NETWORK="$RUN_ID-net"
# Only for the container the hung-server check uses: with the image's own interval (30s) and retries (3) a
# hung server takes about 90s to turn unhealthy, too long for CI. The start settings (start period, 100ms
# start interval) and the timeout stay the image's. Every other container runs the HEALTHCHECK as shipped.
HEALTH_OPTS=(--health-interval 1s --health-retries 2)
LOCKED_DOWN=(--read-only --cap-drop ALL --security-opt no-new-privileges)
SHUTDOWN_GRACE_S=5
DEMO_BODY='{"firstName":"Ann","lastName":"Lee","idNumber":"9001011234088"}'

started_ns="$(date +%s%N)"
failures=0
containers=()
work="$(mktemp -d)"

pass() { echo "PASS $1: $2"; }
# A goal missed but the budget kept: visible in the log (and to a CI log scraper), not a failure.
warn() { echo "WARN $1: $2"; }
fail() {
    echo "FAIL $1: $2"
    failures=$((failures + 1))
}

compose_up=0
cleanup() {
    local c
    if ((compose_up)); then
        "${compose[@]}" down --timeout 5 >/dev/null 2>&1 || true
    fi
    for c in "${containers[@]}"; do
        docker rm -f "$c" >/dev/null 2>&1 || true
    done
    docker network rm "$NETWORK" >/dev/null 2>&1 || true
    docker rmi -f "$IMAGE" "$FAKE_IMAGE" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
# A command failing outside a check still says where, instead of ending the run silently.
trap 'echo "FAIL check-image: line $LINENO: \"$BASH_COMMAND\" failed"' ERR

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# run_container SUFFIX ARGS...: starts a detached container named $RUN_ID-SUFFIX and remembers it for
# cleanup. Not called in a subshell (the list must survive), so the name is left in $started.
started=""
# A failed start is reported as its own FAIL line; the checks that follow then fail on their own.
run_container() {
    started="$RUN_ID-$1"
    shift
    containers+=("$started")
    if ! docker run -d --name "$started" "$@" >/dev/null 2>"$work/run.err"; then
        fail "start-${started#"$RUN_ID"-}" "docker run failed: $(head -n 1 "$work/run.err")"
    fi
}

# wait_health CONTAINER WANT TIMEOUT_S: polls docker's health status; prints the elapsed ms.
wait_health() {
    local container="$1" want="$2" deadline=$(($(now_ms) + $3 * 1000)) start status
    start="$(now_ms)"
    while (($(now_ms) < deadline)); do
        status="$(docker inspect -f '{{.State.Health.Status}}' "$container" 2>/dev/null || echo gone)"
        if [[ "$status" == "$want" ]]; then
            echo $(($(now_ms) - start))
            return 0
        fi
        sleep 0.1
    done
    echo "timeout (last status: $status)"
    return 1
}

# time_to_healthy SUFFIX: starts the image as container $RUN_ID-SUFFIX with its own HEALTHCHECK (no --health-*
# options) and leaves in $took the ms from the container's `start` event to its `health_status: healthy`
# event, or what went wrong (and returns 1). Not called in a subshell, like run_container. Both times are the
# daemon's own event timestamps, so neither the CLI's round trips nor any polling is in the figure.
# `docker events` never ends by itself (`| head -n 1` would wait for one more event after the one it wants),
# so its lines are read from a process substitution with `read -t`, and the process is then killed.
took=""
time_to_healthy() {
    local name="$RUN_ID-$1" since events events_pid line started_at="" healthy_at="" left deadline
    since="$(date +%s.%N)"
    # --since replays from just before the start: an event that comes before the stream is attached is not lost.
    exec {events}< <(exec docker events --since "$since" --filter "container=$name" --filter event=start \
        --filter event=health_status --format '{{.TimeNano}} {{.Action}}')
    events_pid=$!
    run_container "$1" "${LOCKED_DOWN[@]}" "$IMAGE"
    deadline=$(($(now_ms) + 20000))
    while [[ -z "$healthy_at" ]] && ((left = deadline - $(now_ms), left > 0)); do
        IFS= read -r -t "$((left / 1000 + 1))" -u "$events" line || break
        case "${line#* }" in
            start) started_at="${line%% *}" ;;
            "health_status: healthy") healthy_at="${line%% *}" ;;
        esac
    done
    kill "$events_pid" 2>/dev/null || true
    exec {events}<&-
    docker rm -f "$name" >/dev/null 2>&1 || true
    if [[ -z "$started_at" ]]; then
        took="no start event within 20s"
        return 1
    elif [[ -z "$healthy_at" ]]; then
        took="no health_status: healthy event within 20s of the start"
        return 1
    fi
    took=$(((healthy_at - started_at) / 1000000))
}

# host_port CONTAINER PORT: the loopback port Docker published for PORT.
host_port() { docker port "$1" "$2/tcp" | sed -n 's/^127\.0\.0\.1:\([0-9]*\)$/\1/p' | head -n 1; }

# http_code URL [curl args...]: prints the status code; the body goes to $work/body.
http_code() {
    local url="$1"
    shift
    curl -sS --max-time 10 -o "$work/body" -w '%{http_code}' "$@" "$url" || echo 000
}

# validate BASE_URL [curl args...]: POST the demo applicant; prints the status code.
validate() {
    local base="$1"
    shift
    http_code "$base/api/v1/validate" -X POST -H 'Content-Type: application/json' -d "$DEMO_BODY" "$@"
}

for tool in docker curl readelf objcopy python3 tar; do
    command -v "$tool" >/dev/null || {
        fail tools "$tool is not installed"
        exit 1
    }
done

# --- engine ------------------------------------------------------------------------------------------------
if engine="$(scripts/engine.sh check 2>&1)"; then
    pass engine "${engine#engine: }"
else
    fail engine "${engine#engine: }"
    exit 1
fi

# --- build -------------------------------------------------------------------------------------------------
build_start="$(now_ms)"
if IMAGE="${IMAGE%%:*}" FAKE_IMAGE="${FAKE_IMAGE%%:*}" TAG="$RUN_ID" scripts/build-image.sh >"$work/build.log" 2>&1; then
    pass build "$IMAGE and $FAKE_IMAGE from host-built static binaries in $((($(now_ms) - build_start) / 1000))s, nothing pulled"
else
    tail -n 30 "$work/build.log"
    fail build "scripts/build-image.sh failed (log above)"
    exit 1
fi

# --- size --------------------------------------------------------------------------------------------------
size="$(docker image inspect -f '{{.Size}}' "$IMAGE")"
mib="$(awk -v b="$size" 'BEGIN { printf "%.2f", b / 1048576 }')"
goal="$(awk -v b="$SIZE_GOAL_BYTES" 'BEGIN { printf "%g", b / 1048576 }')"
budget="$(awk -v b="$SIZE_BUDGET_BYTES" 'BEGIN { printf "%g", b / 1048576 }')"
if ((size > SIZE_BUDGET_BYTES)); then
    fail size "$size bytes ($mib MiB) is over the $budget MiB budget"
elif ((size > SIZE_GOAL_BYTES)); then
    warn size "$size bytes ($mib MiB) within the $budget MiB budget, but over the $goal MiB goal"
else
    pass size "$size bytes ($mib MiB), budget $budget MiB, goal $goal MiB met"
fi

# --- config ------------------------------------------------------------------------------------------------
inspect() { docker image inspect -f "$1" "$IMAGE"; }
user="$(inspect '{{.Config.User}}')"
if [[ "$user" =~ ^([0-9]+)(:([0-9]+))?$ ]] && ((BASH_REMATCH[1] != 0)) && [[ "${BASH_REMATCH[3]:-1}" != 0 ]]; then
    pass config-user "numeric non-root user $user"
else
    fail config-user "user is '$user' (want numeric uid:gid, not 0)"
fi
health="$(inspect '{{json .Config.Healthcheck}}')"
if [[ "$health" == *'"Test":["CMD","/app","healthcheck"'* ]] &&
    [[ "$health" =~ \"Interval\":[1-9] ]] && [[ "$health" =~ \"Timeout\":[1-9] ]] &&
    [[ "$health" =~ \"StartPeriod\":[1-9] ]] && [[ "$health" =~ \"StartInterval\":[1-9] ]] &&
    [[ "$health" =~ \"Retries\":[1-9] ]]; then
    pass config-healthcheck "exec form $(inspect '{{json .Config.Healthcheck.Test}}'), start-period $(inspect '{{.Config.Healthcheck.StartPeriod}}') start-interval $(inspect '{{.Config.Healthcheck.StartInterval}}') interval $(inspect '{{.Config.Healthcheck.Interval}}') timeout $(inspect '{{.Config.Healthcheck.Timeout}}') retries $(inspect '{{.Config.Healthcheck.Retries}}')"
else
    fail config-healthcheck "healthcheck is $health (want exec form CMD /app healthcheck with start period, start interval, interval, timeout, retries)"
fi
ports="$(inspect '{{json .Config.ExposedPorts}}')"
if [[ "$ports" == '{"8080/tcp":{}}' ]]; then
    pass config-port "exposes 8080/tcp only"
else
    fail config-port "exposed ports are $ports (want 8080/tcp)"
fi
entry="$(inspect '{{json .Config.Entrypoint}} {{json .Config.Cmd}} {{.Config.StopSignal}}')"
if [[ "$entry" == '["/app"] ["serve"] SIGTERM' ]]; then
    pass config-entrypoint "ENTRYPOINT [\"/app\"] CMD [\"serve\"] STOPSIGNAL SIGTERM"
else
    fail config-entrypoint "entrypoint, cmd, stop signal are $entry"
fi
missing=""
for label in version revision source licenses; do
    value="$(inspect "{{index .Config.Labels \"org.opencontainers.image.$label\"}}")"
    [[ -n "$value" && "$value" != "<no value>" ]] || missing="$missing $label"
done
if [[ -z "$missing" ]]; then
    pass config-labels "OCI labels version=$(inspect '{{index .Config.Labels "org.opencontainers.image.version"}}') revision=$(inspect '{{index .Config.Labels "org.opencontainers.image.revision"}}') licenses=$(inspect '{{index .Config.Labels "org.opencontainers.image.licenses"}}')"
else
    fail config-labels "missing OCI labels:$missing"
fi

# --- contents ----------------------------------------------------------------------------------------------
# The layers as saved, not a running container's view (which has /dev, /proc and /etc/hosts injected). The
# layer paths come from manifest.json: <id>/layer.tar before Docker 25, blobs/sha256/<digest> (OCI) since.
mkdir -p "$work/image" "$work/rootfs"
docker save "$IMAGE" -o "$work/image.tar"
tar -xf "$work/image.tar" -C "$work/image"
: >"$work/files"
while IFS= read -r layer; do
    tar -tvf "$work/image/$layer" >>"$work/files"
    tar -xf "$work/image/$layer" -C "$work/rootfs"
done < <(python3 -c 'import json, sys; print("\n".join(json.load(open(sys.argv[1]))[0]["Layers"]))' "$work/image/manifest.json")
entries="$(awk '{ print $NF }' "$work/files" | sort -u | tr '\n' ' ')"
modes="$(awk '$NF == "app" { print $1 }' "$work/files")"
if [[ "$entries" == "app " && "$modes" == "-r-xr-xr-x" ]]; then
    pass contents "the layers hold exactly one file: /app ($modes, $(stat -c %s "$work/rootfs/app") bytes)"
else
    fail contents "the layers hold: ${entries:-nothing} (app mode ${modes:-missing}; want only /app, -r-xr-xr-x)"
fi
if docker run --rm --entrypoint /bin/sh "$IMAGE" -c true >"$work/sh.log" 2>&1; then
    fail no-shell "docker run --entrypoint /bin/sh succeeded"
else
    pass no-shell "docker run --entrypoint /bin/sh fails: $(grep -o 'no such file or directory' "$work/sh.log" | head -n 1 || echo 'exit non-zero')"
fi
if [[ -f "$work/rootfs/app" ]]; then
    program_headers="$(readelf -lW "$work/rootfs/app")"
    dynamic="$(readelf -dW "$work/rootfs/app")"
    if ! grep -q INTERP <<<"$program_headers" && ! grep -q NEEDED <<<"$dynamic"; then
        kind="static"
        grep -q 'DYN' <<<"$(readelf -hW "$work/rootfs/app")" && kind="static-pie"
        pass static "/app has no interpreter and needs no shared library ($kind)"
    else
        fail static "/app is dynamically linked: $(grep -E 'INTERP|NEEDED' <<<"$program_headers$dynamic" | tr -s ' ' | head -n 3 | tr '\n' ';')"
    fi
else
    fail static "no /app in the image"
fi

# --- auditable: the dependency list cargo-auditable embeds, which scanners (Trivy, Grype, Syft) read from a
# scratch image that has no package database -------------------------------------------------------------------
if [[ -f "$work/rootfs/app" ]] && objcopy --dump-section .dep-v0="$work/dep-v0" "$work/rootfs/app" "$work/app-copy" 2>/dev/null; then
    if audit="$(python3 - "$work/dep-v0" <<'PY'
import json, sys, zlib
packages = json.loads(zlib.decompress(open(sys.argv[1], "rb").read()))["packages"]
names = {p["name"] for p in packages}
want = {"applicant-validator", "hyper", "rustls", "ring", "tokio", "azure_security_keyvault_secrets"}
missing = sorted(want - names)
dev = sorted(names & {"proptest", "rcgen", "testkit"})
if missing or dev:
    print(f"missing {missing}, dev-only crates present {dev}")
    sys.exit(1)
print(f"{len(packages)} crates, e.g. " + ", ".join(f'{p["name"]} {p["version"]}' for p in packages if p["name"] in want))
PY
)"; then
        pass auditable "/app embeds its dependency list (.dep-v0): $audit"
    else
        fail auditable "the embedded dependency list is wrong: $audit"
    fi
else
    fail auditable "/app has no .dep-v0 section: not built with cargo auditable"
fi

# --- CLI: version, and a clear error rather than a panic when something it needs is missing ----------------
version="$(docker run --rm "$IMAGE" --version 2>&1 || true)"
docker run --rm -e EXTRA_CA_CERTS=/missing/ca.pem -e LOG_LEVEL=LOUD "$IMAGE" serve >"$work/cli.log" 2>&1 && code=0 || code=$?
if [[ "$version" =~ ^applicant-validator\ [0-9]+\.[0-9]+\.[0-9]+$ ]] && ((code == 64)) &&
    grep -q EXTRA_CA_CERTS "$work/cli.log" && grep -q LOG_LEVEL "$work/cli.log" && ! grep -qi panick "$work/cli.log"; then
    pass cli "'$version'; bad config exits 64 naming each variable: $(head -n 1 "$work/cli.log")"
else
    fail cli "version '$version'; bad config exit $code: $(tr '\n' ' ' <"$work/cli.log" | cut -c 1-300)"
fi

# --- time to healthy, as shipped ---------------------------------------------------------------------------
# Five starts with the image's own HEALTHCHECK: the 100ms start interval should make each healthy within half
# a second of its start. The median is held to that, so one start slowed by the shared machine is no failure.
times=()
timing_error=""
for i in 1 2 3 4 5; do
    if time_to_healthy "timing-$i"; then
        times+=("$took")
    else
        timing_error="start $i: $took"
        break
    fi
done
if [[ -n "$timing_error" ]]; then
    fail time-to-healthy "$timing_error (times so far: ${times[*]:-none} ms)"
else
    median="$(printf '%s\n' "${times[@]}" | sort -n | sed -n 3p)"
    detail="start -> healthy in ${times[*]} ms (docker events, image's own HEALTHCHECK); median ${median}ms"
    if ((median <= HEALTHY_LIMIT_MS)); then
        pass time-to-healthy "$detail, limit ${HEALTHY_LIMIT_MS}ms"
    else
        fail time-to-healthy "$detail is over the ${HEALTHY_LIMIT_MS}ms limit"
    fi
fi

# --- locked-down run ---------------------------------------------------------------------------------------
run_start="$(now_ms)"
run_container service "${LOCKED_DOWN[@]}" "${HEALTH_OPTS[@]}" -p 127.0.0.1::8080 "$IMAGE"
service="$started"
first_200=""
deadline=$((run_start + 20000))
port=""
while (($(now_ms) < deadline)); do
    port="${port:-$(host_port "$service" 8080)}"
    if [[ -n "$port" ]] && [[ "$(http_code "http://127.0.0.1:$port/health")" == 200 ]]; then
        first_200=$(($(now_ms) - run_start))
        break
    fi
    sleep 0.05
done
if waited="$(wait_health "$service" healthy 30)"; then
    healthy_ms=$(($(now_ms) - run_start))
    pass healthy "read-only, all capabilities dropped, no-new-privileges: healthy ${healthy_ms}ms after docker run (first HTTP 200 after ${first_200:-?}ms)"
else
    fail healthy "not healthy within 30s: $waited; $(docker logs "$service" 2>&1 | tail -n 3 | tr '\n' ' ')"
fi
base="http://127.0.0.1:${port:-0}"
code="$(http_code "$base/health")"
if [[ "$code" == 200 ]] && grep -q '"status":"healthy"' "$work/body"; then
    pass health "GET /health through 127.0.0.1:$port: 200 $(cat "$work/body")"
else
    fail health "GET /health: $code $(cat "$work/body" 2>/dev/null)"
fi
code="$(validate "$base")"
if [[ "$code" == 200 ]] && grep -q '"riskScore":37,"riskLevel":"MEDIUM"' "$work/body"; then
    pass demo-validate "POST /api/v1/validate in demo mode: 200 $(cat "$work/body")"
else
    fail demo-validate "POST /api/v1/validate: $code $(cat "$work/body" 2>/dev/null)"
fi
docker logs "$service" >"$work/service.log" 2>/dev/null
if grep -qv '^{.*}$' "$work/service.log"; then
    fail json-logs "stdout has lines that are not JSON objects: $(grep -v '^{.*}$' "$work/service.log" | head -n 1)"
else
    pass json-logs "all $(wc -l <"$work/service.log") stdout lines are JSON objects ($(grep -c '"message":"request"' "$work/service.log" || true) request lines)"
fi
# The image has no shell or curl: `diagnose` is what an operator runs inside it.
docker exec "$service" /app diagnose --json >"$work/diagnose.json" 2>"$work/diagnose.err" && code=0 || code=$?
if ((code == 0)) && grep -q '"ok":true' "$work/diagnose.json" && grep -q '"name":"config","status":"ok"' "$work/diagnose.json"; then
    pass diagnose "docker exec /app diagnose --json in the locked-down container: exit 0, $(grep -o '"status":"skip"' "$work/diagnose.json" | wc -l) checks skipped in demo mode"
else
    fail diagnose "docker exec /app diagnose --json: exit $code: $(cut -c 1-300 "$work/diagnose.json" "$work/diagnose.err" | tr '\n' ' ')"
fi

# --- a hung server turns unhealthy, then recovers --------------------------------------------------------
# SIGSTOP of PID 1, not `docker pause`: this engine stops running health probes while a container is paused
# and marks it unhealthy at once, which would prove nothing about the probe. A stopped process still has its
# listening socket, so the probe connects and then times out, exactly like a hung server.
docker kill --signal SIGSTOP "$service" >/dev/null 2>&1 || true
if waited="$(wait_health "$service" unhealthy 30)"; then
    streak="$(docker inspect -f '{{.State.Health.FailingStreak}}' "$service" || echo '?')"
    reason="$(docker inspect -f '{{range .State.Health.Log}}{{.Output}}{{end}}' "$service" | grep unhealthy | tail -n 1 || true)"
    unhealthy_detail="unhealthy after ${waited}ms, $streak failed probes (retries 2): $reason"
    docker kill --signal SIGCONT "$service" >/dev/null 2>&1 || true
    if recovered="$(wait_health "$service" healthy 30)"; then
        pass hung-unhealthy "$unhealthy_detail; healthy again ${recovered}ms after SIGCONT"
    else
        fail hung-unhealthy "$unhealthy_detail; did not recover after SIGCONT: $recovered"
    fi
else
    docker kill --signal SIGCONT "$service" >/dev/null 2>&1 || true
    fail hung-unhealthy "still not unhealthy 30s after SIGSTOP: $waited"
fi
docker rm -f "$service" >/dev/null 2>&1 || true

# --- end to end: the service calls the fake RiskShield on a private network ----------------------------------
docker network create "$NETWORK" >/dev/null
run_container fake "${LOCKED_DOWN[@]}" --network "$NETWORK" --network-alias fake -p 127.0.0.1::9090 \
    -e FAKE_SCORE=73 -e FAKE_LEVEL=HIGH -e FAKE_API_KEY=check-key -e FAKE_DELAY_MS=1500 "$FAKE_IMAGE"
fake="$started"
run_container e2e "${LOCKED_DOWN[@]}" --network "$NETWORK" -p 127.0.0.1::8080 \
    -e RISKSHIELD_API_KEY=check-key -e RISKSHIELD_API_URL=http://fake:9090/v1 -e ALLOW_INSECURE_UPSTREAM=true \
    -e SHUTDOWN_GRACE="${SHUTDOWN_GRACE_S}s" "$IMAGE"
service="$started"
wait_health "$service" healthy 30 >/dev/null || true
base="http://127.0.0.1:$(host_port "$service" 8080)"
fake_base="http://127.0.0.1:$(host_port "$fake" 9090)"
code="$(validate "$base" -H 'X-Correlation-ID: check-e2e-1')"
body="$(cat "$work/body" 2>/dev/null)"
http_code "$fake_base/stats" >/dev/null
stats="$(cat "$work/body" 2>/dev/null)"
if [[ "$code" == 200 ]] && [[ "$body" == *'"riskScore":73,"riskLevel":"HIGH"'* ]] && [[ "$body" == *check-e2e-1* ]] &&
    [[ "$stats" =~ \"requests\":1[,}] ]]; then
    pass e2e "service -> fake RiskShield (scratch, private network): 200 $body; fake stats $stats"
else
    fail e2e "POST /api/v1/validate: $code $body; fake stats $stats; service log: $(docker logs "$service" 2>&1 | tail -n 3 | tr '\n' ' ')"
fi
code="$(http_code "$base/ready")"
if [[ "$code" == 200 ]] && grep -q '"riskshield_api":true' "$work/body"; then
    pass e2e-ready "GET /ready: 200 $(cat "$work/body")"
else
    fail e2e-ready "GET /ready: $code $(cat "$work/body" 2>/dev/null)"
fi

# --- docker stop drains an in-flight request and exits 0 within SHUTDOWN_GRACE ------------------------------
# The fake holds each answer for 1.5s, so this validation is still in flight when SIGTERM arrives.
(validate "$base" >"$work/inflight.code") &
inflight=$!
sleep 0.5
stop_start="$(now_ms)"
docker stop -t $((SHUTDOWN_GRACE_S + 10)) "$service" >/dev/null 2>&1 || true
stop_ms=$(($(now_ms) - stop_start))
wait "$inflight" || true
inflight_code="$(cat "$work/inflight.code")"
exit_code="$(docker inspect -f '{{.State.ExitCode}}' "$service" 2>/dev/null || echo none)"
logs="$(docker logs "$service" 2>/dev/null)"
if [[ "$exit_code" == 0 ]] && ((stop_ms <= SHUTDOWN_GRACE_S * 1000)) && [[ "$inflight_code" == 200 ]] &&
    grep -q 'shutting down, draining' <<<"$logs" && grep -q 'drained, exiting' <<<"$logs"; then
    pass graceful-stop "docker stop took ${stop_ms}ms (SHUTDOWN_GRACE ${SHUTDOWN_GRACE_S}s), exit 0, in-flight request answered $inflight_code, logged 'shutting down, draining' and 'drained, exiting'"
else
    fail graceful-stop "stop took ${stop_ms}ms, exit $exit_code, in-flight answered $inflight_code; log tail: $(tail -n 3 <<<"$logs" | tr '\n' ' ')"
fi
docker stop -t 5 "$fake" >/dev/null 2>&1 || true
fake_exit="$(docker inspect -f '{{.State.ExitCode}}' "$fake" 2>/dev/null || echo none)"
if [[ "$fake_exit" == 0 ]]; then
    pass fake-stop "the fake RiskShield exits 0 on SIGTERM"
else
    fail fake-stop "the fake RiskShield exited $fake_exit on SIGTERM"
fi

# --- the local compose stack runs from the same images ------------------------------------------------------
# compose.yaml's start_interval needs Compose v2.20+: v1 rejects the key (scripts/engine.sh provides v2).
# The published ports come from free_port (scripts/lib.sh): a fixed 8080 could collide with the machine's own.
compose_cli=()
for cli in ${COMPOSE:+"$COMPOSE"} "docker compose" docker-compose; do
    if [[ "$($cli version --short 2>/dev/null || true)" =~ ^v?([0-9]+)\.([0-9]+) ]] &&
        ((BASH_REMATCH[1] > 2 || (BASH_REMATCH[1] == 2 && BASH_REMATCH[2] >= 20))); then
        read -ra compose_cli <<<"$cli"
        break
    fi
done
if ((${#compose_cli[@]} == 0)); then
    echo "SKIP compose: no Compose v2.20+ (\$COMPOSE, 'docker compose' or 'docker-compose'); scripts/engine.sh run provides it"
else
    service_port="$(free_port)"
    compose=(env "IMAGE=${IMAGE%%:*}" "FAKE_IMAGE=${FAKE_IMAGE%%:*}" "TAG=$RUN_ID" "HOST_PORT=$service_port"
        "FAKE_HOST_PORT=$(free_port)" "${compose_cli[@]}" -p "$RUN_ID" -f compose.yaml)
    compose_up=1
    if "${compose[@]}" up -d --no-build >"$work/compose.log" 2>&1; then
        service="$("${compose[@]}" ps -q applicant-validator)"
        waited="$(wait_health "$service" healthy 30)" || true
        start_interval="$(docker inspect -f '{{.Config.Healthcheck.StartInterval}}' "$service" 2>/dev/null || true)"
        code="$(validate "http://127.0.0.1:$service_port")"
        if [[ "$waited" =~ ^[0-9]+$ ]] && [[ "$code" == 200 ]] &&
            grep -q '"riskScore":42,"riskLevel":"MEDIUM"' "$work/body"; then
            pass compose "compose.yaml stack (service + fake RiskShield, same images, $("${compose_cli[@]}" version --short)): healthy ${waited}ms after up returned (start interval $start_interval), answers 200 $(cat "$work/body")"
        else
            fail compose "health: $waited; POST /api/v1/validate through the compose stack: $code $(cat "$work/body" 2>/dev/null)"
        fi
    else
        fail compose "compose up failed: $(tail -n 3 "$work/compose.log" | tr '\n' ' ')"
    fi
    "${compose[@]}" down --timeout 15 >>"$work/compose.log" 2>&1 || true
    compose_up=0
fi

# --- nothing left behind -----------------------------------------------------------------------------------
cleanup
left="$(docker ps -aq --filter "name=$RUN_ID")$(docker network ls -q --filter "name=$RUN_ID")$(docker images -q --filter "reference=*:$RUN_ID")"
if [[ -z "$left" ]]; then
    pass cleanup "no container, network or image named $RUN_ID is left"
else
    fail cleanup "left behind: $left"
fi

total_s="$(awk -v ns="$(($(date +%s%N) - started_ns))" 'BEGIN { printf "%.1f", ns / 1e9 }')"
if ((failures > 0)); then
    echo "check-image: $failures check(s) failed (${total_s}s)"
    exit 1
fi
echo "check-image: all checks passed (${total_s}s)"
