#!/usr/bin/env bash
# Installs, on a fresh Debian bookworm machine (as root), everything the tests, the deploy paths,
# the report and the benchmark need. Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

packages=(
    # the Rust integration tests start their own servers from these
    postgresql redis-server
    # deploy scripts and their checks
    shellcheck jq curl iproute2 debootstrap openssh-server openssh-client
    # the multi-host tests (tests/e2e/hosts.sh) and the swarm's registry CA (deploy/swarm)
    iptables openssl python3 apache2-utils
    # the report
    pandoc weasyprint graphviz poppler-utils fonts-dejavu-core
    # the benchmark: its load generator, nginx (the static-file ceiling; pgbench comes with
    # postgresql), and the seed's Flask app as a baseline (Debian's packages rather than pip:
    # bookworm's python3 is externally managed, PEP 668)
    wrk nginx-light python3-flask python3-psycopg2 python3-redis gunicorn
    # the fuzz stage's schemathesis runs in a venv of its own
    python3 python3-venv
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

# schemathesis (PyPI) for the fuzz stage, pinned, in a venv so the system's Python stays as it is.
schemathesis_version=4.32.5
venv=/opt/userstack-tools/venv
if [[ "$("$venv/bin/st" --version 2>/dev/null)" != *"$schemathesis_version"* ]]; then
    echo "==> installing schemathesis $schemathesis_version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version"
fi
"$venv/bin/st" --version

# The nginx package may start a server on port 80 where an init system runs; the benchmark starts
# its own on a free port.
if [[ -f /run/nginx.pid ]]; then nginx -s quit 2>/dev/null || true; fi

# Compose v2 and buildx are not in bookworm: the same code the deploy scripts use installs them
# from Debian trixie's packages when missing (as root: into /usr/local/lib/docker/cli-plugins).
# shellcheck source-path=SCRIPTDIR source=../deploy/lib/common.sh
source deploy/lib/common.sh
# shellcheck source-path=SCRIPTDIR source=../deploy/lib/cli-plugins.sh
source deploy/lib/cli-plugins.sh
ensure_cli_plugins buildx compose
docker compose version
docker buildx version
