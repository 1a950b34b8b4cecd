#!/usr/bin/env python3
"""What TLS and password hashing cost: ``make bench`` runs this after the side-by-side benchmark.

1. Fan-out, 100 receivers and 10 senders in one room, over plain TCP and over TLS, against one
   server listening on both (``--port`` and ``--tls-port``, a throwaway ``trustme`` certificate).
2. The p99 latency of a chat (10 receivers, 1 sender at a steady rate) with no logins, then while
   other connections log in 20 times a second (each login an scrypt hash, in the server's worker
   threads). The hashes must not show in the chat's latency: the event loop never waits for them.

Prints a markdown table and writes ``benchmarks/results/accounts_tls.json``.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from chatroom.load.servers import ServerProcess, chat_server_command  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
LOGINS_PER_SECOND = 20
LOGIN_CONNECTIONS = 4  # each logs in to its own account 5 times a second (no failure limits)


def certificate(directory):
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    key_path, cert_path = os.path.join(directory, "key.pem"), os.path.join(directory, "cert.pem")
    cert.private_key_pem.write_to_path(key_path)
    with open(cert_path, "wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    return cert_path, key_path


def start_server(directory, *extra):
    cert, key = certificate(directory)
    server = ServerProcess(chat_server_command(
        "--tls-port", "0", "--tls-cert", cert, "--tls-key", key,
        "--data-dir", os.path.join(directory, "data"), *extra))
    return server


def tls_port(server):
    """The TLS port from the server's ``TLS listening on HOST:PORT`` line."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in list(server.tail):
            if line.startswith("TLS listening on "):
                return int(line.rsplit(":", 1)[1])
        time.sleep(0.05)
    raise SystemExit("the server printed no 'TLS listening on'")


def chat_load(port, args, tls=False):
    cmd = [sys.executable, os.path.join(ROOT, "bin", "chat-load"), "--json", "--port", str(port),
           *(["--tls"] if tls else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"chat-load failed: {done.stderr or done.stdout}")
    return json.loads(done.stdout)


def line_client(port):
    sock = socket.create_connection(("127.0.0.1", port), 10)
    f = sock.makefile("rwb")
    f.readline()  # HELLO
    return sock, f


def register(port, name, password):
    sock, f = line_client(port)
    f.write(f"NICK {name}\nREGISTER {password}\nPING done\n".encode())
    f.flush()
    while not f.readline().startswith(b"PONG"):
        pass
    sock.close()


class Logins(threading.Thread):
    """``LOGIN_CONNECTIONS`` connections logging in, together ``rate`` times a second."""

    def __init__(self, port, rate):
        super().__init__(daemon=True)
        self.port, self.rate = port, rate
        self.stop = threading.Event()
        self.answered = 0

    def run(self):
        conns = []
        for i in range(LOGIN_CONNECTIONS):
            register(self.port, f"bench{i}", f"password {i}")
            conns.append(line_client(self.port))
        interval = LOGIN_CONNECTIONS / self.rate
        def one(i, f):
            next_at = time.monotonic()
            while not self.stop.is_set():
                f.write(f"LOGIN bench{i} password {i}\n".encode())
                f.flush()
                while not f.readline().startswith((b"ACCOUNT", b"ERR")):
                    pass
                self.answered += 1
                next_at += interval
                self.stop.wait(max(0.0, next_at - time.monotonic()))
        threads = [threading.Thread(target=one, args=(i, f), daemon=True) for i, (_, f) in enumerate(conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for sock, _ in conns:
            sock.close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="shorter runs")
    args = p.parse_args(argv)
    duration = "3" if args.quick else "10"
    fanout = ["--receivers", "100", "--senders", "10", "--messages", "2000" if args.quick else "20000",
              "--duration", duration, "--procs", "2"]
    chat = ["--receivers", "10", "--senders", "1", "--rate", "200", "--messages",
            str(int(float(duration) * 200)), "--duration", duration, "--check", "all"]
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        server = start_server(directory)
        try:
            port = tls_port(server)
            results["fanout_plain"] = chat_load(server.port, fanout)
            results["fanout_tls"] = chat_load(port, fanout, tls=True)
        finally:
            server.stop()
    with tempfile.TemporaryDirectory() as directory:
        server = start_server(directory)
        try:
            results["chat_no_logins"] = chat_load(server.port, chat)
            logins = Logins(server.port, LOGINS_PER_SECOND)
            logins.start()
            time.sleep(1.0)  # the accounts are registered and the logins under way
            started = logins.answered
            t0 = time.monotonic()
            results["chat_with_logins"] = chat_load(server.port, chat)
            results["logins_per_second"] = round((logins.answered - started) / (time.monotonic() - t0), 1)
            logins.stop.set()
            logins.join(10)
        finally:
            server.stop()
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "accounts_tls.json"), "w") as f:
        json.dump(results, f, indent=1)

    def row(name, r):
        lat = r["latency_ms"]
        return (f"| {name} | {r['delivered_per_sec']:,.0f} | {lat['p50']:.2f} | {lat['p99']:.2f} | "
                f"{r['lost']} |")

    print("| run | delivered msg/s | p50 ms | p99 ms | lost |")
    print("|---|---|---|---|---|")
    print(row("fan-out 100x10, plain TCP", results["fanout_plain"]))
    print(row("fan-out 100x10, TLS", results["fanout_tls"]))
    print(row("chat 10x1 at 200 msg/s, no logins", results["chat_no_logins"]))
    print(row(f"chat 10x1 at 200 msg/s, {results['logins_per_second']} logins/s",
              results["chat_with_logins"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
