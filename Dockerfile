# applicant-validator: a static musl binary in a FROM scratch image.
#
# Two ways to build the same runtime image (see docs/container.md):
#
#   1. Multi-stage, for machines that can pull the official Rust image (the default target):
#        docker build -t applicant-validator .
#        docker build --target fake-riskshield -t fake-riskshield .
#
#   2. From binaries built on the host, for machines that cannot pull anything (CI):
#        scripts/build-image.sh
#      which runs `cargo release-static`, copies the binaries to dist/service/app and
#      dist/fake/fake-riskshield (mode 0555) and builds
#        docker build --target prebuilt -t applicant-validator .
#        docker build --target fake-riskshield-prebuilt -t fake-riskshield .
#
# Stage order matters: the legacy builder (Docker without BuildKit/buildx) builds every stage up to the
# selected --target in file order, so the stages that need no base image come first. `--target prebuilt`
# therefore never touches the Rust image with either builder. There is no `# syntax=` line on purpose:
# BuildKit would pull the named frontend image, which an offline machine cannot do.

# The builder image for variant 1; override it to use a registry mirror.
ARG RUST_IMAGE=rust:1-bookworm
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/applicant-validator/applicant-validator
ARG LICENSES=MIT

# ---------------------------------------------------------------------------------------------------------
# Everything the service image promises, shared by the prebuilt and multi-stage variants.
FROM scratch AS runtime-base
ARG VERSION
ARG REVISION
ARG SOURCE
ARG LICENSES
LABEL org.opencontainers.image.title="applicant-validator" \
      org.opencontainers.image.description="Validates loan applicants against the RiskShield risk-scoring API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="${LICENSES}"
# No /etc/passwd in a scratch image: the user is numeric (65532 is the conventional "nonroot").
USER 65532:65532
EXPOSE 8080
STOPSIGNAL SIGTERM
# The binary probes itself (no curl in the image): `/app healthcheck` GETs /health with its own 3s deadline.
#   --start-period=10s      failures in the first 10s do not count, so a slow start is not an outage; the
#                           first success ends the start period early
#   --start-interval=100ms  within the start period, probe every 100ms, so the container is reported healthy
#                           within about half a second of starting instead of one full interval later (needs
#                           Docker Engine 25+; older engines reject the flag at build time: scripts/engine.sh)
#   --interval=30s          once started, one probe every 30s: each is a process exec, so not more often
#   --timeout=5s            above the probe's own 3s deadline, so a hung server shows as the probe's clear
#                           failure line rather than as a killed probe
#   --retries=3             three failures in a row (about 90s) before `unhealthy`: one slow answer is not
#                           an outage
HEALTHCHECK --start-period=10s --start-interval=100ms --interval=30s --timeout=5s --retries=3 \
    CMD ["/app", "healthcheck"]
ENTRYPOINT ["/app"]
CMD ["serve"]

# ---------------------------------------------------------------------------------------------------------
# Variant 2: the binary built on the host. scripts/build-image.sh puts it at dist/service/app with mode 0555
# (COPY keeps the mode; the legacy builder has no --chmod). The directory is copied rather than the file so
# that, with the legacy builder, the multi-stage default target (which walks through this stage) still
# builds when dist/ holds no binaries: the repository keeps the directories with an ignored .keep file.
FROM runtime-base AS prebuilt
COPY dist/service/ /

# The fake RiskShield (examples/fake_riskshield.rs) for the end-to-end check and the local compose stack.
FROM scratch AS fake-riskshield-base
ARG VERSION
ARG REVISION
ARG SOURCE
ARG LICENSES
LABEL org.opencontainers.image.title="fake-riskshield" \
      org.opencontainers.image.description="A fake RiskShield scoring API for development and tests only" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="${LICENSES}"
USER 65532:65532
EXPOSE 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["/fake-riskshield"]

FROM fake-riskshield-base AS fake-riskshield-prebuilt
COPY dist/fake/ /

# ---------------------------------------------------------------------------------------------------------
# Variant 1: build inside the official Rust image.
FROM ${RUST_IMAGE} AS builder
ARG TARGET=x86_64-unknown-linux-musl
# cargo-auditable embeds the dependency list in the binary (see scripts/build-image.sh); its version is pinned
# in scripts/tools.sh, repeated here.
ARG CARGO_AUDITABLE_VERSION=0.7.7
RUN rustup target add "${TARGET}" \
    && apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && cargo install --locked "cargo-auditable@${CARGO_AUDITABLE_VERSION}"
WORKDIR /build
# Dependencies get their own layer: build them against stub sources, so editing src/ does not recompile
# the dependency tree. The layer is rebuilt only when Cargo.toml, Cargo.lock or .cargo/config.toml change.
# testkit/ is the workspace's dev-only crate the fake RiskShield example is built on.
COPY Cargo.toml Cargo.lock ./
COPY testkit/Cargo.toml testkit/Cargo.toml
COPY .cargo/config.toml .cargo/config.toml
RUN mkdir -p src examples testkit/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs testkit/src/lib.rs \
    && echo 'fn main() {}' > examples/fake_riskshield.rs \
    && cargo build --locked --release --target "${TARGET}" --bin applicant-validator \
    && cargo build --locked --release --target "${TARGET}" --example fake_riskshield \
    && rm -rf src examples testkit/src
COPY src src
COPY examples examples
COPY testkit/src testkit/src
# COPY keeps the sources' timestamps, which can be older than the stub build: touch them so cargo rebuilds.
# The service and the example are built by separate commands: an example pulls in dev-dependencies, whose
# features (e.g. tokio's test-util) must not be unified into the shipped binary.
# A static binary has no interpreter (PT_INTERP): fail the build if it would need a loader the image lacks.
RUN find src examples testkit/src -type f -exec touch {} + \
    && cargo auditable build --locked --release --target "${TARGET}" --bin applicant-validator \
    && install -D -m 0555 "target/${TARGET}/release/applicant-validator" /out/app \
    && cargo build --locked --release --target "${TARGET}" --example fake_riskshield \
    && install -D -m 0555 "target/${TARGET}/release/examples/fake_riskshield" /out/fake-riskshield \
    && ! readelf -l /out/app | grep -q INTERP

FROM fake-riskshield-base AS fake-riskshield
COPY --from=builder /out/fake-riskshield /fake-riskshield

# Variant 1, the default target: the service image.
FROM runtime-base AS runtime
COPY --from=builder /out/app /app
