#!/usr/bin/env bash
# The checks a change must pass before anything else: formatting, lints and the whole test suite (unit,
# property and integration tests against the real server and binary). It is not all of CI: .ci/run runs this
# first, then the other stages listed at the top of that file. Installs what it needs (rustfmt and clippy
# components) so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked --workspace --all-targets 2>&1 | tee "$log"
# One closing line for the whole suite (cargo prints one summary per test binary, the last often for an
# example with no tests).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
