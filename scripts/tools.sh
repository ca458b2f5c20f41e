#!/usr/bin/env bash
# shellcheck disable=SC2034 # the variables are for the scripts that source this file
# Sourced by the build scripts (run from the repository root): the pinned cargo tools, installed at their
# versions (cargo install --locked, from the crate registry) unless already there; the pinned Python tools, in
# a venv per requirements file; the builds of the shipped binaries; and the version and git revision that the
# image labels and the SBOM carry. Pins live here (and in the requirements files and scripts/engine.sh), so a
# version changes in one place.

CARGO_AUDITABLE_VERSION=0.7.7
CARGO_DENY_VERSION=0.20.2
CARGO_MUTANTS_VERSION=27.1.0
CARGO_NEXTEST_VERSION=0.9.87
# Where the scripts keep what they download (venvs, unpacked Debian packages): one folder, outside the clone.
TOOL_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/applicant-validator"

# ensure_cargo_tool CRATE VERSION: installs CRATE@VERSION unless `cargo install --list` already has it.
ensure_cargo_tool() {
    local crate="$1" version="$2"
    if cargo install --list 2>/dev/null | grep -qx "$crate v$version:"; then
        return 0
    fi
    echo "installing $crate $version (cargo install --locked)" >&2
    cargo install --locked --quiet "$crate@$version" >&2
}

# ensure_venv VENV REQUIREMENTS: a venv of our own with every package of REQUIREMENTS at its pinned version,
# made again when the pins change (the sum of the file is kept in VENV/.pins). python3-venv is installed
# with apt when python3 cannot make a venv (log and apt_install: scripts/lib.sh, sourced first).
ensure_venv() {
    local venv="$1" requirements="$2" stamp
    stamp="$(sha256sum "$requirements" | cut -d ' ' -f 1)"
    [[ "$(cat "$venv/.pins" 2>/dev/null)" != "$stamp" ]] || return 0
    log "installing the pinned Python tools of $requirements into $venv"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    if ! python3 -m venv "$venv" 2>/dev/null; then
        apt_install python3-venv
        rm -rf "$venv"
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check --no-input -r "$requirements"
    echo "$stamp" >"$venv/.pins"
}

# The shipped binaries: the static musl release builds, with cargo-auditable, which embeds the dependency list
# (a .dep-v0 section) that scanners and scripts/sbom.sh read. Every script that needs the service or the fake
# RiskShield builds them here, so all of them run the binary the image ships, and after one build the others
# find nothing to rebuild. Two cargo invocations on purpose: building the example in the same command would
# unify the dev-dependencies' features (tokio's test-util) into the service binary.
SHIPPED_TARGET=x86_64-unknown-linux-musl
SHIPPED_DIR="${CARGO_TARGET_DIR:-target}/$SHIPPED_TARGET/release"
SERVICE_BIN="$SHIPPED_DIR/applicant-validator"
FAKE_BIN="$SHIPPED_DIR/examples/fake_riskshield"

build_service() {
    ensure_cargo_tool cargo-auditable "$CARGO_AUDITABLE_VERSION"
    cargo auditable build --locked --release --target "$SHIPPED_TARGET" --bin applicant-validator >&2
}

build_fake() {
    ensure_cargo_tool cargo-auditable "$CARGO_AUDITABLE_VERSION"
    cargo auditable build --locked --release --target "$SHIPPED_TARGET" --example fake_riskshield >&2
}

# The crate's version, and the git revision (with -dirty when the tree has uncommitted changes).
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [[ "$REVISION" != unknown ]] && ! git diff --quiet HEAD -- 2>/dev/null; then
    REVISION="${REVISION}-dirty"
fi
