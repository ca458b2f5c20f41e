#!/usr/bin/env bash
# Fuzzes the service's hand-written parsers (docs/fuzzing.md) with cargo-fuzz (libFuzzer): the upstream answer
# reader against hyper, validation's direct read against its serde_json Value road, the JSON log line writer
# against serde_json, and the X-Forwarded-For client key against its contract. Each target runs for a bounded
# time and starts from its committed seeds (fuzz/corpus/TARGET); what it learns goes to fuzz/target/corpus and
# a failing input to fuzz/artifacts/TARGET. Exits non-zero if any target fails.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET defaults to $FUZZ_SECONDS, else 60 (CI); a long run: scripts/fuzz.sh 600.
#   TARGETs default to all of them.
#
# Works on a fresh machine as root: installs cargo-fuzz at the version pinned below, and a C++ compiler for
# libFuzzer if there is none. cargo-fuzz passes nightly-only compiler flags; RUSTC_BOOTSTRAP=1 lets the one
# stable toolchain accept them (no nightly toolchain is used). The targets are built without a sanitizer: the
# library has no unsafe code (#![forbid(unsafe_code)]), and what the targets look for (a panic, a failed
# comparison, an overflow) is caught by the debug assertions and overflow checks they are built with, at
# several times the speed of an AddressSanitizer build.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
ALL_TARGETS=(h1_answer validation jsonline forwarded_for)

cd "$(dirname "$0")/.."
seconds="${1:-${FUZZ_SECONDS:-60}}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=("${ALL_TARGETS[@]}")
fi
case "$seconds" in
'' | *[!0-9]*)
    echo "fuzz.sh: seconds per target must be a whole number, not '$seconds'" >&2
    exit 64
    ;;
esac

export RUSTC_BOOTSTRAP=1

if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
# libfuzzer-sys compiles libFuzzer, which is C++.
if ! command -v c++ >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends g++
fi

flags=(--sanitizer none --release --debug-assertions)
cargo fuzz build "${flags[@]}"

logs="fuzz/target/logs"
mkdir -p "$logs"
failed=()
summary=()
for target in "${targets[@]}"; do
    corpus="fuzz/target/corpus/$target"
    mkdir -p "$corpus"
    options=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1)
    if [ -f "fuzz/dict/$target.dict" ]; then
        options+=(-dict="fuzz/dict/$target.dict")
    fi
    echo "== $target: $seconds s"
    status=0
    started=$(date +%s)
    # The working corpus comes first: libFuzzer adds what it finds there and leaves the seeds as they are.
    cargo fuzz run "${flags[@]}" "$target" "$corpus" "fuzz/corpus/$target" -- "${options[@]}" \
        >"$logs/$target.log" 2>&1 || status=$?
    took=$(($(date +%s) - started))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$target.log" | tail -n 1)
    summary+=("$target: ${runs:-?} executions in ${took} s, exit $status")
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        # The failure and the input that caused it.
        grep -E -A 30 "panicked|ERROR: libFuzzer|deadly signal|SUMMARY" "$logs/$target.log" | head -n 60 >&2 || true
        tail -n 5 "$logs/$target.log" >&2
    fi
done

echo "== executions per target"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz.sh: failed: ${failed[*]} (inputs in fuzz/artifacts/, logs in $logs/)" >&2
    exit 1
fi
