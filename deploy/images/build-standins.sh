#!/usr/bin/env bash
# Builds the stand-in images that replace the official ones where no registry can be reached
# (this machine, CI, air-gapped hosts). Two parts:
#   1. the Debian bases, from nothing: debootstrap, security updates, docker import (this script);
#   2. everything built on top of them (a distroless-like runtime, a Rust builder, PostgreSQL 13,
#      Redis 7, and for deploy/swarm a registry and HAProxy): targets of docker-bake.hcl here,
#      built with `docker buildx bake`, whose cache
#      decides what is rebuilt. This script stages the Rust toolchain for it, then checks what
#      changed. See README.md here.
#
# usage: build-standins.sh [--force] [bases|TARGET]...
#   With no names, builds the bases when missing or when their recipe changed, then every bake
#   target. TARGET is a target of docker-bake.hcl (runtime, rust, postgres, redis, ...). --force
#   rebuilds the bases and builds the targets without BuildKit's cache.
# Environment: DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR (default: from the host's apt sources),
#   STANDINS_CACHE (default /var/cache/userstack-standins: debootstrap's .debs, the staged
#   toolchain), STANDINS_REPO (default userstack-standin: where the images are tagged; e.g. a
#   test name to build beside the images in use), STANDINS_BASE_REPO (default STANDINS_REPO:
#   where the Debian bases are tagged and taken from).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
. "$here/../lib/common.sh"
# shellcheck source-path=SCRIPTDIR source=../lib/cli-plugins.sh
. "$here/../lib/cli-plugins.sh"

# Where the images are tagged and where the bases come from; docker-bake.hcl reads them too.
export STANDINS_REPO=${STANDINS_REPO:-userstack-standin}
export STANDINS_BASE_REPO=${STANDINS_BASE_REPO:-$STANDINS_REPO}
REPO=$STANDINS_REPO
BASE_REPO=$STANDINS_BASE_REPO
RECIPE_LABEL=org.userstack.standin.recipe
CACHE=${STANDINS_CACHE:-/var/cache/userstack-standins}
DEFAULT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

usage() { sed -n '2,20s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

force=0
bases=0
targets=()
for arg; do
    case $arg in
    --force) force=1 ;;
    -h | --help) usage; exit 0 ;;
    bases) bases=1 ;;
    -*) usage >&2; die "unknown option: $arg" ;;
    *) targets+=("$arg") ;;
    esac
done
# Nothing named: everything. Only bases named: only them.
((${#targets[@]} || bases)) || { bases=1; targets=(default); }

# ---------------------------------------------------------------------------------------------
# Cleanup: temporary trees, mounts inside them, background debootstraps.

TMP_DIRS=()
BG_PIDS=()
THROWAWAY_IMAGES=()
cleanup() {
    local rc=$? pid dir mnt img
    set +e # clean up all of it, whatever fails
    for pid in "${BG_PIDS[@]}"; do
        kill -- "-$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    for dir in "${TMP_DIRS[@]}"; do
        # debootstrap or our upgrade may have left /proc etc. mounted inside; never delete through them
        findmnt -rn -o TARGET | grep -F "$dir/" | sort -r | while read -r mnt; do
            umount -l "$mnt" || true
        done
        rm -rf --one-file-system "$dir"
    done
    for img in "${THROWAWAY_IMAGES[@]}"; do
        docker image rm -f "$img" >/dev/null 2>&1 || true
    done
    if ((rc != 0)); then
        printf 'build-standins: FAILED (exit %s) in step: %s\n' "$rc" "${USERSTACK_STEP:-?}" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT # so cleanup sees a failure
trap 'exit 143' TERM

# new_tmpdir NAME : a directory removed on exit, in NEW_TMP (not via $(...): the list must be ours).
new_tmpdir() {
    NEW_TMP=$(mktemp -d "${TMPDIR:-/tmp}/userstack-standin-$1.XXXXXX")
    TMP_DIRS+=("$NEW_TMP")
}

# Where Debian comes from: the host's own apt sources, so a local mirror or proxy is reused.

sources_uri() { # sources_uri security|main
    local f=/etc/apt/sources.list.d/debian.sources
    [[ -r $f ]] || return 1
    awk -v want="$1" 'BEGIN { RS = "" }
        { uri = ""; sec = 0
          n = split($0, line, "\n")
          for (i = 1; i <= n; i++) {
              if (line[i] ~ /^URIs:/) { split(line[i], w, /[ \t]+/); uri = w[2] }
              if (line[i] ~ /^Suites:.*-security/) sec = 1
          }
          if (uri != "" && ((want == "security") == sec)) { print uri; exit } }' "$f"
}
MIRROR=${DEBIAN_MIRROR:-$(sources_uri main || echo http://deb.debian.org/debian)}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-$(sources_uri security || echo http://deb.debian.org/debian-security)}

# ---------------------------------------------------------------------------------------------
# 1. Bases: debootstrap --variant=minbase, brought up to date with security fixes, docker import.
# BuildKit cannot cache what does not start FROM an image, so a base carries a hash of its recipe
# (the two functions below, the suite, the mirrors) and is rebuilt only when that changes.

declare -A BASE_DIR=() BASE_PID=()

base_recipe() { # base_recipe SUITE
    { declare -f debootstrap_base finish_base; echo "$1 $MIRROR $SECURITY_MIRROR"; } | sha256sum | cut -c1-64
}

# debootstrap_base SUITE DIR : runs in the background, output to DIR/debootstrap.log.
debootstrap_base() {
    mkdir -p "$CACHE/debootstrap-$1"
    run debootstrap --variant=minbase --cache-dir="$CACHE/debootstrap-$1" "$1" "$2/root" "$MIRROR"
}

# finish_base SUITE DIR HASH : security updates, trimming, import.
finish_base() {
    local suite=$1 root=$2/root hash=$3 name="$BASE_REPO/debian:$1" version
    # debootstrap installs the release as first published; the official images carry the
    # -updates and -security fixes, and images built FROM this base should get them too.
    printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
        "$MIRROR" "$suite" "$MIRROR" "$suite" "$SECURITY_MIRROR" "$suite" >"$root/etc/apt/sources.list"
    # Like the official images: no service may start during `apt-get install` in a build; dpkg
    # need not fsync every file of a layer (much faster builds); apt needs no translations.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    echo force-unsafe-io >"$root/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
    echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
    mount -t proc proc "$root/proc"
    run chroot "$root" apt-get -qq update
    run env DEBIAN_FRONTEND=noninteractive chroot "$root" \
        apt-get -y -q -o Dpkg::Use-Pty=0 -o APT::Sandbox::User=root upgrade
    umount "$root/proc"
    # Docker supplies /dev, resolv.conf and hostname at run time; the host's must not ship.
    rm -rf --one-file-system "${root:?}"/dev/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
        "$root"/var/cache/apt/archives/*.deb "$root"/var/log/apt/* "$root"/var/log/dpkg.log \
        "$root"/var/log/bootstrap.log "$root"/var/log/alternatives.log
    : >"$root/etc/resolv.conf"
    echo localhost >"$root/etc/hostname"
    version=$(cat "$root/etc/debian_version")
    CHANGES=(--change "ENV PATH=$DEFAULT_PATH" --change 'CMD ["bash"]')
    local label
    for label in "org.opencontainers.image.title=$name" \
        "org.opencontainers.image.description=Stand-in for debian:$suite, built from Debian packages; NOT the official image. debootstrap --variant=minbase $suite from $MIRROR, with $suite-updates and -security applied." \
        "org.opencontainers.image.version=$version" \
        "org.opencontainers.image.source=userstack deploy/images/build-standins.sh" \
        "org.userstack.standin.for=debian:$suite" "$RECIPE_LABEL=$hash"; do
        CHANGES+=(--change "LABEL ${label%%=*}=\"${label#*=}\"")
    done
    run_sh "tar -C $(printf '%q' "$root") --numeric-owner -c . | docker import $(printf '%q ' "${CHANGES[@]}")- $name"
}

# bases_todo : the suites whose base is missing or was made by another recipe (all with --force),
# in BASES_TODO.
BASES_TODO=()
declare -A RECIPE=()
bases_todo() {
    local suite have
    BASES_TODO=()
    for suite in bookworm bullseye; do
        RECIPE[$suite]=$(base_recipe "$suite")
        have=$(docker image inspect -f "{{index .Config.Labels \"$RECIPE_LABEL\"}}" "$BASE_REPO/debian:$suite" 2>/dev/null || true)
        if ((force)) || [[ $have != "${RECIPE[$suite]}" ]]; then
            BASES_TODO+=("$suite")
        else
            log "$BASE_REPO/debian:$suite is up to date (recipe ${have:0:12}); --force rebuilds it"
        fi
    done
}

build_bases() {
    step "1/2 Base images $BASE_REPO/debian:bookworm and :bullseye (debootstrap + docker import)"
    local suite dir todo=("${BASES_TODO[@]}") start=$SECONDS
    ((${#todo[@]})) || return 0
    # The two downloads are network-bound and independent: run them side by side.
    for suite in "${todo[@]}"; do
        new_tmpdir "$suite"
        dir=$NEW_TMP
        BASE_DIR[$suite]=$dir
        log "debootstrap $suite in the background (log: $dir/debootstrap.log)"
        set -m # own process group, so cleanup can stop debootstrap and all its children
        (debootstrap_base "$suite" "$dir") >"$dir/debootstrap.log" 2>&1 &
        BASE_PID[$suite]=$!
        BG_PIDS+=("$!")
        set +m
    done
    for suite in "${todo[@]}"; do
        dir=${BASE_DIR[$suite]}
        if ! wait "${BASE_PID[$suite]}"; then
            tail -n 30 "$dir/debootstrap.log" >&2
            die "debootstrap $suite failed (log above)"
        fi
        tail -n 2 "$dir/debootstrap.log" >&2
        log "debootstrap $suite done after $((SECONDS - start))s"
        finish_base "$suite" "$dir" "${RECIPE[$suite]}"
        rm -rf --one-file-system "$dir"
    done
    BG_PIDS=()
}

# ---------------------------------------------------------------------------------------------
# 2. The images on top: docker-bake.hcl. The Rust builder's context is this machine's toolchain,
# laid out like the official rust image (RUSTUP_HOME=/usr/local/rustup, CARGO_HOME=/usr/local/cargo)
# in a fixed directory, so that an unchanged toolchain is an unchanged context for BuildKit.

stage_toolchain() { # stage_toolchain CTX SYSROOT TOOLCHAIN-NAME
    local ctx=$1 sysroot=$2 tc=$3 dest t
    rm -rf --one-file-system "$ctx"
    dest=$ctx/rootfs/usr/local/rustup/toolchains/$tc
    mkdir -p "$dest/bin" "$ctx/rootfs/usr/local/cargo/bin"
    # Hard links: staging 600 MB costs nothing when the context is on the toolchain's filesystem.
    for t in cargo rustc rustdoc; do
        cp -al "$sysroot/bin/$t" "$dest/bin/" 2>/dev/null || cp -a "$sysroot/bin/$t" "$dest/bin/"
        ln -s "../../rustup/toolchains/$tc/bin/$t" "$ctx/rootfs/usr/local/cargo/bin/$t"
    done
    cp -al "$sysroot/lib" "$dest/" 2>/dev/null || cp -a "$sysroot/lib" "$dest/"
    # Only what compiling needs: no docs, sources, analyzer; manifests of uninstalled components
    # would make rustup believe they are there.
    rm -rf "$dest/lib/rustlib/src" "$dest/lib/rustlib/"manifest-{rust-docs,rust-analyzer,clippy,rustfmt,rust-src,llvm-tools}*
    grep -E '^(rustc|cargo|rust-std)-' "$sysroot/lib/rustlib/components" >"$dest/lib/rustlib/components.new"
    rm -f "$dest/lib/rustlib/components" # a hard link: replace, never edit the host's file
    mv "$dest/lib/rustlib/components.new" "$dest/lib/rustlib/components"
    cp "$here/rust/Dockerfile" "$ctx/Dockerfile"
}

stage_rust() {
    local sysroot version triple
    command -v rustc >/dev/null || die "rustc is missing on this host (the builder image copies its toolchain)"
    sysroot=$(rustc --print sysroot)
    version=$(rustc --version | awk '{print $2}')
    triple=$(rustc -vV | awk '/^host:/ {print $2}')
    [[ $version == 1.95.* ]] || die "host rustc is $version, but the image is tagged 1.95"
    export RUST_CONTEXT=$CACHE/rust-context RUST_VERSION=$version
    log "staging the Rust $version toolchain ($sysroot) in $RUST_CONTEXT"
    mkdir -p "$CACHE"
    stage_toolchain "$RUST_CONTEXT" "$sysroot" "$version-$triple"
}

# verify_runtime NAME WORK : size, no shell, and a dynamically linked Rust binary from this host runs.
verify_runtime() {
    local name=$1 work=$2 size hello=userstack-standin-check/hello:$$
    size=$(docker image inspect -f '{{.Size}}' "$name")
    log "$name is $((size / 1000000)) MB"
    check "runtime image is 10-40 MB (distroless/cc is ~23 MB): $((size / 1000000)) MB" \
        test "$size" -ge 10000000 -a "$size" -le 40000000
    # `docker run` of a missing file fails with "no such file or directory" (not just any error)
    check "runtime image has no shell" bash -c \
        "docker run --rm --entrypoint /bin/sh $name -c true 2>&1 | grep -qi 'no such file or directory'"
    check "runtime image has no package manager" bash -c \
        "docker run --rm --entrypoint /usr/bin/dpkg $name --version 2>&1 | grep -qi 'no such file or directory'"
    check "libssl3 resolves all its libraries in the runtime image" bash -c \
        "out=\$(docker run --rm --entrypoint /lib64/ld-linux-x86-64.so.2 $name --list /usr/lib/x86_64-linux-gnu/libssl.so.3) && echo \"\$out\" && ! grep -q 'not found' <<<\"\$out\""
    command -v cargo >/dev/null || die "cargo is missing on this host (the runtime check builds a Rust hello-world)"
    run cargo new --quiet --vcs none --name standin-hello "$work/hello"
    run cargo build --quiet --release --offline --manifest-path "$work/hello/Cargo.toml" --target-dir "$work/target"
    check "the hello-world is dynamically linked against glibc" bash -c \
        "ldd $(printf '%q' "$work/target/release/standin-hello") | grep libc.so.6"
    mkdir -p "$work/ctx"
    cp "$work/target/release/standin-hello" "$work/ctx/"
    printf 'FROM %s\nCOPY standin-hello /usr/local/bin/standin-hello\nENTRYPOINT ["/usr/local/bin/standin-hello"]\n' \
        "$name" >"$work/ctx/Dockerfile"
    THROWAWAY_IMAGES+=("$hello")
    run docker build -q -t "$hello" "$work/ctx"
    check "a Rust binary built on this host runs in $name as uid 65532" bash -c \
        "expected='Hello, world!'; got=\$(docker run --rm $hello) && [[ \$got == \"\$expected\" ]] && [[ \$(docker image inspect -f '{{.Config.User}}' $hello) == 65532:65532 ]]"
    run docker image rm "$hello"
    THROWAWAY_IMAGES=()
}

check_rust() {
    local name=$1
    check "cargo --version in $name" docker run --rm "$name" cargo --version
    check "rustc --version in $name is ${RUST_VERSION:-1.95}" bash -c "docker run --rm $name rustc --version | grep -F 'rustc ${RUST_VERSION:-1.95}'"
    check "$name compiles and runs a hello-world" docker run --rm "$name" bash -c \
        'set -e; cd /tmp && cargo new -q --vcs none hi && cd hi && cargo build -q --offline && ./target/debug/hi'
}

# check_image NAME : what the image must do, by what it stands in for (its label).
check_image() {
    local name=$1 for
    for=$(docker image inspect -f '{{index .Config.Labels "org.userstack.standin.for"}}' "$name")
    case $for in
    gcr.io/distroless/cc-debian12*) new_tmpdir runtime-check; verify_runtime "$name" "$NEW_TMP" ;;
    rust:*) check_rust "$name" ;;
    postgres:*) check "postgres --version in $name is 13.x" bash -c "docker run --rm $name postgres --version | grep -E ' 13\\.'" ;;
    redis:*) check "redis-server --version in $name is 7.x" bash -c "docker run --rm $name redis-server --version | grep -F 'v=7.'" ;;
    registry:*) check "registry --version in $name is 2.8.x" bash -c "docker run --rm $name --version | grep -E ' (v)?2\\.8\\.'" ;;
    haproxy:*) check "haproxy -v in $name is 2.6.x, run as uid 99" bash -c \
        "docker run --rm $name haproxy -v | grep -F 'version 2.6.' && [[ \$(docker run --rm --entrypoint id $name -u) == 99 ]]" ;;
    *) log "no checks here for a stand-in for $for" ;;
    esac
}

# The stand-ins tagged under REPO, with their image ids.
standins() {
    docker images --filter label=org.userstack.standin.for --format '{{.Repository}}:{{.Tag}} {{.ID}}' |
        grep "^$REPO/" | grep -v "^$BASE_REPO/debian:" | LC_ALL=C sort || true
}

# bake TARGET... : build them, then check each image that is new or changed.
bake() {
    step "2/2 Images on the bases: docker buildx bake ${*} (deploy/images/docker-bake.hcl)"
    local before name id changed=0 no_cache=()
    if [[ " $* " == *" rust "* || " $* " == *" default "* ]]; then stage_rust; fi
    before=$(standins)
    ((force)) && no_cache=(--no-cache)
    (cd "$here" && run docker buildx bake --progress=plain "${no_cache[@]}" "$@")
    while read -r name id; do
        if grep -qxF "$name $id" <<<"$before"; then
            log "$name unchanged (BuildKit reused every layer)"
        else
            log "$name was (re)built: checking it"
            check_image "$name"
            changed=$((changed + 1))
        fi
    done < <(standins)
    ((CHECKS_FAILED == 0)) || die "the images built failed their checks (above)"
    log "$changed image(s) built or changed"
}

# ---------------------------------------------------------------------------------------------

step "Preflight"
docker info >/dev/null 2>&1 || die "no Docker engine answers (start dockerd; see /work/shared/docker-here.md)"
log "Debian mirror $MIRROR, security $SECURITY_MIRROR; bases: $bases; targets: ${targets[*]:-none}; force=$force"
# The targets need the bases: build them when missing even if not named.
if ((bases)) || ! docker image inspect "$BASE_REPO/debian:bookworm" "$BASE_REPO/debian:bullseye" >/dev/null 2>&1; then
    bases_todo
fi
# Everything this run will need from the host, said at once, before any work.
missing=()
if ((${#BASES_TODO[@]})) && ! command -v debootstrap >/dev/null; then
    missing+=("debootstrap (the Debian bases: apt-get install debootstrap)")
fi
if [[ " ${targets[*]} " == *" "@(rust|runtime|default)" "* ]] && ! command -v cargo >/dev/null; then
    missing+=("a Rust 1.95 toolchain (the Rust builder copies it, the runtime check builds with it: https://rustup.rs)")
fi
((${#missing[@]} == 0)) || die "this host lacks what the stand-ins are made from: $(printf '\n  - %s' "${missing[@]}")"
if ((${#targets[@]})); then ensure_cli_plugins buildx; fi

if ((${#BASES_TODO[@]})); then build_bases; fi
if ((${#targets[@]})); then bake "${targets[@]}"; fi

step "Summary"
run docker images "$REPO/*"
log "total: ${SECONDS}s"
