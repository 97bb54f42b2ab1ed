# mqtt-whisk-provider: one static (musl) binary on distroless: ~12 MB, no shell.
#
#   docker build -t registry.example.com/fog/mqtt-whisk-provider:0.1.0 .
#
# .ci/packaging.sh builds the same binary (same target, same flags) outside Docker,
# checks that it is static, lints this file with hadolint and validates the manifests.

# ---- builder ---------------------------------------------------------------------
# The toolchain CI uses (rustc 1.95.0); bookworm, like the distroless runtime below.
FROM rust:1.95.0-slim-bookworm AS builder

# musl-gcc compiles ring's C and assembly for the musl target (rustls' crypto provider).
# The version is pinned to bookworm's (the base image is pinned to bookworm too).
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl

WORKDIR /src
ENV CARGO_TERM_COLOR=never

# Dependency layer: build every dependency against stub sources, so that a change in
# src/ only recompiles the crate itself. benches/throughput.rs is named by Cargo.toml
# ([[bench]]), so it needs a stub too; tests/ and benches/ are never built here.
# test-support/ (a dev-dependency of the tests and the bench) is not built either, but
# Cargo resolves every dependency of the workspace, so it must be there.
COPY Cargo.toml Cargo.lock ./
COPY test-support ./test-support
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/throughput.rs \
    && cargo build --release --locked --target x86_64-unknown-linux-musl \
    && rm -rf src

# The real sources. touch: the stubs above are newer than the copied files, and cargo
# decides what to rebuild by modification time.
COPY src ./src
RUN find src -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --target x86_64-unknown-linux-musl \
    && cp target/x86_64-unknown-linux-musl/release/mqtt-whisk-provider /mqtt-whisk-provider

# ---- runtime -----------------------------------------------------------------------
# distroless/static: CA certificates, /etc/passwd with nonroot (65532), tzdata; no shell,
# no package manager. (The binary also carries the Mozilla roots and the IANA zones.)
FROM gcr.io/distroless/static-debian12:nonroot

COPY --from=builder /mqtt-whisk-provider /usr/local/bin/mqtt-whisk-provider

# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
# /healthz, /readyz and /metrics (HTTP_PORT).
EXPOSE 3000
ENTRYPOINT ["/usr/local/bin/mqtt-whisk-provider"]
