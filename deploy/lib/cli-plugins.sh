# shellcheck shell=bash
# The Docker CLI plugins a deploy path needs, installed when missing. Source it after common.sh.
#
#   ensure_cli_plugins buildx compose
#
# A plugin that `docker PLUGIN version` already runs is left alone, wherever it is. A missing one
# is taken from Debian's package (docker-buildx, docker-compose from trixie: static Go programs
# that run on bookworm, which has no compose v2 and no buildx plugin) and only its one executable
# is copied into the CLI's plugin directory:
#   - as root: /usr/local/lib/docker/cli-plugins, one of the directories the CLI searches for every
#     user; /usr/local belongs to the administrator and no package manager writes there, so an
#     apt upgrade neither overwrites nor removes it.
#   - otherwise: ${DOCKER_CONFIG:-~/.docker}/cli-plugins, the one searched directory a user can
#     write to; it serves that user only.
# It says what it installs and where, and installs nothing else: the .debs are fetched with a
# private apt state in a temporary directory (the system's sources, lists and packages are not
# touched) and unpacked there with dpkg -x, not installed.
#
# Environment: DOCKER_PLUGINS_SUITE (default trixie), DEBIAN_MIRROR (default
# http://deb.debian.org/debian).

# cli_plugin_dir : where a missing plugin goes for this user (see above).
cli_plugin_dir() {
    if ((EUID == 0)); then
        echo /usr/local/lib/docker/cli-plugins
    else
        echo "${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
    fi
}

# ensure_cli_plugins PLUGIN... : install each of buildx, compose that does not run (see above).
ensure_cli_plugins() {
    local plugin missing=() packages=() dir suite mirror
    for plugin; do
        case $plugin in
            buildx | compose) ;;
            *) die "ensure_cli_plugins: no source known for the plugin '$plugin'" ;;
        esac
        docker "$plugin" version >/dev/null 2>&1 || missing+=("$plugin")
    done
    ((${#missing[@]})) || return 0
    for plugin in "${missing[@]}"; do packages+=("docker-$plugin"); done

    dir=$(cli_plugin_dir)
    suite=${DOCKER_PLUGINS_SUITE:-trixie}
    mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
    step "Docker CLI plugins: installing ${missing[*]} into $dir"
    if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
        die "docker ${missing[*]} missing, and this is not a Debian system to take them from: install the Docker CLI plugin(s) ${packages[*]} into $dir (https://docs.docker.com/engine/install/)"
    fi
    log "from Debian $suite's packages ${packages[*]} ($mirror); only the plugin executables are kept"

    # A subshell, so that its EXIT trap removes the temporary apt state however it ends.
    (
        state=$(mktemp -d "${TMPDIR:-/tmp}/userstack-cli-plugins.XXXXXX")
        trap 'rm -rf "$state"' EXIT
        mkdir -p "$state/lists/partial" "$state/archives/partial" "$state/cache" "$state/root"
        echo "deb $mirror $suite main" >"$state/sources.list"
        apt_opts=(-q -o "Dir::Etc::SourceList=$state/sources.list" -o "Dir::Etc::SourceParts=-"
            -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache"
            -o "Dir::Cache::Archives=$state/archives" -o "APT::Sandbox::User=$(id -un)")
        run apt-get "${apt_opts[@]}" update
        (cd "$state" && run apt-get "${apt_opts[@]}" download "${packages[@]}")
        for deb in "$state"/*.deb; do dpkg -x "$deb" "$state/root"; done
        run mkdir -p "$dir"
        for plugin in "${missing[@]}"; do
            run install -m 0755 "$state/root/usr/libexec/docker/cli-plugins/docker-$plugin" "$dir/docker-$plugin"
            run docker "$plugin" version
        done
    )
}
