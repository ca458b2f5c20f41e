#!/usr/bin/env bash
# Builds the container images without pulling anything: the static musl binaries are built on the host and
# copied into the FROM scratch stages of the Dockerfile (`--target prebuilt` and `fake-riskshield-prebuilt`).
#
# Environment (all optional):
#   IMAGE       service image name            (default applicant-validator)
#   FAKE_IMAGE  fake RiskShield image name    (default fake-riskshield)
#   TAG         tag for both                  (default: the crate version, e.g. 0.1.0)
#   SKIP_FAKE   1 = build only the service image
#   CARGO_TARGET_DIR is honoured.
#
# Prints the built image references on the last lines as `IMAGE_REF=...` and `FAKE_IMAGE_REF=...`.
#
# Needs Docker Engine 25+ (the Dockerfile's HEALTHCHECK --start-interval); on an older one, run it as
# `scripts/engine.sh run scripts/build-image.sh` (the images then live in that run's sandboxed engine and go
# with it: this is for trying the build, scripts/check-image.sh for checking it).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
. scripts/tools.sh

TARGET=$SHIPPED_TARGET
IMAGE="${IMAGE:-applicant-validator}"
FAKE_IMAGE="${FAKE_IMAGE:-fake-riskshield}"
TAG="${TAG:-$VERSION}"
SKIP_FAKE="${SKIP_FAKE:-0}"

command -v docker >/dev/null || die "docker is not installed"
# The Dockerfile's HEALTHCHECK --start-interval needs Docker Engine 25+ (API 1.44): say so before building
# (engine.sh check says why on stderr).
scripts/engine.sh check || die "no Docker Engine 25+ here: scripts/engine.sh run scripts/build-image.sh builds on one"
command -v cargo >/dev/null || die "cargo is not installed"
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET" >/dev/null
fi
# ring compiles C for the target: musl-tools provides musl-gcc, which the cc crate finds on its own.
command -v musl-gcc >/dev/null || command -v x86_64-linux-musl-gcc >/dev/null ||
    die "no musl C compiler: apt-get install -y musl-tools"

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/dist/service" "$context/dist/fake"

# Built with cargo-auditable (scripts/tools.sh): the embedded dependency list lets scanners (Trivy, Grype,
# Syft) see the crates in a FROM scratch image that has no package database.
echo "== cargo auditable build --release --target $TARGET (applicant-validator)"
build_service
install -m 0555 "$SERVICE_BIN" "$context/dist/service/app"
if [[ "$SKIP_FAKE" != 1 ]]; then
    echo "== cargo auditable build --release --target $TARGET (example fake_riskshield)"
    build_fake
    install -m 0555 "$FAKE_BIN" "$context/dist/fake/fake-riskshield"
fi
cp Dockerfile "$context/Dockerfile"

# The build context is only the Dockerfile and the binaries: small, and nothing else can leak into a layer.
build() {
    local stage="$1" ref="$2"
    echo "== docker build --target $stage -t $ref"
    docker build --quiet \
        --target "$stage" \
        --build-arg "VERSION=$VERSION" \
        --build-arg "REVISION=$REVISION" \
        -t "$ref" "$context" >/dev/null
}
build prebuilt "$IMAGE:$TAG"
if [[ "$SKIP_FAKE" != 1 ]]; then
    build fake-riskshield-prebuilt "$FAKE_IMAGE:$TAG"
fi

echo "IMAGE_REF=$IMAGE:$TAG"
if [[ "$SKIP_FAKE" != 1 ]]; then
    echo "FAKE_IMAGE_REF=$FAKE_IMAGE:$TAG"
fi
