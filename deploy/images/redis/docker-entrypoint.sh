#!/usr/bin/env bash
# Entrypoint of the Redis stand-in (userstack-standin/redis:7). Behaves like the official redis
# image's: options alone mean redis-server, the server drops root for user redis (owning /data
# first), data files are private, and protected mode is off unless asked for.
set -euo pipefail

# `docker run IMAGE --appendonly yes` or `docker run IMAGE /etc/redis.conf`
if [[ ${1:-} == -* || ${1:-} == *.conf ]]; then
    set -- redis-server "$@"
fi

if [[ ${1:-} == redis-server && $(id -u) == 0 ]]; then
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [[ ${1:-} == redis-server ]]; then
    # The official image compiles Redis with protected mode off by default (Docker's port
    # publishing and networks are the access control). Debian's build keeps it on, so turn it
    # off on the command line, first, where a later --protected-mode from the user still wins.
    # A config file must come first and is the user's own say, so leave that case alone.
    case ${2:-} in
    --version | --help | --test-memory | --check-system) ;;
    '' | --*) set -- "$1" --protected-mode no "${@:2}" ;;
    esac
    # Keep dump.rdb / appendonly files private, as the official image does.
    [[ $(umask) != 0022 ]] || umask 0077
fi

exec "$@"
