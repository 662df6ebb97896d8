"""A fast local destination that notes when each benchmark webhook arrived.

``python bench/destination.py --port P --out FILE``: HTTP/1.1 keep-alive on any number of
connections, answers every request ``200`` with an empty body at once, and for each body
that starts ``{"n":NNNNNNNN`` (what `bench/loadgen.py` sends) notes ``[n,
time.monotonic_ns()]`` when its last byte was read. ``GET /arrivals`` answers that list
so far (JSON), so a run can read it while the destination goes on serving; on SIGTERM it
writes the list to ``FILE`` and exits. One process, a `selectors` loop: far cheaper per
request than the daemons it measures.
"""

from __future__ import annotations

import argparse
import json
import selectors
import signal
import socket
import time

HEADER_END = b"\r\n\r\n"
ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
MARK = b'{"n":'
ARRIVALS = b"GET /arrivals "


def main(args: argparse.Namespace) -> None:
    arrivals: list[tuple[int, int]] = []
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(128)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    buffers: dict[socket.socket, bytes] = {}
    while not stop:
        for key, _ in selector.select(0.1):
            if key.data is None:
                sock, _ = listener.accept()
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ, True)
                buffers[sock] = b""
                continue
            sock = key.fileobj  # type: ignore[assignment]
            data = sock.recv(262144)
            if not data:
                selector.unregister(sock)
                del buffers[sock]
                sock.close()
                continue
            buffer = buffers[sock] + data
            while (end := buffer.find(HEADER_END)) >= 0:
                length = 0
                for line in buffer[:end].split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                total = end + len(HEADER_END) + length
                if len(buffer) < total:
                    break
                content = buffer[end + len(HEADER_END):total]
                if content.startswith(MARK):
                    arrivals.append((int(content[5:13]), time.monotonic_ns()))
                    sock.sendall(ANSWER)
                elif buffer.startswith(ARRIVALS):
                    listed = json.dumps(arrivals).encode()
                    sock.setblocking(True)  # large: written whole (the runner waits for it)
                    sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (len(listed), listed))
                    sock.setblocking(False)
                else:
                    sock.sendall(ANSWER)
                buffer = buffer[total:]
            buffers[sock] = buffer
    with open(args.out, "w") as out:
        json.dump(arrivals, out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    main(parser.parse_args())
