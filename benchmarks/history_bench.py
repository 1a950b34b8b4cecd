#!/usr/bin/env python3
"""Room history's cost: fan-out with history on against off, and the store's own write rate.

``bin/chat-load`` runs the 100 receivers / 10 senders workload against ``bin/chat-server
--history off`` and against ``--history on`` (a fresh ``--data-dir`` each run), and prints the
delivered messages a second side by side with their ratio (the goal: at least 0.7). Then the
store alone: messages committed a second by :class:`chatroom.store.history.History` fed as fast
as the registry's hook is called, in its ~50 ms group commits. Runnable on its own (``--quick``,
``--json``); ``make bench`` runs it after the others.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from chatroom.load.config import DRAIN_LIMIT, SetupError  # noqa: E402
from chatroom.load.servers import ServerProcess, chat_server_command  # noqa: E402

WORKLOAD = (["--receivers", "100", "--senders", "10", "--messages", "20000", "--duration", "10"],
            ["--receivers", "100", "--senders", "10", "--messages", "2000", "--duration", "3"])
#: The least share of the history-off throughput history on must keep.
GOAL = 0.7
RUN_SLACK = DRAIN_LIMIT + 60.0
#: Messages the store-alone run writes (``--quick``: a tenth).
STORE_MESSAGES = 200_000


def run(flags, history, duration):
    data_dir = tempfile.mkdtemp(prefix="chatroom-bench-")
    try:
        extra = ["--history", history, "--data-dir", data_dir]
        server = ServerProcess(chat_server_command(*extra))
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
        shutil.rmtree(data_dir, ignore_errors=True)


def store_rate(count):
    """Messages a second the history store commits, fed by the hook in bursts of 100."""
    import gevent

    from chatroom.store.history import History, SqliteStore

    class Room:
        name = "lobby"

    class Member:
        name = "ann"
        prefix = "ann!~native@127.0.0.1"
        plain = True

    data_dir = tempfile.mkdtemp(prefix="chatroom-bench-")
    try:
        history = History(SqliteStore(data_dir, 10000), queue_limit=count)
        history.start()
        texts = ["a message of a typical length, some forty to sixty bytes"] * 100
        start = time.perf_counter()
        for i in range(0, count, 100):
            history.record(Room, Member, texts, [(time.time(), f"{i:x}-{j:x}") for j in range(100)])
            if i % 10_000 == 0:
                gevent.sleep(0)  # the loop turns, as a server's does between reads
        while history.written < count - history.dropped:
            gevent.sleep(0.01)
        elapsed = time.perf_counter() - start
        history.stop()
        return {"messages": history.written, "seconds": elapsed, "per_sec": history.written / elapsed,
                "dropped": history.dropped}
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller runs (seconds, not minutes)")
    p.add_argument("--json", action="store_true", help="print the raw results as JSON")
    args = p.parse_args(argv)
    flags = WORKLOAD[1] if args.quick else WORKLOAD[0]
    duration = float(flags[flags.index("--duration") + 1])
    results = {}
    print(f"{os.cpu_count()} cores; chat-load and the server unpinned\n")
    print("| workload | history | delivered msg/s | p50 ms | p99 ms | lost |")
    print("|---|---|---:|---:|---:|---:|")
    for history in ("off", "on"):
        try:
            result = run(flags, history, duration)
        except (SetupError, subprocess.TimeoutExpired) as err:
            result = {"error": str(err)}
        results[history] = result
        if "error" in result:
            print(f"| 100x10 | {history} | error: {result['error'].splitlines()[-1]} | | | |")
            continue
        lat = result["latency_ms"]
        print(f"| 100x10 | {history} | {result['delivered_per_sec']:,.0f} | {lat['p50']:.1f} | "
              f"{lat['p99']:.1f} | {result['lost']} |", flush=True)
    ok = True
    if all("error" not in r for r in results.values()):
        ratio = results["on"]["delivered_per_sec"] / results["off"]["delivered_per_sec"]
        ok = ratio >= GOAL
        print(f"\nhistory on / off: {ratio:.2f}x (goal >= {GOAL}x): {'met' if ok else 'NOT met'}")
        results["ratio"] = ratio
    store = store_rate(STORE_MESSAGES // 10 if args.quick else STORE_MESSAGES)
    results["store"] = store
    print(f"store alone: {store['messages']:,} messages committed in {store['seconds']:.2f} s = "
          f"{store['per_sec']:,.0f} msg/s ({store['dropped']} not kept)")
    if args.json:
        print(json.dumps(results, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
