#!/usr/bin/env python3
"""Renders the userstack deployment report as HTML from a run's transcript and the repository.

Input: the JSON-lines transcript written by deploy/lib/common.sh (types "step", "command",
"check"; tests/e2e/swarm.sh adds "figure" lines; generate.sh adds one "result" line per
end-to-end script with its exit status).
Output: one HTML file, turned into PDF by weasyprint and into DOCX by pandoc (generate.sh).

This is the one place that decides whether a run succeeded (generate.sh asks `verify` after each
test): it refuses (exit 2) a run with a failed check, a script that exited non-zero, or a missing
script result. A report only ever claims what the transcript shows. Standard library only, so it
runs with any Python 3.9+.

    render.py verify --transcript T [--require-result SCRIPT]...
    render.py html --transcript T --repo R --figure F --css C --out OUT.html
    render.py reference-docx DEFAULT.docx OUT.docx   (dark, monospace code blocks for Word)
"""

import argparse
import datetime
import getpass
import html
import json
import pathlib
import re
import subprocess
import sys
import zipfile

TITLE = "userstack — deployment report"
ENVIRONMENT = "Environment"
# The teardown of a part is its tail, from the first step whose title names one of these.
TEARDOWN = re.compile(r"tear(ing)?[ -]?down|clean(ing)?[ -]?up|\bdown\.sh\b",
                      re.I)

# Steps of tests/e2e/hosts.sh ("Hosts: bridge …", "Host hostb: its own dockerd"): how the test
# made the extra Docker hosts. Not the user's task: they go to an appendix.
PLUMBING = re.compile(r"^Hosts?( [a-z][a-z0-9]*)?: ")

ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][A-Za-z0-9]|\x1b[=>78]")
# Characters that XML (and so the HTML -> DOCX path) cannot carry.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class RunFailed(Exception):
    pass


def esc(text):
    return html.escape(str(text), quote=True)


def clean_output(text):
    """What a terminal would have shown: no colour codes, redrawn progress lines collapsed."""
    text = ANSI.sub("", text or "")
    lines = []
    for line in text.split("\n"):
        if "\r" in line:
            parts = [p for p in line.split("\r") if p.strip()]
            line = parts[-1] if parts else ""
        lines.append(line)
    return CONTROL.sub("", "\n".join(lines)).rstrip("\n")


def load_transcript(path):
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise RunFailed(f"{path}:{number}: not a JSON line ({e})") from e
    if not records:
        raise RunFailed(f"{path}: the transcript is empty")
    return records


def build_sections(records):
    """Sections in order of first appearance, each a list of numbered steps.

    Records are in the order they happened; a "step" record opens a new step in its section.
    A command or check belongs to the step it names, the latest one of that title: a test that
    calls a deploy script records the script's steps in between, and its own check after them
    belongs to its own step, not to the script's last one.
    """
    sections, latest = {}, {}
    for rec in records:
        kind = rec.get("type")
        if kind not in ("step", "command", "check"):
            continue
        name = rec.get("section") or "Run"
        steps = sections.setdefault(name, [])
        by_title = latest.setdefault(name, {})
        if kind == "step" or not steps:
            title = rec.get("step") or ""
            steps.append({"title": title or "(before the first step)",
                          "host": rec.get("host", ""), "time": rec.get("time", ""), "items": []})
            by_title[title] = len(steps)
            if kind == "step":
                continue
        number = by_title.get(rec.get("step") or "", len(steps))
        rec["_step"] = steps[number - 1]
        steps[number - 1]["items"].append(rec)
    return sections


def verify(records, required_results):
    """Raise RunFailed naming the section/step of anything that did not succeed."""
    problems = []
    for rec in records:
        if rec.get("type") == "check" and rec.get("ok") is not True:
            problems.append(f"check failed: {rec.get('name')!r} in section {rec.get('section')!r}, "
                            f"step {rec.get('step')!r}")
    results = {r.get("script"): r for r in records if r.get("type") == "result"}
    for script in required_results:
        r = results.get(script)
        if r is None:
            problems.append(f"no result recorded for {script} (did it run to the end?)")
        elif r.get("exit") != 0:
            problems.append(f"{script} exited {r.get('exit')}, failed step: {r.get('failed_step')!r}")
    for script, r in results.items():
        if script not in required_results and r.get("exit") != 0:
            problems.append(f"{script} exited {r.get('exit')}, failed step: {r.get('failed_step')!r}")
    if problems:
        raise RunFailed("; ".join(problems))


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def container_files(repo):
    """Every Dockerfile git knows about, then the per-service definition the compose file extends,
    the compose file, the stack file, the script that gives the stack that per-service definition
    and the load balancer's configuration: (path, text)."""
    names = [n for n in git(repo, "ls-files", "-z", "--", "*Dockerfile").split("\0") if n]
    dockerfiles = sorted(n for n in names
                         if pathlib.PurePosixPath(n).name == "Dockerfile" or n.endswith(".Dockerfile"))
    files = dockerfiles + ["deploy/lib/services.json", "deploy/compose/compose.yaml",
                           "deploy/swarm/stack.yaml", "deploy/lib/swarm-services.sh",
                           "deploy/swarm/haproxy.cfg"]
    files = [f for f in files if f != "deploy/lib/services.json" or pathlib.Path(repo, f).is_file()]
    out = []
    for name in files:
        path = pathlib.Path(repo, name)
        if not path.is_file():
            raise RunFailed(f"{name} is missing from the working tree")
        out.append((name, path.read_text(encoding="utf-8")))
    return out


def fmt_duration(ms):
    if ms is None:
        return ""
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes} min {seconds:02d} s"


def fmt_time(iso):
    return iso.replace("T", " ").replace("Z", " UTC") if iso else ""


def fmt_size(n):
    n = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def environment_facts(sections):
    """Versions and images for the title page, read from the Environment section's outputs."""
    facts = {"client": "?", "engine": "?", "compose": "?", "images": [], "revision": None, "commit": None}
    for step in sections.get(ENVIRONMENT, []):
        for rec in step["items"]:
            if rec.get("type") != "command" or rec.get("exit") != 0:
                continue
            cmd, out = rec.get("cmd", ""), clean_output(rec.get("output", ""))
            if cmd.startswith("docker version"):
                client = re.search(r"^Client:.*?^\s*Version:\s*(\S+)", out, re.M | re.S)
                engine = re.search(r"^Server:.*?^\s*Version:\s*(\S+)", out, re.M | re.S)
                facts["client"] = client.group(1) if client else "?"
                facts["engine"] = engine.group(1) if engine else "?"
            elif cmd.startswith("git describe"):
                facts["revision"] = out.strip()
            elif cmd.startswith("git log -1"):
                facts["commit"] = out.strip()
            elif cmd.startswith("docker compose version"):
                m = re.search(r"version\s+v?(\S+)", out)
                facts["compose"] = m.group(1) if m else "?"
            elif cmd.startswith("docker image inspect"):
                # generate.sh asks for "TAG TAG… | ID | SIZE" lines; the last inspect wins.
                images = []
                for line in out.splitlines():
                    parts = [p.strip() for p in line.split("|")]
                    if len(parts) == 3 and parts[2].isdigit():
                        images.append((", ".join(parts[0].split()), parts[1], int(parts[2])))
                if images:
                    # The app image first, then the stand-ins.
                    facts["images"] = sorted(images, key=lambda im: (not im[0].startswith("userstack:"), im[0]))
    return facts


class Html:
    def __init__(self):
        self.parts = []

    def add(self, *chunks):
        self.parts.extend(chunks)

    def text(self):
        return "".join(self.parts)


def terminal(doc, rec, user):
    host = rec.get("host", "")
    exit_code = rec.get("exit")
    status = "exit 0" if exit_code == 0 else f"exit {exit_code}"
    cls = "ok" if exit_code == 0 else "nonzero"
    output = clean_output(rec.get("output", ""))
    doc.add(f'<div class="cmd"><p class="meta">{esc(host)} · {esc(fmt_time(rec.get("time")))} · '
            f'{esc(fmt_duration(rec.get("duration_ms")))} · <span class="{cls}">{esc(status)}</span>'
            f'</p>\n<pre class="term"><span class="prompt">{esc(user)}@{esc(host)}:~$</span> '
            f'<span class="in">{esc(rec.get("cmd", ""))}</span>')
    if output:
        doc.add("\n", f'<span class="out">{esc(output)}</span>')
    doc.add("</pre></div>\n")


def check_line(doc, rec):
    ok = rec.get("ok") is True
    doc.add(f'<p class="check"><span class="{"pass" if ok else "fail"}">{"PASS" if ok else "FAIL"}'
            f'</span> {esc(rec.get("name", ""))}</p>\n')
    output = clean_output(rec.get("output", ""))
    if output:
        doc.add(f'<pre class="checkout">{esc(output)}</pre>\n')


def plain_title(title):
    """The scripts may number their steps themselves ("3. The app image"): number them once."""
    return re.sub(r"^\s*(step\s*)?\d+[.):]\s*", "", title, flags=re.I)


def steps_html(doc, steps, number, user, anchor, level=3):
    """steps: (number within the part, step) pairs; number: the chapter's, or None."""
    for i, step in steps:
        step.setdefault("label", f"{number}.{i}" if number else str(i))
        title = plain_title(step["title"])
        prefix = f"{number}.{i} " if number else ""
        if not step["items"]:
            # A step with nothing to do (e.g. an image already built): one line, not a heading.
            doc.add(f'<p class="emptystep" id="{anchor}-{i}">{prefix}Step {i}: {esc(title)} '
                    '<span class="note">— no command ran (nothing to do)</span></p>\n')
            continue
        doc.add(f'<h{level} id="{anchor}-{i}">{prefix}Step {i}: {esc(title)}</h{level}>\n')
        for rec in step["items"]:
            if rec["type"] == "command":
                terminal(doc, rec, user)
            else:
                check_line(doc, rec)


def section_summary(steps):
    commands = [r for s in steps for r in s["items"] if r["type"] == "command"]
    checks = [r for s in steps for r in s["items"] if r["type"] == "check"]
    hosts = sorted({r.get("host", "") for r in commands})
    total = sum(r.get("duration_ms") or 0 for r in commands)
    times = [r.get("time") for s in steps for r in s["items"] if r.get("time")]
    span = f"{fmt_time(min(times))} – {fmt_time(max(times))}" if times else ""
    return (f'<p class="summary">{len(steps)} steps, {len(commands)} commands on '
            f'{esc(", ".join(hosts) or "-")} (commands took {esc(fmt_duration(total))} in all), '
            f'{len(checks)} checks · {esc(span)}</p>\n')


def render(args):
    records = load_transcript(args.transcript)
    verify(records, args.require_result)
    sections = build_sections(records)
    repo = pathlib.Path(args.repo)
    facts = environment_facts(sections)
    files = container_files(repo)
    user = args.user or getpass.getuser()
    # The revision the run was made from (recorded by generate.sh), else the one here now.
    revision = facts["revision"] or git(repo, "describe", "--always", "--dirty", "--abbrev=12")
    commit = facts["commit"] or git(repo, "log", "-1", "--format=%H — %s (%cI)")
    times = sorted(r["time"] for r in records if r.get("time"))
    run_date = fmt_time(times[0]) if times else "?"
    run_end = fmt_time(times[-1]) if times else "?"
    elapsed = ""
    if times:
        parse = lambda t: datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ")
        elapsed = f" ({fmt_duration((parse(times[-1]) - parse(times[0])).total_seconds() * 1000)})"
    hosts = sorted({r.get("host", "") for r in records if r.get("type") == "command"} - {""})

    # Task sections in the order they ran. Their teardown steps go to the Teardown chapter; the
    # steps that made the extra Docker hosts (tests/e2e/hosts.sh) go to an appendix, so a task
    # reads as the user's steps.
    task_names = [n for n in sections if n != ENVIRONMENT]
    tasks, teardowns, plumbing = {}, {}, {}
    for name in task_names:
        steps = sections[name]
        cut = next((k for k, st in enumerate(steps) if TEARDOWN.search(st["title"])), len(steps))
        user_steps = [st for st in steps[:cut] if not PLUMBING.search(st["title"])]
        plumbing[name] = list(enumerate((st for st in steps[:cut] if PLUMBING.search(st["title"])), 1))
        tasks[name] = list(enumerate(user_steps, 1))
        teardowns[name] = list(enumerate(steps[cut:], len(user_steps) + 1))
    figures = {}
    for rec in records:
        if rec.get("type") == "figure":
            figures.setdefault(rec.get("section") or "Run", []).append(rec.get("text", ""))

    chapters = [("architecture", "Architecture"), ("files", "Container definitions"),
                ("environment", ENVIRONMENT)]
    chapters += [(f"task{i}", name) for i, name in enumerate(task_names, 1)]
    chapters += [("checks", "Verification results"), ("teardown", "Teardown")]
    numbers = {key: n for n, (key, _) in enumerate(chapters, 1)}
    appendices = []
    for i, name in enumerate(task_names, 1):
        if plumbing[name]:
            hosts_made = sorted({m.group(1) for _, st in plumbing[name]
                                 for m in [re.match(r"^Host ([a-z0-9]+):", st["title"])] if m})
            title = ("How host B was provided" if hosts_made == ["hostb"] else
                     f"How the hosts {', '.join(hosts_made)} were provided")
            key = f"appendix{i}"
            numbers[key] = chr(ord("A") + len(appendices))
            appendices.append((key, title, name))
    chapters += [(key, title) for key, title, _ in appendices]
    appendix_of = {name: key for key, _, name in appendices}
    # Step labels up front: the verification table names steps of every chapter.
    for st in sections.get(ENVIRONMENT, []):
        st["label"] = f"{numbers['environment']}.{sections[ENVIRONMENT].index(st) + 1}"
    for i, name in enumerate(task_names, 1):
        for j, st in tasks[name]:
            st["label"] = f"{numbers[f'task{i}']}.{j}"
        for j, st in teardowns[name]:
            st["label"] = f"{numbers['teardown']}.{i}, step {j}"
        for j, st in plumbing[name]:
            st["label"] = f"{numbers[appendix_of[name]]}.{j}"
    clean = not revision.endswith("-dirty")

    doc = Html()
    doc.add('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
            f"<title>{esc(TITLE)}</title>",
            f'<meta name="description" content="Deployment report of userstack, revision {esc(revision)}">',
            f'<meta name="dcterms.created" content="{esc(times[0] if times else "")}">')
    if args.css:
        doc.add(f'<link rel="stylesheet" href="{esc(args.css)}">')
    doc.add("</head><body>\n")

    # Title page.
    doc.add('<section class="titlepage">\n', f"<h1>{esc(TITLE)}</h1>\n" if args.target == "pdf" else "",
            '<p class="subtitle">Task 1: the three containers started by hand with <code>docker run</code>. '
            "Task 2: the same stack with <code>docker compose</code> on a second Docker host. "
            "Task 3: the stack on a Docker Swarm of three hosts, fed by a private registry, behind a "
            "load balancer.</p>\n",
            '<table class="facts">\n')
    for key, value in [("Project", "userstack (Rust reimplementation of a Flask users app, PostgreSQL + Redis)"),
                       ("Run", f"{run_date} – {run_end}{elapsed}"),
                       ("Hosts", ", ".join(hosts) or "?"),
                       ("Git revision", revision), ("Commit", commit),
                       ("Working tree", "clean: the run used exactly this commit" if clean else
                        "modified: uncommitted changes were present (-dirty)"),
                       ("Docker client", facts["client"]), ("Docker engine", facts["engine"]),
                       ("Docker Compose", facts["compose"]),
                       ("Generated by", "deploy/report/generate.sh, from the transcript of this run")]:
        doc.add(f"<tr><th>{esc(key)}</th><td>{esc(value)}</td></tr>\n")
    doc.add("</table>\n<h4>Images used by the run</h4>\n",
            '<table class="images"><thead><tr><th>Image</th><th>ID</th><th>Size</th></tr></thead><tbody>\n')
    for tags, image_id, size in facts["images"]:
        doc.add(f'<tr><td>{esc(tags)}</td><td class="mono">{esc(image_id)}</td>'
                f'<td class="num">{esc(fmt_size(size))}</td></tr>\n')
    if not facts["images"]:
        doc.add('<tr><td colspan="3">(no image inspection recorded)</td></tr>\n')
    doc.add("</tbody></table>\n</section>\n")

    # Contents (page numbers are filled in by weasyprint through target-counter in the CSS).
    if args.target == "pdf":
        doc.add('<section class="toc"><h2 class="notoc">Contents</h2><ul>\n')
        for key, name in chapters:
            doc.add(f'<li><a href="#{key}">{numbers[key]} {esc(name)}</a></li>\n')
        doc.add("</ul></section>\n")

    n = numbers["architecture"]
    doc.add(f'<section class="chapter"><h2 id="architecture">{n} Architecture</h2>\n',
            "<p>Three containers — the <code>userstack</code> web app, PostgreSQL 13 and Redis — on a "
            "user-defined network, PostgreSQL's data on a named volume. Host A builds the app image and "
            "runs task 1 with plain <code>docker run</code>; the images are shipped to host B over ssh "
            "(<code>docker save | ssh … docker load</code>), where task 2 runs the stack with "
            "<code>docker compose</code>. Drawn from <code>deploy/report/architecture.dot</code>. "
            "Task 3 runs the same images on a swarm of three more hosts: host A pushes them to a "
            "registry on the manager, the nodes pull them by digest, and an HAProxy task on every node "
            "balances over the app's three replicas (<code>deploy/swarm/stack.yaml</code>).</p>\n",
            f'<figure><img src="{esc(args.figure)}" alt="Architecture: host A and host B, the three '
            f'containers, their networks and the volume" width="{args.figure_width}">'
            "<figcaption>The two hosts, the three containers, their networks and the volume.</figcaption>"
            "</figure>\n</section>\n")

    n = numbers["files"]
    doc.add(f'<section class="chapter"><h2 id="files">{n} Container definitions</h2>\n',
            "<p>Every Dockerfile in the repository and the compose file, in full, as they were in the "
            "working tree when the run was made.</p>\n")
    for i, (name, text) in enumerate(files, 1):
        doc.add(f'<h3 id="file-{i}">{n}.{i} <code>{esc(name)}</code></h3>\n',
                f'<pre class="file">{esc(CONTROL.sub("", text).rstrip(chr(10)))}</pre>\n')
    doc.add("</section>\n")

    n = numbers["environment"]
    doc.add(f'<section class="chapter"><h2 id="environment">{n} {ENVIRONMENT}</h2>\n')
    env_steps = sections.get(ENVIRONMENT, [])
    doc.add(section_summary(env_steps))
    steps_html(doc, list(enumerate(env_steps, 1)), n, user, "environment")
    doc.add("</section>\n")

    for i, name in enumerate(task_names, 1):
        key = f"task{i}"
        n = numbers[key]
        doc.add(f'<section class="chapter"><h2 id="{key}">{n} {esc(name)}</h2>\n')
        doc.add(section_summary([st for _, st in tasks[name]]))
        if name in appendix_of:
            a = appendix_of[name]
            doc.add(f'<p class="note">The Docker hosts this part ran on were made for the run by '
                    f'<code>tests/e2e/hosts.sh</code>; how: <a href="#{a}">appendix {numbers[a]}</a>.</p>\n')
        if figures.get(name):
            doc.add('<h3 class="figures">The figures of this run</h3>\n<table class="figures"><tbody>\n')
            for text in figures[name]:
                doc.add(f'<tr><td class="mono">{esc(text)}</td></tr>\n')
            doc.add("</tbody></table>\n")
        steps_html(doc, tasks[name], n, user, key)
        if teardowns[name]:
            first, last = teardowns[name][0][0], teardowns[name][-1][0]
            which = f"Step {first}" if first == last else f"Steps {first}–{last}"
            doc.add(f'<p class="note">{which} of this part, its teardown, in chapter '
                    f'{numbers["teardown"]}.</p>\n')
        doc.add("</section>\n")

    n = numbers["checks"]
    all_checks = [r for r in records if r.get("type") == "check"]
    passed = sum(1 for r in all_checks if r.get("ok") is True)
    doc.add(f'<section class="chapter"><h2 id="checks">{n} Verification results</h2>\n',
            f'<p class="summary">{passed} of {len(all_checks)} checks passed.</p>\n',
            '<table class="checks"><thead><tr><th>#</th><th>Step</th><th>Check</th>'
            "<th>Result</th></tr></thead><tbody>\n")
    part = None
    for i, rec in enumerate(all_checks, 1):
        ok = rec.get("ok") is True
        if rec.get("section") != part:
            part = rec.get("section")
            doc.add(f'<tr class="part"><th colspan="4">{esc(part or "Run")}</th></tr>\n')
        doc.add(f'<tr><td class="num">{i}</td>'
                f'<td>{esc(rec["_step"].get("label", "") if "_step" in rec else "")} '
                f'{esc(plain_title(rec.get("step", "")))}</td>'
                f'<td>{esc(rec.get("name", ""))}</td>'
                f'<td class="{"pass" if ok else "fail"}">{"PASS" if ok else "FAIL"}</td></tr>\n')
    doc.add("</tbody></table>\n</section>\n")

    n = numbers["teardown"]
    doc.add(f'<section class="chapter"><h2 id="teardown">{n} Teardown</h2>\n',
            "<p>What each part removed when it finished: containers, networks, volumes, and the extra "
            "Docker hosts themselves.</p>\n")
    any_teardown = False
    for i, name in enumerate(task_names, 1):
        if teardowns[name]:
            any_teardown = True
            doc.add(f'<h3 class="part">{n}.{i} {esc(name)}</h3>\n')
            steps_html(doc, teardowns[name], None, user, f"teardown{i}", level=4)
    if not any_teardown:
        doc.add('<p class="note">(no teardown step recorded)</p>\n')
    doc.add("</section>\n")

    for key, title, name in appendices:
        n = numbers[key]
        doc.add(f'<section class="chapter"><h2 id="{key}">{n} {esc(title)}</h2>\n',
                f'<p>For <a href="#task{task_names.index(name) + 1}">{esc(name)}</a>. On this one machine, '
                "each extra Docker host is a network namespace with its own dockerd (own data root, "
                "exec root, pidfile, bridge subnet and configuration file), its own sshd, hostname and "
                "mount namespace, joined to this machine by one Linux bridge "
                "(<code>tests/e2e/hosts.sh</code>). On real servers these steps do not exist: the "
                "hosts are simply there and reachable over ssh.</p>\n")
        doc.add(section_summary([st for _, st in plumbing[name]]))
        steps_html(doc, plumbing[name], n, user, key)
        doc.add("</section>\n")
    doc.add("</body></html>\n")

    pathlib.Path(args.out).write_text(doc.text(), encoding="utf-8")


def reference_docx(default, out):
    """Pandoc's default reference.docx, with code blocks as terminal snapshots: light monospace
    text on a dark background (paragraph style "Source Code"; its runs use the character style
    "Verbatim Char", which inline code shares, so that one sets only the font)."""
    mono = ('<w:rFonts w:ascii="DejaVu Sans Mono" w:hAnsi="DejaVu Sans Mono" w:cs="DejaVu Sans Mono" '
            'w:eastAsia="DejaVu Sans Mono"/>')
    source_code = (
        '<w:style w:type="paragraph" w:customStyle="1" w:styleId="SourceCode">'
        '<w:name w:val="Source Code"/><w:basedOn w:val="Normal"/><w:link w:val="VerbatimChar"/>'
        '<w:pPr><w:wordWrap w:val="1"/><w:shd w:val="clear" w:color="auto" w:fill="1E1E1E"/>'
        '<w:spacing w:before="60" w:after="120" w:line="240" w:lineRule="auto"/>'
        '<w:ind w:left="0" w:right="0"/></w:pPr>'
        f'<w:rPr>{mono}<w:color w:val="E6E6E6"/><w:sz w:val="15"/><w:szCs w:val="15"/></w:rPr></w:style>')
    verbatim = (
        '<w:style w:type="character" w:customStyle="1" w:styleId="VerbatimChar">'
        '<w:name w:val="Verbatim Char"/><w:basedOn w:val="DefaultParagraphFont"/>'
        f'<w:rPr>{mono}<w:sz w:val="16"/><w:szCs w:val="16"/></w:rPr></w:style>')
    with zipfile.ZipFile(default) as src:
        entries = [(info, src.read(info.filename)) for info in src.infolist()]
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info, data in entries:
            if info.filename == "word/styles.xml":
                xml = data.decode("utf-8")
                for style_id in ("SourceCode", "VerbatimChar"):
                    xml = re.sub(rf'<w:style [^>]*w:styleId="{style_id}"[^>]*>.*?</w:style>', "", xml,
                                 flags=re.S)
                if "</w:styles>" not in xml:
                    raise RunFailed("pandoc's reference.docx has no styles")
                data = xml.replace("</w:styles>", source_code + verbatim + "</w:styles>").encode("utf-8")
            dst.writestr(info, data)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("html", help="write the report as HTML")
    p.add_argument("--transcript", required=True)
    p.add_argument("--repo", default=str(pathlib.Path(__file__).resolve().parents[2]))
    p.add_argument("--figure", required=True, help="architecture image, relative to the HTML file")
    p.add_argument("--figure-width", default="100%")
    p.add_argument("--css", help="stylesheet, relative to the HTML file")
    p.add_argument("--target", choices=("pdf", "docx"), default="pdf",
                   help="docx: no contents list (its page numbers come from weasyprint) and the title "
                        "as the document title only (pandoc makes one of <title>)")
    p.add_argument("--user", help="user name shown in the prompts (default: the current user)")
    p.add_argument("--require-result", action="append", default=[], metavar="SCRIPT",
                   help="refuse unless the transcript records SCRIPT exiting 0 (repeatable)")
    p.add_argument("--out", required=True)
    p = sub.add_parser("verify", help="exit 2 naming what failed, unless the run succeeded")
    p.add_argument("--transcript", required=True)
    p.add_argument("--require-result", action="append", default=[], metavar="SCRIPT")
    p = sub.add_parser("reference-docx", help="style pandoc's default reference.docx")
    p.add_argument("default")
    p.add_argument("out")
    args = parser.parse_args()
    try:
        if args.command == "html":
            render(args)
        elif args.command == "verify":
            verify(load_transcript(args.transcript), args.require_result)
        else:
            reference_docx(args.default, args.out)
    except RunFailed as e:
        print(f"render.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
