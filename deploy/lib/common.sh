# shellcheck shell=bash
# Shared by every script under deploy/ and tests/e2e/. Source it; do not run it.
#
# Why one library: the deploy scripts print each command before running it (so a person can
# follow along), the end-to-end tests run those very scripts, and the report is rendered from
# what they ran. Recording happens here, once, so the three can never disagree.
#
# Recording: when USERSTACK_TRANSCRIPT names a file, every `run`, `run_sh`, `step` and `check`
# appends one JSON object per line to it (needs `jq`):
#   {"type":"step","section":S,"step":T,"host":H,"time":ISO8601}
#   {"type":"command","section":S,"step":T,"host":H,"time":ISO8601,"cmd":C,"exit":N,
#    "duration_ms":N,"output":O}
#   {"type":"check","section":S,"step":T,"host":H,"time":ISO8601,"name":D,"ok":BOOL,"output":O}
# USERSTACK_SECTION names the part of the run (e.g. "Task 1"); USERSTACK_HOST names the host a
# command runs on (defaults to this machine's hostname); `on_host NAME cmd…` overrides it for
# one call.

: "${USERSTACK_SECTION:=}"
: "${USERSTACK_HOST:=$(hostname 2>/dev/null || echo localhost)}"
USERSTACK_STEP=${USERSTACK_STEP:-}
# The output of the last `run`/`run_sh`, for scripts that need e.g. a container id.
RUN_OUTPUT=""

if [[ -t 2 ]]; then _bold=$'\033[1m' _dim=$'\033[2m' _red=$'\033[31m' _off=$'\033[0m'
else _bold="" _dim="" _red="" _off=""; fi

log() { printf '%s==> %s%s\n' "$_bold" "$*" "$_off" >&2; }
warn() { printf '%swarning:%s %s\n' "$_red" "$_off" "$*" >&2; }
die() {
    printf '%serror:%s %s\n' "$_red" "$_off" "$*" >&2
    [[ -n "$USERSTACK_STEP" ]] && printf '%serror:%s failed step: %s\n' "$_red" "$_off" "$USERSTACK_STEP" >&2
    exit 1
}

_now() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }
_ms() { date +%s%3N; }

# _record JSON-FIELDS... : append one line to the transcript, if one is being kept.
_record() {
    [[ -n "${USERSTACK_TRANSCRIPT:-}" ]] || return 0
    jq -nc --arg section "$USERSTACK_SECTION" --arg step "$USERSTACK_STEP" \
        --arg host "$USERSTACK_HOST" --arg time "$(_now)" "$@" \
        '$ARGS.named' >>"$USERSTACK_TRANSCRIPT"
}

# step TITLE : start a numbered step; later commands are recorded under it.
step() {
    USERSTACK_STEP="$*"
    log "$*"
    _record --arg type step >/dev/null
}

# _exec DISPLAY CMD... : print DISPLAY as the command, run CMD with output shown and captured,
# record it, return its exit status (never exits, whatever `set -e` says).
_exec() {
    local display=$1; shift
    local out rc start errexit=0
    [[ $- == *e* ]] && errexit=1
    out=$(mktemp)
    printf '%s%s$ %s%s\n' "$_dim" "$USERSTACK_HOST" "$display" "$_off" >&2
    start=$(_ms)
    set +e
    "$@" 2>&1 | tee "$out" >&2
    rc=${PIPESTATUS[0]}
    ((errexit)) && set -e
    # shellcheck disable=SC2034 # read by the scripts that source this file
    RUN_OUTPUT=$(cat "$out")
    _record --arg type command --arg cmd "$display" --argjson exit "$rc" \
        --argjson duration_ms "$(($(_ms) - start))" --rawfile output "$out"
    rm -f "$out"
    return "$rc"
}

# run CMD [ARG...] : print, run and record one command; fail the script (naming the step) if it fails.
run() {
    local display
    display=$(printf '%q ' "$@")
    _exec "${display% }" "$@" || die "command failed (exit $?): ${display% }"
}

# run_sh 'PIPELINE' : like run, for a shell pipeline; recorded exactly as written.
run_sh() {
    _exec "$1" bash -o pipefail -c "$1" || die "command failed (exit $?): $1"
}

# try CMD [ARG...] : like run, but a failure is returned, not fatal (for commands expected to fail).
try() {
    local display
    display=$(printf '%q ' "$@")
    _exec "${display% }" "$@"
}

# on_host NAME FUNCTION-OR-CMD... : run one call with USERSTACK_HOST=NAME (for the transcript).
on_host() {
    local saved=$USERSTACK_HOST rc=0
    USERSTACK_HOST=$1; shift
    "$@" || rc=$?
    USERSTACK_HOST=$saved
    return "$rc"
}

# check NAME CMD... : a verification. Prints PASS/FAIL, records the outcome, returns the status.
CHECKS_FAILED=0
check() {
    local name=$1; shift
    local out rc errexit=0
    [[ $- == *e* ]] && errexit=1
    set +e
    out=$("$@" 2>&1)
    rc=$?
    ((errexit)) && set -e
    if ((rc == 0)); then
        printf '  PASS  %s\n' "$name" >&2
        _record --arg type check --arg name "$name" --argjson ok true --arg output "$out"
    else
        CHECKS_FAILED=$((CHECKS_FAILED + 1))
        printf '  %sFAIL%s  %s\n%s\n' "$_red" "$_off" "$name" "$out" >&2
        _record --arg type check --arg name "$name" --argjson ok false --arg output "$out"
    fi
    return "$rc"
}

# expect_eq WANT GOT : for use inside `check`; prints both on mismatch.
expect_eq() {
    [[ "$1" == "$2" ]] && return 0
    printf 'expected: %q\n     got: %q\n' "$1" "$2"
    return 1
}

# wait_until SECONDS DESCRIPTION CMD... : poll CMD once a second until it succeeds or time runs out.
# Wall-clock seconds: a CMD that itself takes time (e.g. docker over ssh) does not stretch the limit.
wait_until() {
    local limit=$1 what=$2; shift 2
    local start=$SECONDS
    until "$@" >/dev/null 2>&1; do
        ((SECONDS - start >= limit)) && die "timed out after ${limit}s waiting for $what"
        sleep 1
    done
    log "$what (after $((SECONDS - start))s)"
}

# secret_value NAME : the value of $NAME, or the contents of the file named by ${NAME}_FILE.
secret_value() {
    local name=$1 file_var="${1}_FILE"
    if [[ -n "${!file_var:-}" ]]; then
        [[ -r "${!file_var}" ]] || die "$file_var=${!file_var} is not a readable file"
        tr -d '\n' <"${!file_var}"
    elif [[ -n "${!name:-}" ]]; then
        printf '%s' "${!name}"
    else
        return 1
    fi
}

# registry_digest IMAGE REF : the registry digest (repo@sha256:…) to pin image IMAGE (an ID or a
# reference) with, REF being the reference it was started from. An image pushed to or pulled
# from several repositories has one digest per repository, listed in name order: the one of
# REF's repository is the one to pin, not merely the first. A local build has none: returns 1.
registry_digest() {
    local image=$1 repo=${2%@*} digests d
    # Drop the tag, not a registry's port: a tag is a ':' after the last '/'.
    if [[ ${repo##*/} == *:* ]]; then repo=${repo%:*}; fi
    mapfile -t digests < <(docker image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$image" | grep .)
    for d in "${digests[@]}"; do
        if [[ ${d%@*} == "$repo" ]]; then echo "$d"; return; fi
    done
    ((${#digests[@]})) && echo "${digests[0]}"
}
