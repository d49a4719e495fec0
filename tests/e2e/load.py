#!/usr/bin/env python3
"""A bounded HTTP load for the fault tests: a few workers, a fixed rate each, a fixed mix.

Each worker keeps one keep-alive connection (a new one after any error) and cycles through the
given base URLs. Every request counts: a 2xx is ok, anything else is a failure by kind (the
status, or the connection error). POST /users bodies carry unique e-mails; the id of every 201
(an acknowledged write) is written to --created, so the test can check none was lost.

With --token-file, every request carries `Authorization: Bearer <its first token>` (the users'
routes need one; the others ignore it).

Stops after --duration seconds, or earlier once --stop-file exists. Prints one JSON object:
{"requests", "ok", "failed", "by_kind": {kind: n}, "created", "first_failure_s", "last_failure_s"}.
Standard library only.
"""

import argparse
import http.client
import json
import os
import threading
import time
import urllib.parse
import uuid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", action="append", required=True, help="base URL (repeatable)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--rate", type=float, default=20.0, help="requests per second per worker")
    p.add_argument("--duration", type=float, default=20.0, help="seconds (upper bound)")
    p.add_argument("--stop-file", help="stop as soon as this file exists")
    p.add_argument("--write-every", type=int, default=0, help="every Nth request is a POST /users (0: none)")
    p.add_argument("--created", help="append the id of every 201 here, one per line")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--token-file", help="a file of bearer tokens, one per line (the first is sent)")
    args = p.parse_args()
    if not (1 <= args.workers <= 16 and 0 < args.rate <= 200 and 0 < args.duration <= 600):
        p.error("workers 1..16, rate 0..200/s, duration 0..600 s: a bounded load")

    headers = {}
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            tokens = [t.strip() for t in f if t.strip() and not t.lstrip().startswith("#")]
        if not tokens:
            p.error(f"no token in {args.token_file}")
        headers["Authorization"] = f"Bearer {tokens[0]}"
    targets = [urllib.parse.urlsplit(u) for u in args.url]
    reads = ["/", "/users?limit=5", "/healthz"]
    lock = threading.Lock()
    stats = {"requests": 0, "ok": 0, "failed": 0, "by_kind": {}, "created": 0}
    failures: list[float] = []
    created_ids: list[str] = []
    start = time.monotonic()
    deadline = start + args.duration

    def stopping() -> bool:
        return time.monotonic() >= deadline or bool(args.stop_file and os.path.exists(args.stop_file))

    def worker(n: int) -> None:
        conns: dict[int, http.client.HTTPConnection] = {}
        i = 0
        next_at = time.monotonic()
        while not stopping():
            t = targets[(n + i) % len(targets)]
            write = args.write_every > 0 and i % args.write_every == args.write_every - 1
            path = "/users" if write else reads[i % len(reads)]
            i += 1
            kind = None
            body_id = None
            try:
                conn = conns.get(id(t))
                if conn is None:
                    conn = http.client.HTTPConnection(t.hostname, t.port or 80, timeout=args.timeout)
                    conns[id(t)] = conn
                if write:
                    email = f"load-{uuid.uuid4().hex}@example.com"
                    body = json.dumps({"name": "Load Test", "email": email})
                    conn.request("POST", path, body, {"Content-Type": "application/json", **headers})
                else:
                    conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if 200 <= resp.status < 300:
                    if write and resp.status == 201:
                        body_id = json.loads(data)["id"]
                else:
                    kind = f"HTTP {resp.status}"
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conns.pop(id(t), None)
            except (TimeoutError, OSError, http.client.HTTPException) as e:
                kind = type(e).__name__
                c = conns.pop(id(t), None)
                if c is not None:
                    c.close()
            with lock:
                stats["requests"] += 1
                if kind is None:
                    stats["ok"] += 1
                    if body_id is not None:
                        stats["created"] += 1
                        created_ids.append(str(body_id))
                else:
                    stats["failed"] += 1
                    stats["by_kind"][kind] = stats["by_kind"].get(kind, 0) + 1
                    failures.append(time.monotonic() - start)
            next_at += 1.0 / args.rate
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                next_at = time.monotonic()  # behind: no burst to catch up

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.workers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if args.created:
        with open(args.created, "a", encoding="utf-8") as f:
            f.writelines(i + "\n" for i in created_ids)
    stats["duration_s"] = round(time.monotonic() - start, 1)
    stats["first_failure_s"] = round(min(failures), 1) if failures else None
    stats["last_failure_s"] = round(max(failures), 1) if failures else None
    print(json.dumps(stats, sort_keys=True))


if __name__ == "__main__":
    main()
