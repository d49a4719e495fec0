# The userstack server image: the `userstack` binary alone on a distroless runtime.
#
#   DOCKER_BUILDKIT=1 docker build -t userstack:latest .
#
# BuildKit is required (cache and secret mounts); Docker 23+ uses it by default.
# Behind a TLS-inspecting proxy cargo cannot verify crates.io; hand it the proxy's CA bundle for
# this build only (a secret is never stored in a layer or in the build cache):
#
#   docker build --secret id=extra_ca,src=/etc/ssl/certs/ca-certificates.crt -t userstack:latest .
#
# Both base images are build arguments so that machines without registry access can substitute
# locally built stand-ins (see deploy/images/); the defaults are the official images.
# No `# syntax=` line on purpose: it would make BuildKit pull a frontend image first.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Only what cargo needs: any other change in the repository leaves this stage cached.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
# The registry and target dirs are cache mounts, so a rebuild after a code change recompiles only
# the workspace crates. The binary is copied out because a cache mount is not part of the layer.
# The official rust image sets CARGO_HOME=/usr/local/cargo.
RUN --mount=type=cache,id=userstack-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=userstack-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=userstack-target,target=/src/target,sharing=locked \
    --mount=type=secret,id=extra_ca,target=/run/secrets/extra_ca \
    set -eu; \
    if [ -s /run/secrets/extra_ca ]; then export CARGO_HTTP_CAINFO=/run/secrets/extra_ca; fi; \
    # The target cache is shared by every build on this engine, other checkouts included, and
    # cargo trusts mtimes: make the copied sources newer than anything in it, so the workspace
    # crates are always built from them (dependencies stay cached).
    find crates -type f -exec touch {} +; \
    cargo build --release --locked -p userstack-server; \
    install -D -m 0755 target/release/userstack /out/userstack

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/userstack /usr/local/bin/userstack
# A fixed numeric uid (distroless "nonroot"): Kubernetes' runAsNonRoot can verify it, and files
# handed to the container (e.g. a password file) can be owned by it.
USER 65532:65532
ENV HOST=0.0.0.0 PORT=5000
EXPOSE 5000
# Exec form: the runtime image has no shell and no curl; the binary probes its own /healthz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/userstack", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/userstack"]
CMD ["serve"]

# Last, so that a new revision changes no layer above.
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/userstack/userstack
ARG CREATED=
LABEL org.opencontainers.image.title="userstack" \
      org.opencontainers.image.description="Users REST API (PostgreSQL + Redis), a Rust reimplementation of a small Flask app" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
