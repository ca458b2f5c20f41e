#!/usr/bin/env bash
# Sourced by the scripts that need cargo tools: installs each at its pinned version (cargo install --locked,
# from the crate registry) unless that version is already on PATH. Pins live here, in one place.

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
