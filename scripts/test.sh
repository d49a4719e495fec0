#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Runs every test of the project, in stages, and prints one line per stage and a summary.
#
#   scripts/test.sh              all stages, in two lanes side by side, then the benchmark
#   scripts/test.sh rust deploy  only those stages, one after the other
#                                (rust | fuzz | chaos | deploy | report | bench | swarm)
#
# The two lanes share nothing but the CPU: `rust fuzz chaos` (cargo, PostgreSQL and Redis on free
# ports, no Docker) and `deploy report` (the Docker engine, fixed names and ports). Each lane's
# output goes to out/test/lane-*.log and is printed when the lane ends. The benchmark runs after
# both, alone, so its figures are not taken on a machine busy with the tests.
# TEST_LANES=0 runs the default stages one after the other instead.
#
# `swarm` (tests/e2e/swarm.sh alone) is not in the default list: the report stage runs it, once.
#
# Prerequisites come from `.ci/install.sh` (Debian bookworm, as root). The Rust tests start
# their own PostgreSQL and Redis; the deploy stages use the local Docker engine and build the
# stand-in images when no registry can be reached.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=../deploy/lib/common.sh
source deploy/lib/common.sh

stages=("$@")
passed=0 failed=0 summary=()

stage() {
    local name=$1; shift
    local start=$SECONDS line
    log "stage $name: $*"
    mkdir -p out/test
    # Each stage's output is kept on its own too (stderr joins stdout), so that a failed stage's
    # checks can be shown again beside the summary: a CI log cut short keeps its end. Through a
    # process substitution, not a pipe: a pipe would wait for any process the stage left behind
    # holding its stdout.
    if "$@" > >(tee "out/test/stage-$name.log") 2>&1; then
        passed=$((passed + 1)); line="ok    $name ($((SECONDS - start))s)"
    else
        failed=$((failed + 1)); line="FAIL  $name ($((SECONDS - start))s)"
    fi
    summary+=("$line")
    # A lane run by lanes() below reports each stage to the parent as it ends.
    if [[ -n ${TEST_SUMMARY_FILE:-} ]]; then echo "$line" >>"$TEST_SUMMARY_FILE"; fi
}

shell_scripts() {
    { git ls-files '*.sh'; echo .ci/run; } | sort -u
}

rust() {
    stage fmt cargo fmt --all -- --check
    stage clippy cargo clippy --workspace --all-targets --locked -- -D warnings
    stage cargo-test cargo test --workspace --locked
}

# schemathesis, every check, against the real binary over its own PostgreSQL and Redis.
fuzz() {
    stage fuzz cargo test -p userstack-server --locked --features fuzz --test fuzz -- --nocapture
}

# PostgreSQL, Redis and the server itself killed, frozen and flooded under load; one line of
# figures per scenario.
chaos() {
    stage chaos cargo test -p userstack-server --locked --features chaos --test chaos -- \
        --nocapture --test-threads 1
}

deploy() {
    # shellcheck disable=SC2046 # one word per path
    stage shellcheck shellcheck -x $(shell_scripts)
    stage compose-config docker compose -f deploy/compose/compose.yaml config --quiet
    stage stack-config bash -c "docker stack config -c deploy/swarm/stack.yaml -c deploy/swarm/stack.mesh.yaml >/dev/null && docker stack config -c deploy/swarm/stack.yaml >/dev/null"
    # What swarm.sh deploy sends: services.json's hardening (deploy/lib/swarm-services.sh, which
    # fails on a key it cannot translate: checked with one added) with stack.yaml over it.
    stage stack-config-hardened bash -c "SWARM_STATE=\$(mktemp -d) deploy/swarm/swarm.sh config >/dev/null &&
        ! SERVICES_FILE=<(jq '.services.app.devices = []' deploy/lib/services.json) deploy/lib/swarm-services.sh >/dev/null 2>&1"
    stage standins deploy/images/build-standins.sh
    stage standins-contract tests/e2e/standins.sh
    # Proves deploy/lib/check-hardening.sh fails when any one item is missing (~20 s).
    stage hardening-check tests/e2e/hardening-check.sh
    # The README's first command on a Docker CLI without plugins (builds the app image, which the
    # report stage then reuses).
    stage newcomer tests/e2e/newcomer.sh
    # PostgreSQL and Redis pinned by digest from a loopback registry (uses that app image; ~35 s).
    stage pinning tests/e2e/pinning.sh
}

# The report runs tasks 1, 2 and 3 end to end (tests/e2e/manual.sh, compose.sh, swarm.sh) and
# renders what they did; so those tests run here, once, not twice.
report() {
    stage task1-task2-task3-report deploy/report/generate.sh --out out/report
    stage report-contents tests/report/check.sh out/report
    stage report-on-failure tests/report/failing.sh
}

# The report stage has just built userstack:latest from this tree, and its binary is the release
# build the benchmark needs: reuse it rather than compile a second one, but only if the image's
# revision label names the last commit of the sources and they have no local changes.
image_binary() {
    local sources=(Cargo.toml Cargo.lock crates Dockerfile .dockerignore) want have id
    want=$(git log -1 --format=%H -- "${sources[@]}")
    have=$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.revision"}}' \
        userstack:latest 2>/dev/null) || return 1
    [[ -n "$want" && "$have" == "$want" ]] || return 1
    git diff --quiet HEAD -- "${sources[@]}" || return 1
    mkdir -p out/bench
    id=$(docker create userstack:latest) || return 1
    docker cp "$id:/usr/local/bin/userstack" out/bench/userstack >/dev/null
    docker rm "$id" >/dev/null
    echo out/bench/userstack
}

bench() {
    local args=(--quick) bin
    if bin=$(image_binary); then
        log "benchmarking the binary of userstack:latest (built from this tree)"
        args+=(--bin "$bin")
    fi
    stage bench-quick bench/run.sh "${args[@]}"
}

# Task 3 alone (the report stage runs it too): a swarm of three hosts, 7 to 10 minutes.
swarm() {
    stage swarm-e2e tests/e2e/swarm.sh
}

# Runs `scripts/test.sh STAGES...` for each lane at once; a lane's stage lines join the summary.
lanes() {
    local dir=out/test names=() pids=() i start=$SECONDS
    mkdir -p "$dir"
    for lane in "$@"; do
        local name=${lane// /-}
        names+=("$name")
        : >"$dir/lane-$name.summary"
        log "lane $name: scripts/test.sh $lane (output: $dir/lane-$name.log)"
        # shellcheck disable=SC2086 # a lane is a list of stage names
        TEST_SUMMARY_FILE=$dir/lane-$name.summary scripts/test.sh $lane >"$dir/lane-$name.log" 2>&1 &
        pids+=($!)
    done
    # Each lane's log is printed as soon as that lane ends, the first to end first.
    local left=${#pids[@]} status
    while ((left)); do
        sleep 1
        for i in "${!pids[@]}"; do
            if [[ -z ${pids[i]} ]] || kill -0 "${pids[i]}" 2>/dev/null; then continue; fi
            status=0; wait "${pids[i]}" || status=$?
            printf '\n===== lane %s (ended after %ds) =====\n' "${names[i]}" "$((SECONDS - start))"
            cat "$dir/lane-${names[i]}.log"
            while read -r line; do
                summary+=("$line")
                if [[ $line == ok* ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
            done <"$dir/lane-${names[i]}.summary"
            # A lane that died without a failed stage to show for it (killed, a script error).
            if ((status != 0)) && ! grep -q '^FAIL' "$dir/lane-${names[i]}.summary"; then
                failed=$((failed + 1)); summary+=("FAIL  lane ${names[i]} (exit $status)")
            fi
            pids[i]='' left=$((left - 1))
        done
    done
    summary+=("      (lanes ran side by side: $((SECONDS - start))s)")
}

if ((${#stages[@]} == 0)); then
    if [[ ${TEST_LANES:-1} == 0 ]]; then
        stages=(rust fuzz chaos deploy report bench)
    else
        lanes "rust fuzz chaos" "deploy report"
        stages=(bench)
    fi
fi

for s in "${stages[@]}"; do
    case $s in
        rust | fuzz | chaos | deploy | report | bench | swarm) "$s" ;;
        *) die "unknown stage '$s' (rust | fuzz | chaos | deploy | report | bench | swarm)" ;;
    esac
done

# failed_excerpt NAME : the failed checks of stage NAME (a check's FAIL line, a panic, an error,
# with what follows each) and its last lines.
failed_excerpt() {
    local file=out/test/stage-$1.log
    [[ -r $file ]] || return 0
    printf '\n===== stage %s failed: its failed checks, then its last lines (all of it: %s) =====\n' "$1" "$file"
    grep -E -A4 '^ *FAIL |^error|panicked at|^test result: FAILED|^failures:' "$file" | head -n 40 || true
    printf -- '-----\n'
    tail -n 12 "$file"
}
# A lane's failures are shown by the parent, once.
for line in "${summary[@]}"; do
    if [[ -z ${TEST_SUMMARY_FILE:-} && $line =~ ^FAIL\ +([^ ]+)\ \( ]]; then failed_excerpt "${BASH_REMATCH[1]}"; fi
done

printf '\n'
printf '  %s\n' "${summary[@]}"
printf 'stages: %d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
