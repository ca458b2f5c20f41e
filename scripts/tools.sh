#!/usr/bin/env bash
# Sourced by the build scripts (run from the repository root): the pinned cargo tools, installed at their
# versions (cargo install --locked, from the crate registry) unless already there, and the version and git
# revision that the image labels and the SBOM carry. Pins live here, in one place.

CARGO_AUDITABLE_VERSION=0.7.7
CARGO_DENY_VERSION=0.20.2
CARGO_CYCLONEDX_VERSION=0.5.9

# ensure_cargo_tool CRATE VERSION: installs CRATE@VERSION unless `cargo install --list` already has it.
ensure_cargo_tool() {
    local crate="$1" version="$2"
    if cargo install --list 2>/dev/null | grep -qx "$crate v$version:"; then
        return 0
    fi
    echo "installing $crate $version (cargo install --locked)" >&2
    cargo install --locked --quiet "$crate@$version" >&2
}

# The crate's version, and the git revision (with -dirty when the tree has uncommitted changes).
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [[ "$REVISION" != unknown ]] && ! git diff --quiet HEAD -- 2>/dev/null; then
    REVISION="${REVISION}-dirty"
fi
