#!/usr/bin/env python3
"""WebSocket fan-out benchmark: chatroom's web listener beside its native TCP listener and beside a
broadcast server on the ``websockets`` library (benchmarks/websockets_server.py).

One room: ``--receivers`` clients that only read and ``--senders`` clients that each send
``--messages`` messages as fast as the server takes them (and read what the other senders say).
A run is timed from the senders' first byte to the moment the last receiver has every message;
the figure is deliveries per second (messages times receivers over that time). The server runs
pinned to one core and this load generator to another when there are two.

The generator counts bytes, not frames, so it stays far cheaper than the servers it measures:
chatroom runs with ``--presence-limit 0`` (no JOIN/PART to others) and every message has the same
length, so after its greeting a receiver's bytes are exactly its messages' frames (or lines).

    .venv/bin/python benchmarks/ws_bench.py [--receivers 100 --senders 10 --messages 2000]
"""

import argparse
import base64
import os
import re
import selectors
import socket
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = "x" * 40  #: every message's text: fixed, so every frame has one known size
MASK = b"\x01\x02\x03\x04"  #: the generator's masking key (clients must mask; any key will do)
#: Goal of the issue: chatroom over WebSocket at least this many times the websockets baseline.
GOAL = 3.0
WAIT = 60.0


def client_frame(payload):
    head = struct.pack("!BB", 0x81, 0x80 | len(payload)) if len(payload) < 126 else \
        struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def server_frame_size(payload_len):
    return payload_len + (2 if payload_len < 126 else 4)


def start(cmd, pattern, cpu):
    def pin():
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT, preexec_fn=pin)
    ports = {}
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and len(ports) < len(pattern):
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"{cmd[1]} exited: {proc.poll()}")
        for key, rx in pattern.items():
            m = re.search(rx, line)
            if m:
                ports[key] = int(m.group(1))
    return proc, ports


class Conn:
    __slots__ = ("sock", "kind", "out", "got", "ready", "buf")

    def __init__(self, port, kind, ws):
        self.sock = socket.create_connection(("127.0.0.1", port), WAIT)
        self.kind = kind  # "receiver" or "sender"
        self.out = b""
        self.got = 0
        self.buf = b""
        self.ready = False
        if ws:
            key = base64.b64encode(os.urandom(16)).decode()
            proto = f"Sec-WebSocket-Protocol: {ws}\r\n" if ws != "-" else ""
            self.sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                               f"Sec-WebSocket-Version: 13\r\n{proto}\r\n").encode())
            while b"\r\n\r\n" not in self.buf:
                self.buf += self.sock.recv(4096)
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head

    def greeted(self, frames):
        """Read until ``frames`` (WebSocket frames, or lines when ``frames`` is negative) came."""
        want = abs(frames)
        while True:
            if frames < 0:
                count = self.buf.count(b"\n")
                if count >= want:
                    cut = 0
                    for _ in range(want):
                        cut = self.buf.index(b"\n", cut) + 1
                    self.buf = self.buf[cut:]
                    return
            else:
                pos, seen = 0, 0
                while seen < want and pos + 2 <= len(self.buf):
                    size = self.buf[pos + 1] & 0x7F
                    head = 2
                    if size == 126:
                        size, head = struct.unpack("!H", self.buf[pos + 2:pos + 4])[0], 4
                    if pos + head + size > len(self.buf):
                        break
                    pos += head + size
                    seen += 1
                if seen == want:
                    self.buf = self.buf[pos:]
                    return
            self.buf += self.sock.recv(4096)


def run(name, port, ws, greeting, msg_size, receivers, senders, messages, cpu):
    """One run; returns deliveries per second."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    conns = [Conn(port, "receiver", ws) for _ in range(receivers)]
    conns += [Conn(port, "sender", ws) for _ in range(senders)]
    for c in conns:
        if greeting:
            c.greeted(greeting)
    line = ("SEND " + TEXT).encode() if name != "websockets" else TEXT.encode()
    one = client_frame(line) if ws else line + b"\n"
    expect = senders * messages * msg_size  # bytes each receiver must get
    sel = selectors.DefaultSelector()
    for c in conns:
        c.sock.setblocking(False)
        c.got = len(c.buf)
        if c.kind == "sender":
            c.out = one * messages
        sel.register(c.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0), c)
    waiting = sum(1 for c in conns if c.kind == "receiver" and c.got < expect)
    t0 = time.perf_counter()
    deadline = time.monotonic() + WAIT
    while waiting:
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: {waiting} receivers short after {WAIT:.0f} s")
        for key, events in sel.select(1.0):
            c = key.data
            if events & selectors.EVENT_READ:
                try:
                    data = c.sock.recv(262144)
                except BlockingIOError:
                    data = None
                if data == b"":
                    raise SystemExit(f"{name}: the server closed a {c.kind}")
                if data and c.kind == "receiver":
                    before = c.got
                    c.got += len(data)
                    if before < expect <= c.got:
                        waiting -= 1
            if events & selectors.EVENT_WRITE and c.out:
                try:
                    sent = c.sock.send(c.out[:262144])
                except BlockingIOError:
                    sent = 0
                c.out = c.out[sent:]
                if not c.out:
                    sel.modify(c.sock, selectors.EVENT_READ, c)
    elapsed = time.perf_counter() - t0
    for c in conns:
        c.sock.close()
    return senders * messages * receivers / elapsed


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--receivers", type=int, default=100)
    p.add_argument("--senders", type=int, default=10)
    p.add_argument("--messages", type=int, default=2000, help="per sender")
    p.add_argument("--runs", type=int, default=3, help="best of this many per server")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()
    two = os.cpu_count() >= 2
    server_cpu, load_cpu = (0, 1) if two else (None, None)
    py = sys.executable
    chat = [py, "bin/chat-server", "--port", "0", "--web-port", "0", "--flood-rate", "0",
            "--presence-limit", "0", "--outbox-limit", str(64 << 20), "--outbox-soft-limit", "0",
            "--max-line", "4096", "--log-level", "WARNING"]
    id_len = len("127.0.0.1:65535")
    native_msg = len(f"MSG lobby {'1' * id_len} {TEXT}\n")
    cases = [
        # name, server command, port patterns, which port, subprotocol, greeting, bytes per message
        ("chatroom native (TCP)", chat, "native", None, -2, native_msg),
        ("chatroom WebSocket", chat, "web", "chatroom.v1", 2, server_frame_size(native_msg - 1)),
        ("websockets broadcast()", [py, "benchmarks/websockets_server.py"], "native", "-", 0,
         server_frame_size(len(TEXT))),
    ]
    patterns = {"native": r"^Listening on \S+:(\d+)", "web": r"Web listening on \S+:(\d+)"}
    results = {}
    for label, cmd, which, ws, greeting, size in cases:
        best = 0.0
        for _ in range(args.runs):
            needed = {"native": patterns["native"]}
            if which == "web":
                needed["web"] = patterns["web"]
            if cmd is chat:
                cmd2 = cmd + ["--log-level", "INFO"]  # the Listening lines are INFO
            else:
                cmd2 = cmd
            proc, ports = start(cmd2, needed, server_cpu)
            try:
                name = "websockets" if "websockets" in label else "chatroom"
                rate = run(name, ports[which], ws, greeting, size, args.receivers, args.senders,
                           args.messages, load_cpu)
            finally:
                proc.terminate()
                proc.wait(WAIT)
            best = max(best, rate)
        results[label] = best
        print(f"{label:26s} {best:12,.0f} deliveries/s", flush=True)
    ratio = results["chatroom WebSocket"] / results["websockets broadcast()"]
    vs_native = results["chatroom WebSocket"] / results["chatroom native (TCP)"]
    print(f"chatroom WebSocket / websockets broadcast(): {ratio:.1f}x (goal >= {GOAL:g}x)")
    print(f"chatroom WebSocket / chatroom native TCP:    {vs_native:.2f}x")
    if args.markdown:
        print(f"\n| server ({args.receivers} receivers, {args.senders} senders, "
              f"{args.messages} messages each) | deliveries/s |\n|---|---|")
        for label, rate in results.items():
            print(f"| {label} | {rate:,.0f} |")
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
