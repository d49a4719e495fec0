#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# A failing step must stop deploy/report/generate.sh: exit non-zero, name the step, and leave no
# report that could pass for a success (not even one from an earlier run).
#
# The failure is a natural one, no test switch: task 1 is told to use an app image that does not
# exist (APP_IMAGE=…, SKIP_BUILD=1), so deploy/manual/up.sh stops at its "app image" step, a few
# seconds in. Needs the stand-in images already built (deploy/images/build-standins.sh), else
# up.sh --standins would spend minutes building them first.
#
#   tests/report/failing.sh          (under a minute)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../../deploy/lib/common.sh
source "$root/deploy/lib/common.sh"

MISSING_IMAGE=userstack-report-failing:no-such-image

step "Prerequisites"
for tool in docker jq timeout; do
    command -v "$tool" >/dev/null || die "$tool is missing: run .ci/install.sh (as root)"
done
docker info >/dev/null 2>&1 || die "no Docker engine answers (is dockerd running?)"
# shellcheck source=/dev/null # plain export lines (deploy/images)
source "$root/deploy/images/standins.env"
for image in "$POSTGRES_IMAGE" "$REDIS_IMAGE"; do
    docker image inspect "$image" >/dev/null 2>&1 ||
        die "stand-in image $image is missing: build them first with deploy/images/build-standins.sh"
done
! docker image inspect "$MISSING_IMAGE" >/dev/null 2>&1 || die "$MISSING_IMAGE exists; remove it: docker rmi $MISSING_IMAGE"
# Task 1 refuses to run next to an existing stack (its cleanup would destroy it): that would be a
# failure too, but not the one this test is about.
for thing in container:userstack-app container:userstack-db container:userstack-redis \
    network:userstack-net volume:userstack-pgdata; do
    ! docker "${thing%%:*}" inspect "${thing#*:}" >/dev/null 2>&1 ||
        die "${thing/:/ } exists (another test running?); run this test on an engine without a userstack stack"
done

# Every check runs, so one run lists every problem; the exit status comes at the end.
verify() { check "$@" || true; }
none_match() { ! compgen -G "$1" >/dev/null; }
stack_gone() {
    ! docker network inspect userstack-net >/dev/null 2>&1 && ! docker container inspect userstack-db >/dev/null 2>&1
}

out=$(mktemp -d)
trap 'rm -rf "$out" "$out.render"' EXIT
# A report left over from an earlier, successful run must not survive a failed one.
echo "stale report from an earlier run" >"$out/report.pdf"
echo "stale report from an earlier run" >"$out/report.docx"

step "deploy/report/generate.sh with an app image that does not exist"
t0=$SECONDS
rc=0
try env APP_IMAGE="$MISSING_IMAGE" SKIP_BUILD=1 timeout 300 "$root/deploy/report/generate.sh" --out "$out" || rc=$?
output=$RUN_OUTPUT
log "generate.sh exited $rc after $((SECONDS - t0))s"

verify "generate.sh exits non-zero" test "$rc" -ne 0
verify "it says task 1 failed" grep -q "tests/e2e/manual.sh failed" <<<"$output"
verify "it names the failed step (the app image step of up.sh)" \
    grep -qE "failed step: .*app image" <<<"$output"
verify "no report.pdf in the output folder" test ! -e "$out/report.pdf"
verify "no report.docx in the output folder" test ! -e "$out/report.docx"
verify "no half-rendered files left behind" none_match "$out/.render.*"
verify "the transcript records task 1's failure" \
    jq -se 'any(.[]; .type == "result" and .script == "tests/e2e/manual.sh" and .exit != 0)' "$out/transcript.jsonl"
verify "task 2 did not run after task 1 failed" \
    jq -se 'all(.[]; (.section // "") | startswith("Task 2") | not)' "$out/transcript.jsonl"
verify "task 1 cleaned up after itself (no userstack-net, no userstack-db)" stack_gone

step "Rendering that failed run's transcript is refused too"
mkdir -p "$out.render"
rc=0
try "$root/deploy/report/generate.sh" --render "$out/transcript.jsonl" --out "$out.render" || rc=$?
verify "generate.sh --render of the failed run exits non-zero" test "$rc" -ne 0
verify "and writes no report" none_match "$out.render/report.*"

step "Summary"
((CHECKS_FAILED == 0)) || die "$CHECKS_FAILED check(s) failed"
log "a failed step stops generate.sh and leaves no report (took $((SECONDS - t0))s)"
