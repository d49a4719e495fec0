#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The deliverable: runs task 1 (tests/e2e/manual.sh), task 2 (tests/e2e/compose.sh) and task 3
# (tests/e2e/swarm.sh) for real, records every command they run (deploy/lib/common.sh,
# USERSTACK_TRANSCRIPT), and renders that record into report.pdf and report.docx. A report exists
# only for a run that passed: any failed script or check stops it with an error naming the step,
# and no report file is written. Whether the run passed is decided in one place, render.py (it
# reads the transcript; this script only writes to it).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../lib/common.sh
source "$root/deploy/lib/common.sh"

TESTS=(tests/e2e/manual.sh tests/e2e/compose.sh tests/e2e/swarm.sh)

usage() {
    cat <<'EOF'
Usage: deploy/report/generate.sh [--out DIR] [--sample-png DIR] [--render TRANSCRIPT] [--help]

Runs tests/e2e/manual.sh (task 1), tests/e2e/compose.sh (task 2) and tests/e2e/swarm.sh (task 3)
on this machine's Docker engine, recording every command, and writes into DIR (default out/report):
  report.pdf, report.docx   only if all three passed and every check passed
  transcript.jsonl          the record of the run (JSON lines, see deploy/lib/common.sh)
  logs/*.log                the full console output of each test
Exits non-zero, naming the failed step, if anything failed.

  --out DIR            where the files go [out/report]
  --sample-png DIR     also write DIR/report-sample.png (title page) and DIR/report-sample-2.png
                       (first page of task 2), rendered from this run's PDF
  --render TRANSCRIPT  do not run the tests: render again the transcript of an earlier run of
                       this script (refused unless it records every test passing)
EOF
}

out=$root/out/report
sample_dir=""
render_only=""
while (($#)); do
    case $1 in
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --sample-png) sample_dir=${2:?--sample-png needs a directory}; shift 2 ;;
        --render) render_only=${2:?--render needs a transcript}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

started=$SECONDS
for tool in docker jq git dot weasyprint pandoc pdftoppm pdftotext python3; do
    command -v "$tool" >/dev/null || die "$tool is missing: run .ci/install.sh (as root)"
done
if [[ -n "$render_only" ]]; then
    [[ -r "$render_only" ]] || die "--render $render_only: no such transcript"
    render_only=$(cd "$(dirname "$render_only")" && pwd)/$(basename "$render_only")
fi
if [[ -n "$sample_dir" ]]; then
    mkdir -p "$sample_dir"
    sample_dir=$(cd "$sample_dir" && pwd)
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Nothing from an earlier run may pass for this one's result.
rm -f "$out/report.pdf" "$out/report.docx"
rm -rf "$out"/.render.*
work=$(mktemp -d "$out/.render.XXXXXX")
trap 'rm -rf "$work"' EXIT

# record_result SCRIPT EXIT FAILED-STEP : the outcome of one end-to-end script, in the transcript
# (render.py refuses a transcript without a zero result for each).
record_result() {
    jq -nc --arg script "$1" --argjson exit "$2" --arg failed_step "$3" --arg time "$(_now)" \
        '{type: "result", script: $script, exit: $exit, failed_step: $failed_step, time: $time}' \
        >>"$USERSTACK_TRANSCRIPT"
}

# failed_step LOG : what failed, as the scripts' `die` reported it ("failed step: …", innermost
# first).
failed_step() {
    local found
    found=$(sed -n 's/^.*failed step: //p' "$1" | awk '!seen[$0]++' | paste -sd ';' | sed 's/;/; /g')
    printf '%s' "${found:-(none reported; see the log)}"
}

# verify_run SCRIPT... : render.py's verdict on the transcript so far (failed checks anywhere, a
# missing or non-zero result of each SCRIPT); prints the problems and fails if there are any.
verify_run() {
    local args=() s
    for s; do args+=(--require-result "$s"); done
    python3 "$here/render.py" verify --transcript "$USERSTACK_TRANSCRIPT" "${args[@]}"
}

# run_test SCRIPT : run one end-to-end test, its console output also kept in logs/; die naming the
# failed step if it fails.
run_test() {
    local script=$1 name log rc problems
    name=$(basename "$script" .sh)
    log=$out/logs/$name.log
    log "running $script (console output also in ${log#"$root"/})"
    local t0=$SECONDS
    set +e
    "$root/$script" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    record_result "$script" "$rc" "$( ((rc == 0)) || failed_step "$log")"
    # A check that failed without failing its script still fails the run.
    if ! problems=$(verify_run "$script" 2>&1); then
        USERSTACK_STEP="" die "$script failed: ${problems#render.py: }; after $((SECONDS - t0))s (log: ${log#"$root"/}); no report written"
    fi
    log "$script passed in $((SECONDS - t0))s"
}

if [[ -n "$render_only" ]]; then
    cp "$render_only" "$work/transcript.jsonl"
    transcript=$work/transcript.jsonl
else
    transcript=$out/transcript.jsonl
    rm -rf "$transcript" "$out/logs"
    mkdir -p "$out/logs"
    for script in "${TESTS[@]}"; do
        [[ -x "$root/$script" ]] || die "$script is missing or not executable"
    done
    export USERSTACK_TRANSCRIPT=$transcript

    USERSTACK_SECTION=Environment
    step "Docker client and engine"
    run docker version
    step "Docker Compose and BuildKit"
    run docker compose version
    run docker buildx version
    step "This machine and the source revision"
    run uname -srm
    run_sh 'grep PRETTY_NAME /etc/os-release'
    # From the repository root, so the recorded commands read the same on every machine.
    (cd "$root" && run git describe --always --dirty --abbrev=12)
    (cd "$root" && run_sh "git log -1 --format='%H — %s (%cI)'")
    step "Images present before the run"
    run docker image ls

    for script in "${TESTS[@]}"; do
        run_test "$script"
    done

    USERSTACK_SECTION=Environment
    step "Images used by the run (after it)"
    # The app image and the stand-ins, by name, once per image id.
    mapfile -t images < <(docker image ls --format '{{.Repository}}:{{.Tag}} {{.ID}}' |
        grep -E '^userstack(-standin/[^:]+)?:' | sort -u -k2,2 | sort | cut -d' ' -f1)
    ((${#images[@]})) || die "no userstack images after the run"
    run_sh "docker image inspect --format '{{range .RepoTags}}{{.}} {{end}}| {{.Id}} | {{.Size}}' ${images[*]}"
    unset USERSTACK_TRANSCRIPT
fi

log "rendering the report (in ${work#"$root"/})"
cp "$here/report.css" "$work/"
dot -Tsvg "$here/architecture.dot" -o "$work/architecture.svg"
dot -Tpng -Gdpi=200 "$here/architecture.dot" -o "$work/architecture.png"
require=()
for script in "${TESTS[@]}"; do require+=(--require-result "$script"); done
python3 "$here/render.py" html --transcript "$transcript" --repo "$root" "${require[@]}" \
    --figure architecture.svg --css report.css --out "$work/report.html"
# Word gets a PNG figure (SVG support in Word varies) and no page-numbered contents list.
python3 "$here/render.py" html --transcript "$transcript" --repo "$root" "${require[@]}" \
    --figure architecture.png --figure-width 640 --target docx --out "$work/report-docx.html"
(
    cd "$work"
    weasyprint report.html report.pdf
    pandoc -o pandoc-reference.docx --print-default-data-file reference.docx
    python3 "$here/render.py" reference-docx pandoc-reference.docx reference.docx
    pandoc report-docx.html -f html -t docx --resource-path=. --reference-doc=reference.docx \
        -o report.docx
)
pages=$(pdfinfo "$work/report.pdf" | awk '/^Pages:/ {print $2}')
# Same file system: the renames are atomic, so the folder never holds half a report.
mv "$work/report.pdf" "$out/report.pdf"
mv "$work/report.docx" "$out/report.docx"
if [[ -n "$render_only" && "$render_only" != "$out/transcript.jsonl" ]]; then
    cp "$render_only" "$out/transcript.jsonl" # check.sh reads the run from next to the report
fi

if [[ -n "$sample_dir" ]]; then
    # The title page, and the first page of task 2 (terminal snapshots from both hosts).
    task2_page=""
    for ((p = 1; p <= pages; p++)); do
        if pdftotext -f "$p" -l "$p" "$out/report.pdf" - | grep -E '^[0-9]+ Task 2' | grep -qv '[.][.]'; then
            task2_page=$p
            break
        fi
    done
    [[ -n "$task2_page" ]] || die "no page with the Task 2 chapter in $out/report.pdf"
    pdftoppm -r 60 -f 1 -l 1 -png -singlefile "$out/report.pdf" "$sample_dir/report-sample"
    pdftoppm -r 60 -f "$task2_page" -l "$task2_page" -png -singlefile "$out/report.pdf" "$sample_dir/report-sample-2"
    log "wrote $sample_dir/report-sample.png (page 1) and report-sample-2.png (page $task2_page)"
fi

log "report: $out/report.pdf ($pages pages, $(stat -c %s "$out/report.pdf") bytes), $out/report.docx ($(stat -c %s "$out/report.docx") bytes)"
log "done in $((SECONDS - started))s"
