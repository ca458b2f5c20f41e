#!/usr/bin/env bash
# Third-party conformance: the tools people already point at such a service, run against the release binary
# on 127.0.0.1, twice (demo mode, then scoring against the fake RiskShield). Any finding fails the script.
#
#   openapi-spec-validator  the served /openapi.json is a valid OpenAPI 3.1 document, its patterns checked as
#                           ECMA-262 (the ecma-regex extra; Python's own regexes have no \p{...})
#   schemathesis            every operation, all checks, positive and negative data: the service does what
#                           the document says (statuses, headers, content types, response schemas, schema-valid
#                           requests accepted and schema-violating ones refused), one fixed seed and one random;
#                           scripts/conformance_hooks.py keeps unassigned code points out of names (why: there)
#   promtool                /metrics in the classic Prometheus text format passes `promtool check metrics`
#                           (parser and lint); promtool comes from Debian's prometheus package, unpacked only
#   prometheus_client       /metrics in OpenMetrics passes the strict OpenMetrics parser, with the same samples
#                           as the classic form
#
# Usage: scripts/conformance.sh
# Env:   CONFORMANCE_SEED (the random seed, to replay a run), CONFORMANCE_MAX_TIME (seconds per random run, 45)
#
# Rules the document cannot state in a schema, and so no tool here checks (its descriptions say them):
# - ID_NUMBER_STRICT=true adds a date and a Luhn check to idNumber; the runs use the default (off).
# - Names: the pattern is exact for the characters and the trimming, but it judges letters and marks by the
#   validator's Unicode tables (schemathesis validates with jsonschema_rs, whose regex engine is a Unicode
#   version behind the service's): a letter assigned in between is refused by the pattern and accepted by the
#   service. The hooks keep code points unassigned in the tools' tables out of the generated names.
# - Which of the documented statuses appear depends on the configuration (429 only with a rate limit, upstream
#   errors only outside demo mode); each run reaches the ones its configuration allows.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. scripts/tools.sh

CACHE=$TOOL_CACHE
VENV=$CACHE/conformance-venv
HOOKS=$PWD/scripts/conformance_hooks.py
FIXED_SEED=20240601
SEED=${CONFORMANCE_SEED:-$(((RANDOM << 15) | RANDOM))}
MAX_TIME=${CONFORMANCE_MAX_TIME:-45}

# --- tools -------------------------------------------------------------------------------------------------
# A venv of our own with every package pinned (scripts/tools.sh), rebuilt when the pins change.
ensure_venv "$VENV" scripts/conformance-requirements.txt
PY=$VENV/bin/python

# promtool from Debian's prometheus package, unpacked into the cache: no daemon, no service, no users.
PROMTOOL=$(command -v promtool || true)
if [[ -z "$PROMTOOL" ]]; then
  PROMTOOL=$CACHE/prometheus-deb/usr/bin/promtool
  if [[ ! -x "$PROMTOOL" ]]; then
    log "fetching promtool (Debian package prometheus, unpacked only)"
    apt-cache show prometheus >/dev/null 2>&1 || as_root apt-get update -qq
    deb_dir=$(mktemp -d)
    # apt's download sandbox user cannot write to a root-owned temp dir; the warning about it is harmless.
    (cd "$deb_dir" && { apt-get download -q prometheus 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true; })
    rm -rf "$CACHE/prometheus-deb"
    dpkg -x "$deb_dir"/prometheus_*.deb "$CACHE/prometheus-deb"
    rm -rf "$deb_dir"
  fi
fi
log "$("$PROMTOOL" --version 2>&1 | head -n 1)"

log "building the static release binary and the fake RiskShield"
# As scripts/build-image.sh builds them (scripts/tools.sh), so an image build just before leaves nothing to
# rebuild.
build_service
build_fake
BIN=$SERVICE_BIN
FAKE=$FAKE_BIN

# --- processes (started and stopped by scripts/lib.sh) -----------------------------------------------------
WORK=$(mktemp -d)
trap 'stop_all; rm -rf "$WORK"' EXIT

FAKE_PORT=$(free_port)
start_bg fake "$WORK/fake.log" "$FAKE" --listen "127.0.0.1:$FAKE_PORT" --score 42 --level MEDIUM
wait_http "http://127.0.0.1:$FAKE_PORT/health"

# --- the checks, against one running service ---------------------------------------------------------------
check_service() {
  local name=$1 port=$2
  local base="http://127.0.0.1:$port"
  local dir="$WORK/$name"
  mkdir -p "$dir"

  log "$name: openapi-spec-validator"
  "$PY" - "$base/openapi.json" "$dir/openapi.json" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as answer, open(sys.argv[2], "wb") as out:
    out.write(answer.read())
PY
  "$VENV/bin/openapi-spec-validator" "$dir/openapi.json"

  # Run from the work dir so nothing (.hypothesis, reports) lands in the checkout.
  local seed
  for seed in "$FIXED_SEED" "$SEED"; do
    local bound=(--max-examples 40)
    if [[ "$seed" == "$SEED" ]]; then bound=(--max-examples 200 --max-time "$MAX_TIME"); fi
    log "$name: schemathesis, seed $seed ${bound[*]}"
    (cd "$dir" && SCHEMATHESIS_HOOKS="$HOOKS" "$VENV/bin/schemathesis" run "$base/openapi.json" \
      --checks all --seed "$seed" "${bound[@]}" --workers 2 --request-timeout 10 \
      --generation-database none --no-color)
  done

  # After the fuzzing, so the exposition holds many routes, methods and statuses.
  log "$name: promtool check metrics (classic) and the OpenMetrics parser"
  "$PY" - "$base/metrics" "$dir" <<'PY'
import sys, urllib.request
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as classic

def scrape(accept):
    request = urllib.request.Request(sys.argv[1], headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.headers["Content-Type"], answer.read().decode("utf-8")

def samples(families, skip_route):
    # The scrape itself is counted between the two scrapes, so the /metrics route's own series differ.
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in families for s in f.samples
        if s.labels.get("route") != skip_route
    )

ct, text = scrape(None)
assert ct == "text/plain; version=0.0.4; charset=utf-8", ct
ct, text = scrape("text/plain")
assert ct == "text/plain; version=0.0.4; charset=utf-8", ct
open(f"{sys.argv[2]}/metrics.txt", "w").write(text)
ct, om = scrape("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
assert ct == "application/openmetrics-text; version=1.0.0; charset=utf-8", ct
parsed = list(openmetrics(om))
assert parsed, "no OpenMetrics families"
a, b = samples(classic(text), "/metrics"), samples(parsed, "/metrics")
assert a == b, f"classic and OpenMetrics samples differ: {set(a) ^ set(b)}"
print(f"OpenMetrics: {len(parsed)} families, {len(b)} samples, the same in the classic form")
PY
  "$PROMTOOL" check metrics <"$dir/metrics.txt"
  log "$name: promtool: clean"
}

DEMO_PORT=$(free_port)
start_bg demo "$WORK/demo.log" env HOST=127.0.0.1 PORT="$DEMO_PORT" DEMO_MODE=true LOG_LEVEL=WARN "$BIN" serve
wait_http "http://127.0.0.1:$DEMO_PORT/health"
check_service demo "$DEMO_PORT"

# Against the fake RiskShield, with a rate limit this run never reaches, so the X-RateLimit-* headers are
# on every validation answer and schemathesis checks them against the document too.
SVC_PORT=$(free_port)
start_bg riskshield "$WORK/riskshield.log" env HOST=127.0.0.1 PORT="$SVC_PORT" RISKSHIELD_API_KEY=conformance-key \
  RISKSHIELD_API_URL="http://127.0.0.1:$FAKE_PORT/v1" RATE_LIMIT_PER_MINUTE=1000000000 LOG_LEVEL=WARN \
  "$BIN" serve
wait_http "http://127.0.0.1:$SVC_PORT/health"
check_service riskshield "$SVC_PORT"

log "all conformance checks passed (fixed seed $FIXED_SEED, random seed $SEED; replay with CONFORMANCE_SEED=$SEED)"
