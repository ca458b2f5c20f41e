#!/usr/bin/env bash
# Writes the SBOM (CycloneDX 1.6 JSON) of the shipped binary: dist/sbom/applicant-validator-VERSION.cdx.json.
#
# It reads the dependency list that cargo-auditable embeds in the binary (.dep-v0), so the SBOM lists exactly
# the crates compiled into what ships (build-only crates marked `scope: excluded`), with licences from
# `cargo metadata`, SHA-256 checksums from Cargo.lock, package URLs, the dependency graph, and the version and
# git revision the image labels carry (org.opencontainers.image.version / .revision). The document is built
# and validated against the CycloneDX 1.6 schema by cyclonedx-python-lib (pinned in
# scripts/sbom-requirements.txt, in a venv this script makes). CI runs it and prints the summary line.
#
# Env: SBOM_DIR (default dist/sbom); CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. scripts/tools.sh

OUT_DIR="${SBOM_DIR:-dist/sbom}"
BIN=$SERVICE_BIN
VENV="$TOOL_CACHE/sbom-venv"

# The shipped binary, as scripts/build-image.sh builds it (nothing to do when it is up to date).
build_service

ensure_venv "$VENV" scripts/sbom-requirements.txt

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
objcopy --dump-section .dep-v0="$work/dep-v0.zlib" "$BIN" "$work/bin-copy"
python3 -c 'import sys, zlib; sys.stdout.buffer.write(zlib.decompress(open(sys.argv[1], "rb").read()))' \
    "$work/dep-v0.zlib" >"$work/dep-v0.json"
cargo metadata --locked --format-version 1 >"$work/metadata.json"
mkdir -p "$OUT_DIR"
"$VENV/bin/python" scripts/sbom.py "$work/dep-v0.json" "$work/metadata.json" Cargo.lock "$VERSION" "$REVISION" \
    "$OUT_DIR/applicant-validator-$VERSION.cdx.json"
