#!/usr/bin/env bash
# The supply-chain gate (CI runs it): every crate in the dependency graph is checked by cargo-deny for
#   advisories  - RustSec advisories (vulnerabilities, unsound, unmaintained direct dependencies, yanked)
#   licenses    - only the permissive licences allowed in deny.toml
#   bans        - no second TLS/HTTP stack; duplicate versions reported as warnings
#   sources     - crates.io only
# and the licences found are listed.
#
# The advisory database: the live RustSec database when it can be fetched; otherwise (the build machines
# cannot reach GitHub) the offline snapshot in ../shared/advisory-db (ADVISORY_DB_SNAPSHOT to point
# elsewhere). The output names the database and its date. No database at all fails the gate.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/tools.sh

ensure_cargo_tool cargo-deny "$CARGO_DENY_VERSION"

SNAPSHOT="${ADVISORY_DB_SNAPSHOT:-../shared/advisory-db}"
export ADVISORY_DB_ROOT
ADVISORY_DB_ROOT="$(mktemp -d)"
trap 'rm -rf "$ADVISORY_DB_ROOT"' EXIT

# cargo-deny keeps each database in a folder named after its URL (advisory-db-<hash of the URL>); a failed
# fetch names the folder it meant to clone into, and that is where the snapshot goes.
source_note=""
if fetch_log="$(timeout 60 cargo deny --log-level error fetch db 2>&1)"; then
    db="$(find "$ADVISORY_DB_ROOT" -mindepth 1 -maxdepth 1 -type d | head -n 1)"
    source_note="live RustSec database (fetched now)"
else
    DB_DIR_NAME="$(grep -o 'advisory-db-[0-9a-f]\{16\}' <<<"$fetch_log" | head -n 1)"
    DB_DIR_NAME="${DB_DIR_NAME:-advisory-db-3157b0e258782691}"
    if [[ ! -d "$SNAPSHOT/crates" ]]; then
        echo "supply-chain: the RustSec database cannot be fetched and there is no snapshot at $SNAPSHOT" >&2
        exit 1
    fi
    db="$ADVISORY_DB_ROOT/$DB_DIR_NAME"
    mkdir -p "$db"
    cp -r "$SNAPSHOT"/. "$db"
    # cargo-deny opens the database as a git repository.
    git -C "$db" init -q
    git -C "$db" add -A
    git -C "$db" -c user.name=supply-chain -c user.email=supply-chain@localhost \
        -c commit.gpgsign=false commit -qm "offline snapshot"
    snapshot_line="$(grep -m 1 -o 'commit [0-9a-f]\{40\} of [0-9-]*' "$SNAPSHOT/SNAPSHOT.md" || true)"
    source_note="offline snapshot ($SNAPSHOT${snapshot_line:+, $snapshot_line})"
fi
newest="$(find "$db/crates" -name 'RUSTSEC-*.md' -print0 | xargs -0 sed -n 's/^date = "\([0-9-]*\)"$/\1/p' | sort | tail -n 1)"
echo "advisory database: $source_note; newest advisory dated ${newest:-unknown}"

# cargo-deny reads the whole graph, the crates of other platforms included (windows-sys, wasm's bumpalo), which a
# build on this host never downloads: fetch them all from the crate registry first, so the offline check
# finds every one on a fresh machine too.
cargo fetch --locked --quiet
cargo deny --locked --offline check --show-stats advisories licenses bans sources

echo "licences in the dependency graph (crates per licence expression):"
cargo metadata --locked --format-version 1 | python3 -c '
import collections, json, sys
counts = collections.Counter(p.get("license") or "(licence file)" for p in json.load(sys.stdin)["packages"])
for licence, n in counts.most_common():
    print(f"  {n:4d}  {licence}")
'
