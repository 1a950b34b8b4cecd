#!/usr/bin/env python3
"""Side-by-side: two chat-server workers sharing one Redis against one server alone, same load.

For each workload, ``bin/chat-load`` runs once against ``bin/chat-server`` alone and once against
``bin/chat-server --workers 2 --redis URL`` (two processes on one port with SO_REUSEPORT, a
throwaway ``redis-server`` on a free port between them), and the delivered messages a second and
latencies are printed side by side. Nothing is pinned: on a small machine the two workers, Redis
and the load generator share the cores, which is what the figures then show. Needs
``redis-server`` on the PATH. Runnable on its own (``--quick`` for a short run, ``--json``).
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from chatroom.load.config import DRAIN_LIMIT, SetupError  # noqa: E402
from chatroom.load.servers import ServerProcess, chat_server_command  # noqa: E402

#: (name, bin/chat-load flags, the same flags for --quick). One room; the receivers spread over
#: the workers, so each message crosses Redis once and is fanned out on both.
WORKLOADS = [
    ("100x10", ["--receivers", "100", "--senders", "10", "--messages", "20000", "--duration", "10"],
     ["--receivers", "100", "--senders", "10", "--messages", "2000", "--duration", "3"]),
    ("1000x10", ["--receivers", "1000", "--senders", "10", "--messages", "1000", "--duration", "10"],
     ["--receivers", "1000", "--senders", "10", "--messages", "200", "--duration", "3"]),
]
SETUPS = ("alone", "2 workers + Redis")
#: Seconds redis-server and the workers may take to come up.
START_TIMEOUT = 10.0
#: Seconds between looks while waiting for them.
START_POLL = 0.05
#: Seconds one load run may take beyond its own duration cap (setup, drain).
RUN_SLACK = DRAIN_LIMIT + 60.0


class Redis:
    """A throwaway redis-server on a free port, no persistence."""

    def __init__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise SetupError("redis-server did not start")
            time.sleep(START_POLL)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def _answers(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def start(setup, redis):
    """The server for ``setup``, listening, with every worker in the cluster."""
    if setup == "alone":
        return ServerProcess(chat_server_command())
    server = ServerProcess(chat_server_command("--workers", "2", "--redis", redis.url))
    deadline = time.monotonic() + START_TIMEOUT
    while sum("Cluster: connected" in line for line in list(server.tail)) < 2:
        if time.monotonic() > deadline:
            server.stop()
            raise SetupError("workers did not join the cluster:\n" + server.output())
        time.sleep(START_POLL)
    return server


def run(flags, setup, duration):
    redis = Redis() if setup != "alone" else None
    try:
        server = start(setup, redis)
        try:
            cmd = [sys.executable, os.path.join(ROOT, "bin", "chat-load"), "--json",
                   "--port", str(server.port), *flags]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                                  stdin=subprocess.DEVNULL, timeout=duration + RUN_SLACK)
        finally:
            server.stop()
        if done.returncode != 0:
            return {"error": (done.stderr or done.stdout).strip()[-500:]}
        return json.loads(done.stdout)
    finally:
        if redis is not None:
            redis.stop()


def row(name, setup, result):
    if "error" in result:
        return f"| {name} | {setup} | error: {result['error'].splitlines()[-1]} | | | |"
    lat = result["latency_ms"]
    return (f"| {name} | {setup} | {result['delivered_per_sec']:,.0f} | {lat['p50']:.1f} | "
            f"{lat['p99']:.1f} | {result['lost']} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller runs (seconds, not minutes)")
    p.add_argument("--json", action="store_true", help="print the raw results as JSON")
    args = p.parse_args(argv)
    if shutil.which("redis-server") is None:
        sys.exit("cluster_bench needs redis-server (Debian package redis-server)")
    results = []
    print(f"{os.cpu_count()} cores; chat-load and the servers unpinned\n")
    print("| workload | server | delivered msg/s | p50 ms | p99 ms | lost |")
    print("|---|---|---:|---:|---:|---:|")
    for name, flags, quick in WORKLOADS:
        flags = quick if args.quick else flags
        duration = float(flags[flags.index("--duration") + 1])
        for setup in SETUPS:
            try:
                result = run(flags, setup, duration)
            except (SetupError, subprocess.TimeoutExpired) as err:
                result = {"error": str(err)}
            results.append({"workload": name, "server": setup, "result": result})
            print(row(name, setup, result), flush=True)
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
