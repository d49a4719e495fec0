"""Opens CONNECTIONS keep-alive connections to 127.0.0.1:PORT, sends `GET PATH` on each, reads
every answer whole, touches READY_FILE, and then holds the connections, idle, until killed.

    python3 bench/hold_connections.py PORT CONNECTIONS PATH READY_FILE

Used by bench/rss-idle-connections.sh to measure what a server holds per connection between
requests.
"""

import resource
import socket
import sys
import time


def read_answer(sock: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("the server closed a connection before answering")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("the server closed a connection in the middle of an answer")
        body += chunk


def main() -> None:
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    port, count, path, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < count + 50:
        raise SystemExit(f"{count} connections need more than the {hard} open files allowed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (count + 50, hard))
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(request)
        held.append(sock)
    for sock in held:
        read_answer(sock)
    open(ready, "w").close()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
