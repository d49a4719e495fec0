#!/usr/bin/env bash
# Installs, on a fresh Debian bookworm machine (as root), everything the tests, the deploy paths,
# the report and the benchmark need. Idempotent: installs only what is missing.
set -euo pipefail

packages=(
    # the Rust integration tests start their own servers from these
    postgresql redis-server
    # deploy scripts and their checks
    shellcheck jq curl iproute2 debootstrap openssh-server openssh-client
    # the report
    pandoc weasyprint graphviz poppler-utils fonts-dejavu-core
    # the benchmark's load generator
    wrk
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "==> apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian postgresql package starts a cluster on 5432; the tests start their own, so stop it.
if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
    pg_ctlcluster --force "$(pg_lsclusters -h | awk 'NR==1{print $1}')" main stop 2>/dev/null || true
fi

# Compose v2 and buildx are not in bookworm; trixie's packages are static Go binaries that run
# here as CLI plugins. Fetched with a private apt state so the system's sources stay untouched.
plugins=/usr/local/lib/docker/cli-plugins
if ! docker compose version >/dev/null 2>&1 || ! docker buildx version >/dev/null 2>&1; then
    echo "==> installing docker compose v2 and buildx from Debian trixie"
    state=$(mktemp -d)
    chmod 0755 "$state" # apt downloads as _apt
    mkdir -p "$state/lists/partial" "$state/archives/partial" "$plugins"
    echo "deb http://deb.debian.org/debian trixie main" >"$state/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$state/sources.list" -o "Dir::Etc::SourceParts=-"
        -o "Dir::State::Lists=$state/lists" -o "Dir::Cache::Archives=$state/archives")
    apt-get "${apt_opts[@]}" update -qq
    (cd "$state" && apt-get "${apt_opts[@]}" download docker-compose docker-buildx >/dev/null)
    for deb in "$state"/*.deb; do dpkg -x "$deb" "$state/root"; done
    install -m 0755 "$state"/root/usr/libexec/docker/cli-plugins/* "$plugins/"
    rm -rf "$state"
fi
docker compose version
docker buildx version
