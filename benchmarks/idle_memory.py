"""Server RSS per idle native connection, one-time costs left out.

    .venv/bin/python benchmarks/idle_memory.py [CHECKOUT] [CONNECTIONS]

Starts CHECKOUT's ``bin/chat-server`` (default: this one), connects 500 clients first (what the
first connections cost once: lazily loaded modules, pools, caches), takes the server's RSS, then
connects CONNECTIONS more (default 5,000) that say nothing, and prints the RSS growth divided by
them. ``run.py``'s idle5000 row divides by every client the RSS since before the first one, so it
counts those one-time costs too.
"""
import argparse
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", nargs="?", default=ROOT)
    parser.add_argument("connections", nargs="?", type=int, default=5000)
    args = parser.parse_args()
    root, n = args.checkout, args.connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < n + 1000:
        sys.exit(f"open-files limit {hard} is too small for {n} connections")
    log = tempfile.NamedTemporaryFile("w+", prefix="chatroom-idle-", suffix=".log")
    python = os.path.join(root, ".venv", "bin", "python")
    cmd = [python if os.path.exists(python) else sys.executable, os.path.join(root, "bin", "chat-server"),
           "--port", "0", "--max-per-ip", "0", "--flood-rate", "0", "--max-clients", str(n + 1000),
           "--history", "off"]
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    try:
        port = None
        for _ in range(300):  # up to 30 s
            time.sleep(0.1)
            m = re.search(r"Listening on \S+:(\d+)", open(log.name).read())
            if m:
                port = int(m.group(1))
                break
            if server.poll() is not None:
                sys.exit("the server exited:\n" + open(log.name).read()[-2000:])
        if port is None:
            sys.exit("the server did not say it listens")
        socks = []

        def rss():
            with open(f"/proc/{server.pid}/status") as f:
                return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) * 1024

        def connect(count):
            for _ in range(count):
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            time.sleep(1.0)
            for s in socks[-count:]:  # take the greeting, so nothing waits in the server
                s.setblocking(False)
                try:
                    s.recv(65536)
                except OSError:
                    pass

        connect(500)
        time.sleep(0.5)
        before = rss()
        connect(n)
        time.sleep(1.0)
        print(f"{(rss() - before) / n:.0f} bytes of server RSS per idle connection ({n} connections)")
        for s in socks:
            s.close()
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
