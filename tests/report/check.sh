#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Checks a report written by deploy/report/generate.sh: the PDF and the Word file hold the
# expected chapters, every Dockerfile and the compose file verbatim, and the commands of this very
# run (a container id and a `docker compose up` taken from the run's transcript), the
# verification table has only passes, and the pages are not blank.
#
#   tests/report/check.sh OUTDIR     (OUTDIR holds report.pdf, report.docx, transcript.jsonl)
#
# Exits 1 if any check failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../../deploy/lib/common.sh
source "$root/deploy/lib/common.sh"

[[ $# == 1 && $1 != -* ]] || die "usage: tests/report/check.sh OUTDIR (the --out of deploy/report/generate.sh)"
dir=$1
pdf=$dir/report.pdf
docx=$dir/report.docx
transcript=$dir/transcript.jsonl
textcheck=$here/textcheck.py

step "Prerequisites"
for tool in pdftotext pdftoppm pdfinfo pandoc jq git python3; do
    command -v "$tool" >/dev/null || die "$tool is missing: run .ci/install.sh (as root)"
done
for file in "$pdf" "$docx" "$transcript"; do
    [[ -s "$file" ]] || die "$file is missing or empty: run deploy/report/generate.sh --out $dir"
done

# Every check runs, so one run lists every problem; the exit status comes at the end.
verify() { check "$@" || true; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The body text of the PDF, without the running header and footer (they would land in the middle
# of a line that wraps across a page break). A4 is 595 x 842 pt; the margins are 18 mm (51 pt).
# -raw: the default mode joins a line that ends in "-" to the next and drops the "-" (taking it
# for a hyphenated word), which breaks "--option" wrapped after its dashes. Form feeds (page
# breaks) go: a heading at the top of a page must still start its line.
pdftotext -raw -x 0 -y 48 -W 595 -H 746 "$pdf" - | tr -d '\f' >"$tmp/pdf.txt"
pdftotext "$pdf" "$tmp/pdf-full.txt"
pandoc "$docx" -t plain --wrap=none -o "$tmp/docx.txt"

step "The files are what they claim to be"
pages_over() { (($(pdfinfo "$1" | awk '/^Pages:/ {print $2}') > $2)); }
verify "report.pdf is a PDF of more than 5 pages" pages_over "$pdf" 5
verify "report.docx opens (pandoc reads it)" test -s "$tmp/docx.txt"

step "Chapters"
chapters=("Architecture" "Container definitions" "Environment" "Task 1" "Task 2" "Task 3"
    "Verification results" "Teardown")
# has_heading FILE TITLE : a numbered heading, not its line in the contents (that has leader dots).
has_heading() { grep -E "^[0-9]+ $2" "$1" | grep -qv '[.][.][.]'; }
for chapter in "${chapters[@]}"; do
    verify "PDF has the chapter '$chapter'" has_heading "$tmp/pdf.txt" "$chapter"
    verify "DOCX has the chapter '$chapter'" has_heading "$tmp/docx.txt" "$chapter"
done
verify "PDF has the title page" grep -q "userstack — deployment report" "$tmp/pdf-full.txt"
# The extra hosts' plumbing is in appendices, not in the tasks.
appendix() { grep -E "^[A-Z] $2" "$1" | grep -qv '[.][.][.]'; }
verify "PDF has the appendix 'How host B was provided'" appendix "$tmp/pdf.txt" "How host B was provided"
verify "PDF has the appendix on the swarm nodes" appendix "$tmp/pdf.txt" "How the hosts node1, node2, node3 were provided"
verify "DOCX has the appendix 'How host B was provided'" appendix "$tmp/docx.txt" "How host B was provided"
task_text() { awk -v t="^[0-9]+ $2" -v n='^[0-9]+ (Task [0-9]|Verification results)' '$0 ~ t && !/[.][.][.]/ {on = 1; next} on && $0 ~ n && !/[.][.][.]/ {on = 0} on' "$1"; }
no_plumbing() { ! task_text "$1" "$2" | grep -qE 'ip netns add|ip link add'; }
verify "Task 2 shows no namespace plumbing (ip netns add, ip link add)" no_plumbing "$tmp/pdf.txt" "Task 2"
verify "Task 3 shows no namespace plumbing" no_plumbing "$tmp/pdf.txt" "Task 3"
# The note may wrap between "appendix" and its letter: compare with the lines joined.
refers_to_appendix() { task_text "$1" "Task 2" | tr -s '\n' ' ' | grep -q "appendix A"; }
verify "Task 2 refers to its appendix" refers_to_appendix "$tmp/pdf.txt"
clean_tree() {
    local rev
    rev=$(jq -r 'select(.type == "command" and (.cmd | startswith("git describe"))) | .output' "$transcript" | tr -d '\n')
    echo "revision: $rev"
    if [[ $rev == *-dirty ]]; then grep -q "modified: uncommitted changes" "$tmp/pdf.txt"
    else grep -q "clean: the run used exactly this commit" "$tmp/pdf.txt"; fi
}
verify "the title page says whether the tree was clean, as git describe recorded it" clean_tree
figure_text() { grep -q "userstack-net" "$1" && grep -q "host B" "$1"; }
verify "PDF has the architecture figure (its labels are text)" figure_text "$tmp/pdf.txt"

step "Every Dockerfile and the compose file, verbatim"
mapfile -t dockerfiles < <(git -C "$root" ls-files -- '*Dockerfile' | grep -E '(^|/)Dockerfile$|\.Dockerfile$')
verify "the repository has at least one Dockerfile (git ls-files)" test "${#dockerfiles[@]}" -gt 0
for file in "${dockerfiles[@]}" deploy/compose/compose.yaml deploy/swarm/stack.yaml deploy/lib/swarm-services.sh deploy/swarm/haproxy.cfg; do
    verify "PDF holds $file (every line, modulo whitespace)" python3 "$textcheck" lines "$root/$file" "$tmp/pdf.txt"
done
verify "DOCX holds deploy/compose/compose.yaml (every line, modulo whitespace)" \
    python3 "$textcheck" lines "$root/deploy/compose/compose.yaml" "$tmp/docx.txt"
verify "DOCX code blocks are monospace" python3 "$textcheck" docx-mono "$docx"

# The report's timestamp of a command, as render.py prints it.
shown_time() { sed -e 's/T/ /' -e 's/Z$/ UTC/' <<<"$1"; }
# The output as a terminal showed it: no colour codes, the last state of redrawn lines.
terminal_text() { sed -E 's/\x1b\[[0-9;?]*[A-Za-z]//g' | awk -F'\r' '{print $NF}'; }

step "This very run: a docker run and a docker compose up from the transcript"
# `sed -n 1p`, not `head -n 1`: head leaves while jq still writes, and under pipefail the
# SIGPIPE (exit 141) would end this script (seen once the transcript held seven docker runs).
# docker run -d prints the new container's id: 64 hex digits no other run can have.
run_record=$(jq -c 'select(.type == "command" and (.section | startswith("Task 1")) and .exit == 0
    and (.cmd | startswith("docker run")) and (.output | test("(^|\n)[0-9a-f]{64}\n?$")))' "$transcript" | sed -n 1p)
if check "the transcript has a task-1 docker run that printed a container id" test -n "$run_record"; then
    cid=$(jq -r '.output' <<<"$run_record" | grep -oE '^[0-9a-f]{64}$' | tail -n 1)
    verify "PDF shows that docker run's container id ${cid:0:12}…" python3 "$textcheck" has "$cid" "$tmp/pdf.txt"
    verify "PDF shows that docker run's command line" \
        python3 "$textcheck" has "$(jq -r '.cmd' <<<"$run_record")" "$tmp/pdf.txt"
    verify "DOCX shows that docker run's container id" python3 "$textcheck" has "$cid" "$tmp/docx.txt"
fi
up_record=$(jq -c 'select(.type == "command" and (.section | startswith("Task 2")) and .exit == 0
    and (.cmd | test("\\bcompose\\b.*\\bup\\b")))' "$transcript" | sed -n 1p)
if check "the transcript has a task-2 docker compose up" test -n "$up_record"; then
    up_time=$(shown_time "$(jq -r '.time' <<<"$up_record")")
    jq -r '.output' <<<"$up_record" | terminal_text >"$tmp/up.out"
    verify "PDF shows that docker compose up's command line" \
        python3 "$textcheck" has "$(jq -r '.cmd' <<<"$up_record")" "$tmp/pdf.txt"
    verify "PDF shows when that docker compose up ran ($up_time)" python3 "$textcheck" has "$up_time" "$tmp/pdf.txt"
    verify "PDF shows that docker compose up's output, every line" python3 "$textcheck" lines "$tmp/up.out" "$tmp/pdf.txt"
fi
step "Task 3: the swarm's figures and its stack deploy, from the transcript"
mapfile -t figures < <(jq -r 'select(.type == "figure" and (.section | startswith("Task 3"))) | .text' "$transcript")
verify "the transcript has the eight figure lines of task 3 (issue 9's list 1-7)" bash -c \
    "printf '%s\n' \"\$@\" | grep -cE '^([0-9]+ nodes|app replicas|app tasks answering|rolling update|rollback|node loss|data after|digests)' | grep -qx 8" _ "${figures[@]}"
for f in "${figures[@]}"; do
    verify "PDF shows the figure '${f:0:60}…'" python3 "$textcheck" has "$f" "$tmp/pdf.txt"
done
verify "PDF and transcript agree: rolling update with 0 failed" bash -c \
    "printf '%s\n' \"\$@\" | grep -qE '^rolling update: [0-9]+ requests, 0 failed'" _ "${figures[@]}"
deploy_record=$(jq -c 'select(.type == "command" and (.section | startswith("Task 3")) and .exit == 0
    and (.cmd | test("stack deploy --with-registry-auth")))' "$transcript" | sed -n 1p)
if check "the transcript has task 3's docker stack deploy" test -n "$deploy_record"; then
    verify "PDF shows that docker stack deploy's command line" \
        python3 "$textcheck" has "$(jq -r '.cmd' <<<"$deploy_record")" "$tmp/pdf.txt"
    jq -r '.output' <<<"$deploy_record" | terminal_text >"$tmp/deploy.out"
    verify "PDF shows that docker stack deploy's output, every line" python3 "$textcheck" lines "$tmp/deploy.out" "$tmp/pdf.txt"
fi

hosts=$(jq -r 'select(.type == "command" and (.section | startswith("Task"))) | .host' "$transcript" | sort -u)
for host in $hosts; do
    verify "PDF has terminal prompts on host $host" grep -qE "^[a-z_][a-z0-9_-]*@$host:~\\$ " "$tmp/pdf.txt"
done

step "Verification results"
total=$(jq -s '[.[] | select(.type == "check")] | length' "$transcript")
verify "the transcript has checks" test "$total" -gt 0
verify "PDF says all $total checks passed" grep -q "^$total of $total checks passed" "$tmp/pdf.txt"
# Only the table: command outputs elsewhere may well say FAIL.
awk '/^[0-9]+ Verification results$/ {on = 1} /^[0-9]+ Teardown$/ {on = 0} on' "$tmp/pdf.txt" >"$tmp/table.txt"
all_pass() { (($(grep -c 'PASS$' "$1") == $2)) && ! grep -qw FAIL "$1"; }
verify "PDF's verification table lists $total checks, none FAIL" all_pass "$tmp/table.txt" "$total"

step "The pages are not blank"
pdftoppm -r 50 -f 1 -l 2 -png "$pdf" "$tmp/page"
pages=("$tmp"/page-*.png)
verify "pdftoppm rendered pages 1 and 2" test "${#pages[@]}" -eq 2
for png in "${pages[@]}"; do
    verify "$(basename "$png") is not blank" python3 "$textcheck" png-not-blank "$png"
done

step "Summary"
((CHECKS_FAILED == 0)) || die "$CHECKS_FAILED check(s) of the report failed"
log "the report in $dir passed every check"
