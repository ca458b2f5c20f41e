#!/usr/bin/env bash
# Mutation testing of the request path with cargo-mutants (docs/testing.md): each mutant is one small change
# to the code (a condition flipped, a function's result replaced, an operator swapped) built and run against
# the whole test suite; a mutant no test fails on is "missed", a place where a bug would go unseen.
#
# Usage:
#   scripts/mutants.sh                    every mutant of the request path (hours on 2 cores)
#   scripts/mutants.sh PATH...            only mutants in these files or folders (e.g. src/riskshield/retry.rs)
#   scripts/mutants.sh --in-diff [REV]    only mutants on the request path's lines changed since REV (default
#                                         HEAD^, the last commit); what CI runs
#   scripts/mutants.sh --iterate [PATH...]  again, only the mutants that the last run into the same report
#                                         folder did not catch (after tests were added for them)
#
# The request path: the vendor client (src/riskshield/), validation, the rate limiter, caller authentication
# (src/auth/), the handlers with their envelope and answers, configuration parsing (src/config/) and the JSON
# log line writer. Equivalent mutants (changes no test can ever see) are excluded in .cargo/mutants.toml, each
# with its reason.
#
# Env: MUTANTS_JOBS (1), MUTANTS_TIMEOUT (seconds a mutant's tests may take in a whole run; by default 12 × the
# unmutated suite, as .cargo/mutants.toml sets it), MUTANTS_MAX (--in-diff only, default 8: when the change has
# more mutants than this, one shard of about that size is tested, chosen by the commit, so a later commit tests
# another), MUTANTS_OUT (where the report folder goes, default target). Exits 0 when no mutant is missed and none
# timed out; 2 or 3 (cargo-mutants' codes) otherwise, with the missed mutants printed.
#
# Installs cargo-mutants (and, for whole runs, cargo-nextest) at the versions pinned in scripts/tools.sh. With
# CI=true, --in-diff mutates the clone in place (cargo-mutants puts every file back), so the build reuses the
# test stage's compiled dependencies instead of copying the tree; elsewhere the tree is copied (with its target
# folder, so no copy builds the dependencies again) and your checkout is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. scripts/tools.sh

REQUEST_PATH=(
    src/riskshield
    src/validation.rs
    src/ratelimit.rs
    src/auth
    src/http/envelope.rs
    src/http/handlers.rs
    src/http/response.rs
    src/config
    src/telemetry/jsonline.rs
)

in_diff=""
in_place=false
iterate=false
paths=()
while (($#)); do
    case "$1" in
    --in-diff)
        in_diff="HEAD^"
        if [[ $# -gt 1 && "$2" != -* ]]; then
            in_diff="$2"
            shift
        fi
        ;;
    --iterate) iterate=true ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) paths+=("$1") ;;
    esac
    shift
done
((${#paths[@]})) || paths=("${REQUEST_PATH[@]}")


out="${MUTANTS_OUT:-target}"
mkdir -p "$out"
args=(--no-shuffle --output "$out")
for path in "${paths[@]}"; do
    if [[ -d "$path" ]]; then
        args+=(--file "$path/**/*.rs")
    else
        args+=(--file "$path")
    fi
done

if [[ -n "$in_diff" ]]; then
    git rev-parse --verify --quiet "$in_diff^{commit}" >/dev/null || die "no commit $in_diff to compare with"
    diff="$out/changes.diff"
    git diff "$in_diff" -- "${paths[@]}" >"$diff"
    if [[ ! -s "$diff" ]]; then
        log "no request-path line changed since $in_diff: no mutant to test"
        exit 0
    fi
    args+=(--in-diff "$diff")
    ensure_cargo_tool cargo-mutants "$CARGO_MUTANTS_VERSION"
    count="$(cargo mutants "${args[@]}" --list | wc -l)"
    max="${MUTANTS_MAX:-8}"
    if ((count == 0)); then
        log "the lines changed since $in_diff hold no mutant"
        exit 0
    fi
    if ((count > max)); then
        shards=$(((count + max - 1) / max))
        shard=$((0x$(git rev-parse --short=8 HEAD) % shards))
        log "$count mutants on the lines changed since $in_diff; testing shard $shard of $shards (about $max)"
        args+=(--shard "$shard/$shards")
    else
        log "$count mutants on the lines changed since $in_diff"
    fi
    # The test stage ran the suite just before: no baseline run, and a timeout per mutant of its own instead of
    # one derived from the baseline (the suite takes well under a minute here; a mutant that hangs a test is
    # ended after this and counted as a timeout).
    args+=(--baseline skip --timeout 300 --build-timeout 600)
    [[ "${CI:-}" == true ]] && in_place=true
    # As in .config/nextest.toml's profile: more test threads than cores, since most tests wait.
    export RUST_TEST_THREADS=8
else
    # A whole run tests hundreds of mutants, and a mutant that breaks the service makes many integration tests
    # wait for their patience (40 s each) before they fail. cargo test runs every test of a binary to its end;
    # nextest stops at the first failure, so such a mutant costs one test's wait instead of the suite's. For
    # the few mutants of --in-diff, installing nextest would cost more than it saves.
    ensure_cargo_tool cargo-mutants "$CARGO_MUTANTS_VERSION"
    ensure_cargo_tool cargo-nextest "$CARGO_NEXTEST_VERSION"
    args+=(--test-tool nextest --profile mutants --copy-target=true)
    export NEXTEST_PROFILE=mutants
fi
# In place there is one tree, so one job.
if $in_place; then
    args+=(--in-place)
else
    args+=(--jobs "${MUTANTS_JOBS:-1}")
fi

$iterate && args+=(--iterate)
[[ -n "${MUTANTS_TIMEOUT:-}" && -z "$in_diff" ]] && args+=(--timeout "$MUTANTS_TIMEOUT")
start="$SECONDS"
status=0
cargo mutants "${args[@]}" || status=$?
log "cargo mutants exited $status after $((SECONDS - start)) s; report in $out/mutants.out"
for kind in missed timeout; do
    if [[ -s "$out/mutants.out/$kind.txt" ]]; then
        log "$kind:"
        sed 's/^/  /' "$out/mutants.out/$kind.txt" >&2
    fi
done
exit "$status"
