#!/usr/bin/env bash
# Builds the stand-in images that replace the official ones where no registry can be reached
# (this machine, CI, air-gapped hosts): Debian bases from debootstrap, then PostgreSQL 13, Redis 7,
# a distroless-like runtime and a Rust builder, all from Debian packages. See README.md here.
#
# usage: build-standins.sh [--force] [bases|runtime|rust|postgres|redis]...
#   With no names, builds everything. An image is skipped when it exists and its label
#   org.userstack.standin.inputs matches the hash of its build inputs, unless --force.
#   Missing bases are built even when not named (the others are built FROM them).
# Environment: DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR (default: from the host's apt sources),
#   STANDINS_CACHE (default /var/cache/userstack-standins: debootstrap's .deb cache).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
. "$here/../lib/common.sh"

REPO=userstack-standin
HASH_LABEL=org.userstack.standin.inputs
SOURCE="userstack deploy/images/build-standins.sh (Debian packages from the Debian archive)"
CACHE=${STANDINS_CACHE:-/var/cache/userstack-standins}
DEFAULT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export DOCKER_BUILDKIT=1

usage() { sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

force=0
want=()
for arg; do
    case $arg in
    --force) force=1 ;;
    -h | --help) usage; exit 0 ;;
    bases | runtime | rust | postgres | redis) want+=("$arg") ;;
    *) usage >&2; die "unknown argument: $arg" ;;
    esac
done
# Rust and the runtime first: the app image (root Dockerfile) needs them, the others can follow.
((${#want[@]})) || want=(bases runtime rust postgres redis)
wanted() { [[ " ${want[*]} " == *" $1 "* ]]; }

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

# ---------------------------------------------------------------------------------------------
# Input hashes, labels, timing.

# The code that builds an image is part of its inputs: hashing the function bodies (not the whole
# script) means editing one recipe rebuilds only that image and whatever is built FROM it.
COMMON_RECIPE=(inputs_hash set_labels label_changes label_args)

# inputs_hash FUNCTION [FILE-OR-DIR|STRING]... : sha256 over the recipe and everything it reads.
inputs_hash() {
    local fn=$1 x f
    shift
    {
        declare -f "$fn" "${COMMON_RECIPE[@]}"
        for x; do
            if [[ -d $x ]]; then
                while IFS= read -r f; do
                    printf '\nfile %s\n' "${f#"$here"/}"
                    cat "$f"
                done < <(find "$x" -type f | LC_ALL=C sort)
            else
                printf '\nvalue %s\n' "$x"
            fi
        done
    } | sha256sum | cut -d' ' -f1
}

declare -A PREVIOUS=()
# up_to_date NAME HASH : the image exists and was built from these inputs (and no --force).
# Otherwise remembers the image it is about to replace, for retire.
up_to_date() {
    local have
    PREVIOUS[$1]=$(docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true)
    ((force)) && return 1
    have=$(docker image inspect -f "{{index .Config.Labels \"$HASH_LABEL\"}}" "$1" 2>/dev/null) || return 1
    [[ "$have" == "$2" ]] || return 1
    log "$1 is up to date (inputs ${2:0:12}); skipping (--force rebuilds)"
}

# retire NAME : remove the image NAME pointed to before this run, now untagged, unless something
# still uses it (a container, an image built FROM it): a rebuild must not leak 1 GB each time.
retire() {
    local old=${PREVIOUS[$1]:-} new
    new=$(docker image inspect -f '{{.Id}}' "$1")
    if [[ -n $old && $old != "$new" ]] && docker image rm "$old" >/dev/null 2>&1; then
        log "removed the image $1 replaced (${old:7:12})"
    fi
    return 0
}

# image_id NAME : the id of a base, as an input of the images built FROM it.
image_id() {
    docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || die "image $1 is missing (build it first)"
}

# set_labels NAME STANDS-IN-FOR DESCRIPTION VERSION HASH : fill LABELS (key=value).
set_labels() {
    LABELS=(
        "org.opencontainers.image.title=$1"
        "org.opencontainers.image.description=Stand-in for $2, built from Debian packages; NOT the official image. $3"
        "org.opencontainers.image.version=$4"
        "org.opencontainers.image.source=$SOURCE"
        "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        "org.userstack.standin.for=$2"
        "$HASH_LABEL=$5"
    )
}

# label_changes : LABELS as `docker import --change` arguments (in CHANGES).
label_changes() {
    local kv v
    for kv in "${LABELS[@]}"; do
        v=${kv#*=}
        CHANGES+=(--change "LABEL ${kv%%=*}=\"${v//\"/\\\"}\"")
    done
}

label_args() {
    local kv
    BUILD_LABELS=()
    for kv in "${LABELS[@]}"; do BUILD_LABELS+=(--label "$kv"); done
}

TIMES=()
timed() { # timed NAME FUNCTION [ARG...] : run a build and remember how long it took
    local name=$1 start=$SECONDS
    shift
    ACTION=""
    "$@"
    TIMES+=("$(printf '%-46s %4ss  %s' "$name" "$((SECONDS - start))" "${ACTION:-}")")
}

# ---------------------------------------------------------------------------------------------
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

declare -A BASE_DIR=() BASE_PID=() BASE_HASH=()

base_hash() { inputs_hash debootstrap_base "$(declare -f finish_base)" "$1" "$MIRROR" "$SECURITY_MIRROR"; }

# debootstrap_base SUITE DIR : runs in the background, output to DIR/debootstrap.log.
debootstrap_base() {
    mkdir -p "$CACHE/debootstrap-$1"
    run debootstrap --variant=minbase --cache-dir="$CACHE/debootstrap-$1" "$1" "$2/root" "$MIRROR"
}

# finish_base SUITE DIR HASH : security updates, trimming, import.
finish_base() {
    local suite=$1 root=$2/root hash=$3 name="$REPO/debian:$1" version
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
    set_labels "$name" "debian:$suite" \
        "debootstrap --variant=minbase $suite from $MIRROR, with $suite-updates and -security applied." \
        "$version" "$hash"
    CHANGES=(--change "ENV PATH=$DEFAULT_PATH" --change 'CMD ["bash"]')
    label_changes
    run_sh "tar -C $(printf '%q' "$root") --numeric-owner -c . | docker import $(printf '%q ' "${CHANGES[@]}")- $name"
}

build_bases() {
    step "1/5 Base images $REPO/debian:bookworm and :bullseye (debootstrap + docker import)"
    local suite dir todo=() start=$SECONDS
    for suite in bookworm bullseye; do
        BASE_HASH[$suite]=$(base_hash "$suite")
        up_to_date "$REPO/debian:$suite" "${BASE_HASH[$suite]}" || todo+=("$suite")
    done
    if ((${#todo[@]} == 0)); then
        ACTION=skipped; return 0
    fi
    command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap (see .ci/install.sh)"
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
        finish_base "$suite" "$dir" "${BASE_HASH[$suite]}"
        retire "$REPO/debian:$suite"
        rm -rf --one-file-system "$dir"
    done
    BG_PIDS=()
    ACTION="built: ${todo[*]}"
}

# ---------------------------------------------------------------------------------------------
# 2. Runtime: the files of the packages gcr.io/distroless/cc-debian12 is made of, no shell, no apt.

# distroless/base's packages plus cc's (libgcc-s1, libgomp1, libstdc++6).
RUNTIME_PACKAGES=(libc6 libssl3 ca-certificates tzdata base-files netbase libgcc-s1 libgomp1 libstdc++6)

assemble_runtime() {
    local work=$1 root=$1/root hash=$2 name=$3 deb version
    mkdir -p "$root"
    # Like distroless: no dpkg database, but each package's control data in status.d, so image
    # scanners can still tell which versions are inside.
    mkdir -p "$root/var/lib/dpkg/status.d"
    for deb in "$work"/*.deb; do
        dpkg -x "$deb" "$root"
        dpkg-deb -f "$deb" >"$root/var/lib/dpkg/status.d/$(dpkg-deb -f "$deb" Package)"
    done
    # ca-certificates' postinst would generate the bundle; do the same from the package's own
    # Mozilla certificates only (never the host's bundle, which may hold a local CA).
    mkdir -p "$root/etc/ssl/certs"
    find "$root/usr/share/ca-certificates/mozilla" -name '*.crt' -print0 | LC_ALL=C sort -z |
        xargs -0 awk 1 >"$root/etc/ssl/certs/ca-certificates.crt"
    # Keep the licences, drop what only a package manager or a person at a shell would use.
    rm -rf "$root/usr/share/ca-certificates" "$root/usr/sbin" "$root/etc/ca-certificates" \
        "$root/usr/share/man" "$root/usr/share/info" "$root/usr/share/lintian" "$root/usr/share/bug" \
        "$root/usr/share/gcc" "$root/usr/share/gdb"
    find "$root/usr/share/doc" -type f ! -name copyright -delete
    find "$root/usr/share/doc" -type d -empty -delete
    cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
    cat >"$root/etc/group" <<'EOF'
root:x:0:
tty:x:5:
staff:x:50:
nogroup:x:65534:
nonroot:x:65532:
EOF
    # Without it glibc asks DNS before /etc/hosts, so container links and --add-host lose.
    printf 'passwd: files\ngroup: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n' \
        >"$root/etc/nsswitch.conf"
    install -d -m 0700 "$root/root"
    install -d -m 0700 -o 65532 -g 65532 "$root/home/nonroot"
    install -d -m 1777 "$root/tmp" "$root/var/tmp"
    install -d -m 0755 "$root/proc" "$root/sys" "$root/dev" "$root/etc" "$root/var/lib"
    version=$(cat "$root/etc/debian_version")
    set_labels "$name" "gcr.io/distroless/cc-debian12:nonroot" \
        "Files of ${RUNTIME_PACKAGES[*]} (Debian $version), nonroot 65532; no shell, no package manager." \
        "$version" "$hash"
    CHANGES=(--change 'USER 65532:65532' --change 'WORKDIR /home/nonroot'
        --change "ENV PATH=$DEFAULT_PATH" --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt')
    label_changes
    run_sh "tar -C $(printf '%q' "$root") --numeric-owner -c . | docker import $(printf '%q ' "${CHANGES[@]}")- $name"
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

build_runtime() {
    local name="$REPO/distroless-cc:debian12" hash work uris
    step "2/5 Runtime image $name (stand-in for gcr.io/distroless/cc-debian12:nonroot)"
    # shellcheck source=/dev/null
    [[ $(. /etc/os-release && echo "$VERSION_CODENAME") == bookworm ]] ||
        die "the runtime image is assembled from this host's apt (must be Debian bookworm = debian12)"
    # The exact .debs (their sha256 is in the URIs list) are inputs: a security update rebuilds.
    if ! uris=$(apt-get download --print-uris "${RUNTIME_PACKAGES[@]}" 2>&1); then
        run apt-get -qq update
        uris=$(apt-get download --print-uris "${RUNTIME_PACKAGES[@]}")
    fi
    hash=$(inputs_hash assemble_runtime "$uris" "$(declare -f verify_runtime build_runtime)")
    if up_to_date "$name" "$hash"; then ACTION=skipped; return 0; fi
    new_tmpdir runtime
    work=$NEW_TMP
    if ! (cd "$work" && try apt-get -q -o APT::Sandbox::User=root download "${RUNTIME_PACKAGES[@]}"); then
        run apt-get -qq update # a stale package list points at .debs the mirror no longer has
        (cd "$work" && run apt-get -q -o APT::Sandbox::User=root download "${RUNTIME_PACKAGES[@]}")
    fi
    assemble_runtime "$work" "$hash" "$name"
    verify_runtime "$name" "$work"
    ((CHECKS_FAILED == 0)) || die "$name failed its checks"
    retire "$name"
    rm -rf "$work"
    ACTION=built
}

# ---------------------------------------------------------------------------------------------
# 3. Rust builder: Debian's gcc + libc6-dev and this machine's one Rust toolchain, laid out like
# the official rust image (RUSTUP_HOME=/usr/local/rustup, CARGO_HOME=/usr/local/cargo).

stage_toolchain() { # stage_toolchain CTX SYSROOT TOOLCHAIN-NAME
    local ctx=$1 sysroot=$2 tc=$3 dest t
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

build_rust() {
    local name="$REPO/rust:1.95-slim-bookworm" hash ctx sysroot version triple tc
    step "3/5 Rust builder $name (stand-in for rust:1.95-slim-bookworm)"
    command -v rustc >/dev/null || die "rustc is missing on this host (the builder image copies its toolchain)"
    sysroot=$(rustc --print sysroot)
    version=$(rustc --version | awk '{print $2}')
    triple=$(rustc -vV | awk '/^host:/ {print $2}')
    [[ $version == 1.95.* ]] || die "host rustc is $version, but the image is tagged 1.95"
    tc=$version-$triple
    hash=$(inputs_hash stage_toolchain "$here/rust" "$(image_id "$REPO/debian:bookworm")" \
        "$(rustc -vV)" "$(cargo -vV)" "$(declare -f build_rust)")
    if up_to_date "$name" "$hash"; then ACTION=skipped; return 0; fi
    new_tmpdir rust
    ctx=$NEW_TMP
    stage_toolchain "$ctx" "$sysroot" "$tc"
    run du -sh "$ctx/rootfs"
    set_labels "$name" "rust:1.95-slim-bookworm" \
        "Debian bookworm gcc, libc6-dev, ca-certificates + Rust $version ($tc: cargo, rustc, rustdoc, rust-std; no rustup)." \
        "$version" "$hash"
    label_args
    run docker build --progress=plain -t "$name" "${BUILD_LABELS[@]}" \
        --build-arg "BASE_IMAGE=$REPO/debian:bookworm" --build-arg "RUST_VERSION=$version" "$ctx"
    rm -rf "$ctx"
    check "cargo --version in $name" docker run --rm "$name" cargo --version
    check "rustc --version in $name is $version" bash -c "docker run --rm $name rustc --version | grep -F 'rustc $version'"
    check "$name compiles and runs a hello-world" docker run --rm "$name" bash -c \
        'set -e; cd /tmp && cargo new -q --vcs none hi && cd hi && cargo build -q --offline && ./target/debug/hi'
    ((CHECKS_FAILED == 0)) || die "$name failed its checks"
    retire "$name"
    ACTION=built
}

# ---------------------------------------------------------------------------------------------
# 4./5. PostgreSQL 13 and Redis 7: Dockerfiles beside this script, FROM the bases.

# build_dockerfile_image NAME DIR BASE STANDS-IN-FOR VERSION DESCRIPTION
build_dockerfile_image() {
    local name=$1 dir=$2 base=$3 for=$4 version=$5 desc=$6 hash
    hash=$(inputs_hash build_dockerfile_image "$dir" "$(image_id "$base")")
    if up_to_date "$name" "$hash"; then ACTION=skipped; return 0; fi
    set_labels "$name" "$for" "$desc" "$version" "$hash"
    label_args
    run docker build --progress=plain -t "$name" "${BUILD_LABELS[@]}" --build-arg "BASE_IMAGE=$base" "$dir"
    retire "$name"
    ACTION=built
}

build_postgres() {
    local name="$REPO/postgres:13"
    step "4/5 PostgreSQL $name (stand-in for postgres:13)"
    build_dockerfile_image "$name" "$here/postgres" "$REPO/debian:bullseye" postgres:13 13 \
        "Debian bullseye postgresql-13 with an entrypoint honouring the official image's POSTGRES_* contract."
    [[ $ACTION == built ]] || return 0
    check "postgres --version in $name is 13.x" bash -c "docker run --rm $name postgres --version | grep -E ' 13\\.'"
    ((CHECKS_FAILED == 0)) || die "$name failed its checks"
}

build_redis() {
    local name="$REPO/redis:7"
    step "5/5 Redis $name (stand-in for redis:7 / redis:latest)"
    build_dockerfile_image "$name" "$here/redis" "$REPO/debian:bookworm" redis:7 7 \
        "Debian bookworm redis-server 7.0, protected mode off, /data, user redis."
    [[ $ACTION == built ]] || return 0
    check "redis-server --version in $name is 7.x" bash -c "docker run --rm $name redis-server --version | grep -F 'v=7.'"
    ((CHECKS_FAILED == 0)) || die "$name failed its checks"
}

# ---------------------------------------------------------------------------------------------

step "Preflight"
docker info >/dev/null 2>&1 || die "no Docker engine answers (start dockerd; see /work/shared/docker-here.md)"
docker buildx version >/dev/null 2>&1 || die "docker buildx is missing: run .ci/install.sh"
log "Debian mirror $MIRROR, security $SECURITY_MIRROR; images: ${want[*]}; force=$force"

# Bases are needed by everything but the runtime; build them when missing even if not named.
need_bases=0
if wanted bases; then
    need_bases=1
elif wanted rust || wanted postgres || wanted redis; then
    docker image inspect "$REPO/debian:bookworm" "$REPO/debian:bullseye" >/dev/null 2>&1 || need_bases=1
fi
if ((need_bases)); then timed "$REPO/debian:bookworm + :bullseye" build_bases; fi
if wanted runtime; then timed "$REPO/distroless-cc:debian12" build_runtime; fi
if wanted rust; then timed "$REPO/rust:1.95-slim-bookworm" build_rust; fi
if wanted postgres; then timed "$REPO/postgres:13" build_postgres; fi
if wanted redis; then timed "$REPO/redis:7" build_redis; fi

step "Summary"
run docker images "$REPO/*"
log "time per image (this run):"
printf '  %s\n' "${TIMES[@]}" >&2
log "total: ${SECONDS}s"
