# The stand-in images built on top of the Debian bases (which build-standins.sh makes with
# debootstrap, a script because they start from nothing). BuildKit's cache decides what is
# rebuilt: an unchanged Dockerfile, context and base reuse every layer.
#
#   cd deploy/images && docker buildx bake                 # every image below
#   cd deploy/images && docker buildx bake postgres redis  # just these
#   STANDINS_REPO=my-test docker buildx bake --print       # what would be built, under other tags
#
# build-standins.sh runs this after the bases (and stages the Rust toolchain for "rust").

# Where the images go, and where their Debian bases come from.
variable "STANDINS_REPO" {
  default = "userstack-standin"
}
variable "STANDINS_BASE_REPO" {
  default = "userstack-standin"
}
# The Rust builder's context: rust/Dockerfile beside this machine's toolchain, staged there by
# build-standins.sh (no registry, no rustup download).
variable "RUST_CONTEXT" {
  default = "/var/cache/userstack-standins/rust-context"
}
variable "RUST_VERSION" {
  default = "1.95.0"
}

group "default" {
  targets = ["runtime", "rust", "postgres", "redis", "registry", "haproxy"]
}

# Labels every stand-in carries: what it stands in for, so nobody mistakes it for the original.
function "standin_labels" {
  params = [name, stands_in_for, version, description]
  result = {
    "org.opencontainers.image.title"       = name
    "org.opencontainers.image.description" = "Stand-in for ${stands_in_for}, built from Debian packages; NOT the official image. ${description}"
    "org.opencontainers.image.version"     = version
    "org.opencontainers.image.source"      = "userstack deploy/images/docker-bake.hcl (Debian packages from the Debian archive)"
    "org.userstack.standin.for"            = stands_in_for
  }
}

# The Debian base each image starts FROM.
target "_on_bookworm" {
  args = { BASE_IMAGE = "${STANDINS_BASE_REPO}/debian:bookworm" }
}
target "_on_bullseye" {
  args = { BASE_IMAGE = "${STANDINS_BASE_REPO}/debian:bullseye" }
}

target "runtime" {
  context = "runtime"
  inherits = ["_on_bookworm"]
  tags    = ["${STANDINS_REPO}/distroless-cc:debian12"]
  labels = standin_labels("${STANDINS_REPO}/distroless-cc:debian12", "gcr.io/distroless/cc-debian12:nonroot", "12",
  "Files of libc6 libssl3 ca-certificates tzdata base-files netbase libgcc-s1 libgomp1 libstdc++6 (Debian bookworm), nonroot 65532; no shell, no package manager.")
}

target "rust" {
  context = RUST_CONTEXT
  inherits = ["_on_bookworm"]
  args    = { RUST_VERSION = RUST_VERSION }
  tags    = ["${STANDINS_REPO}/rust:1.95-slim-bookworm"]
  labels = standin_labels("${STANDINS_REPO}/rust:1.95-slim-bookworm", "rust:1.95-slim-bookworm", RUST_VERSION,
  "Debian bookworm gcc, libc6-dev, ca-certificates + Rust ${RUST_VERSION} (cargo, rustc, rustdoc, rust-std; no rustup).")
}

target "postgres" {
  context = "postgres"
  inherits = ["_on_bullseye"]
  tags    = ["${STANDINS_REPO}/postgres:13"]
  labels = standin_labels("${STANDINS_REPO}/postgres:13", "postgres:13", "13",
  "Debian bullseye postgresql-13 with an entrypoint honouring the official image's POSTGRES_* contract.")
}

target "redis" {
  context = "redis"
  inherits = ["_on_bookworm"]
  tags    = ["${STANDINS_REPO}/redis:7"]
  labels = standin_labels("${STANDINS_REPO}/redis:7", "redis:7", "7",
  "Debian bookworm redis-server 7.0, protected mode off, /data, user redis.")
}

# For deploy/swarm: the registry the swarm's nodes pull from, and the edge load balancer.
target "registry" {
  context = "registry"
  inherits = ["_on_bookworm"]
  tags    = ["${STANDINS_REPO}/registry:2"]
  labels = standin_labels("${STANDINS_REPO}/registry:2", "registry:2", "2.8",
  "Debian bookworm docker-registry 2.8 (CNCF distribution), the official image's config.yml.")
}

target "haproxy" {
  context = "haproxy"
  inherits = ["_on_bookworm"]
  tags    = ["${STANDINS_REPO}/haproxy:2.6"]
  labels = standin_labels("${STANDINS_REPO}/haproxy:2.6", "haproxy:2.6", "2.6",
  "Debian bookworm haproxy 2.6, config in /usr/local/etc/haproxy, user haproxy (uid 99), SIGUSR1.")
}
