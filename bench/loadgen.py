"""An open-loop HTTP/1.1 load generator: POSTs on a fixed schedule, whatever the answers.

``python bench/loadgen.py --port P --path /h/live --rate R --seconds S --connections C
--out FILE`` sends request ``i`` at ``start + i / R`` on the first of ``C`` keep-alive
connections that is free (one request in flight per connection, no pipelining). A request
whose time has come while every connection waits for an answer waits too, and its latency
counts from its *scheduled* time, not from when it could be written (no coordinated
omission, as in wrk2). ``--rate 0`` sends back to back (closed loop) for ``--seconds``.

Each body is ``{"n":00000042,"pad":"xxx..."}`` (``--size`` bytes in all): the number lets
the destination (`bench/destination.py`) report when each one arrived. The result file
holds, per request, ``[n, scheduled_ns, written_ns, answered_ns, status]`` in
``time.monotonic_ns()`` (CLOCK_MONOTONIC, the same clock in every process here), plus its
own CPU seconds. ``--first N`` numbers the requests from N (a warm-up run's numbers then
differ from the measured run's). ``--deadline D`` gives up, D seconds after the start,
whatever is not answered yet (status 0, written_ns 0 if never written; counted in
``abandoned``): a target that falls far behind makes a bounded run, not an endless one.

One process, non-blocking sockets and a `select()` loop: a few tens of microseconds of
CPU per request, so it is not the bottleneck at the rates the benchmark uses (its own
baseline, the same load straight at the destination, shows that). `select()`, not epoll:
epoll's timeout is in whole milliseconds (Python rounds it up), which wrote each request
up to 1 ms after its time, 0.55 ms at the median at 2,000/s (measured: the records'
written - scheduled); select's is in microseconds, and the timer slack is cut to 1 us
(Linux), so a request is written within tens of microseconds of its time on an idle core.
On a busy one it asks for a higher priority (nice SENDER_NICE, allowed as root; the
result's ``nice`` says what it got): the senders of a real edge do not wait for its CPU,
and a sender written late would count its own delay as the target's latency.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import selectors
import socket
import sys
import time
from collections import deque

HEADER_END = b"\r\n\r\n"
PR_SET_TIMERSLACK = 29  # <linux/prctl.h>
TIMER_SLACK_NS = 1_000  # the default 50 us would be most of a fast answer's time
# Above the daemons measured (nice 0), so the sender keeps its schedule on a busy machine.
SENDER_NICE = -10
START_DELAY_NS = 50_000_000  # the first request's time: after the connections are set up
IDLE_WAIT = 0.05  # seconds a wait lasts when nothing is due (answers end it sooner)


def raise_priority() -> int:
    """Ask for nice SENDER_NICE (root only); the niceness this process runs at."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, SENDER_NICE)
    except PermissionError:
        pass  # an unprivileged run keeps its priority (the late share shows the effect)
    return os.getpriority(os.PRIO_PROCESS, 0)


def cut_timer_slack() -> None:
    """Let this process's timed waits end within TIMER_SLACK_NS of when they are due."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0)


def body(n: int, size: int) -> bytes:
    head = b'{"n":%08d,"pad":"' % n
    return head + b"x" * max(0, size - len(head) - 2) + b'"}'


class Connection:
    __slots__ = ("buffer", "closing", "current", "sock")

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buffer = b""
        self.closing = False  # the last answer said "connection: close"
        self.current: list[int] | None = None  # the record of the request in flight

    def answer(self) -> int | None:
        """The status of a complete answer in the buffer (consumed), or None."""
        end = self.buffer.find(HEADER_END)
        if end < 0:
            return None
        head = self.buffer[:end].decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                self.closing = True
        total = end + len(HEADER_END) + length
        if len(self.buffer) < total:
            return None
        self.buffer = self.buffer[total:]
        return int(head.split(" ", 2)[1])


def run(args: argparse.Namespace) -> dict[str, object]:
    cut_timer_slack()
    nice = raise_priority()
    cpu0 = time.process_time()
    conns = [Connection(args.port) for _ in range(args.connections)]
    selector = selectors.SelectSelector()  # microsecond timeouts (see the docstring)
    for conn in conns:
        selector.register(conn.sock, selectors.EVENT_READ, conn)
    free = deque(conns)
    due: deque[list[int]] = deque()  # scheduled, not yet written
    records: list[list[int]] = []
    prefix = (f"POST {args.path} HTTP/1.1\r\nhost: 127.0.0.1:{args.port}\r\n"
              f"content-type: application/json\r\ncontent-length: {args.size}\r\n"
              "user-agent: relayd-bench\r\n\r\n").encode()
    closed_loop = args.rate <= 0
    interval_ns = 0 if closed_loop else int(1e9 / args.rate)
    total = 0 if closed_loop else int(args.rate * args.seconds)
    start = time.monotonic_ns() + START_DELAY_NS
    end_ns = start + int(args.seconds * 1e9)
    deadline_ns = None if args.deadline is None else start + int(args.deadline * 1e9)
    scheduled = 0
    answered = 0
    reconnects = 0
    abandoned = 0
    while True:
        now = time.monotonic_ns()
        if deadline_ns is not None and now >= deadline_ns:
            # The target fell too far behind: what is still waiting, to be written or for
            # its answer, is given up (status 0; answered_ns = now, a lower bound of its
            # latency), so a slow target bounds the run instead of stretching it.
            waiting = list(due) + [c.current for c in conns if c.current is not None]
            for record in waiting:
                record[3] = now
                records.append(record)
            abandoned = len(waiting)
            break
        if closed_loop:
            if now >= start and now < end_ns and free and not due:
                due.append([args.first + scheduled, now, 0, 0, 0])
                scheduled += 1
        else:
            while scheduled < total and start + scheduled * interval_ns <= now:
                due.append([args.first + scheduled, start + scheduled * interval_ns, 0, 0, 0])
                scheduled += 1
        while due and free:
            conn = free.popleft()
            record = due.popleft()
            record[2] = time.monotonic_ns()
            conn.current = record
            conn.sock.sendall(prefix + body(record[0], args.size))
        finished = (answered == scheduled and not due
                    and (now >= end_ns if closed_loop else scheduled == total))
        if finished:
            break
        if closed_loop:
            timeout = 0.0 if (free and now >= start and now < end_ns) else IDLE_WAIT
            if now < start:
                timeout = (start - now) / 1e9
        elif scheduled < total:
            timeout = max(0.0, (start + scheduled * interval_ns - now) / 1e9)
        else:
            timeout = IDLE_WAIT
        if deadline_ns is not None:
            timeout = min(timeout, max(0.0, (deadline_ns - now) / 1e9))
        for key, _ in selector.select(timeout):
            conn = key.data
            data = conn.sock.recv(65536)
            if not data:  # closed by the server: the request in flight failed (status 0)
                selector.unregister(conn.sock)
                conn.sock.close()
                conns.remove(conn)
                if conn in free:
                    free.remove(conn)
                if conn.current is not None:
                    conn.current[3] = time.monotonic_ns()
                    records.append(conn.current)
                    answered += 1
                conn = Connection(args.port)
                selector.register(conn.sock, selectors.EVENT_READ, conn)
                conns.append(conn)
                free.append(conn)
                reconnects += 1
                continue
            conn.buffer += data
            status = conn.answer()
            if status is not None and conn.current is not None:
                conn.current[3] = time.monotonic_ns()
                conn.current[4] = status
                records.append(conn.current)
                conn.current = None
                answered += 1
                if conn.closing:  # e.g. hypercorn after 1,000 requests on a connection
                    selector.unregister(conn.sock)
                    conn.sock.close()
                    conns.remove(conn)
                    conn = Connection(args.port)
                    selector.register(conn.sock, selectors.EVENT_READ, conn)
                    conns.append(conn)
                    reconnects += 1
                free.append(conn)
    for conn in conns:
        conn.sock.close()
    return {"rate": args.rate, "connections": args.connections, "seconds": args.seconds,
            "size": args.size, "reconnects": reconnects, "abandoned": abandoned,
            "nice": nice, "cpu_seconds": time.process_time() - cpu0, "records": records}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--rate", type=float, required=True, help="requests/s; 0: back to back")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--size", type=int, default=1024, help="body bytes")
    parser.add_argument("--first", type=int, default=0, help="the number of the first request")
    parser.add_argument("--deadline", type=float,
                        help="seconds from the start after which whatever is unanswered is "
                             "given up (default: wait for every answer)")
    parser.add_argument("--out", required=True)
    arguments = parser.parse_args()
    if arguments.deadline is not None and arguments.deadline < arguments.seconds:
        parser.error("--deadline must be at least --seconds")
    result = run(arguments)
    with open(arguments.out, "w") as out:
        json.dump(result, out)
