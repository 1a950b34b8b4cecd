"""``bin/chat-load``: the command line, and running the clients in this process or over workers.

``--procs P`` splits the clients over P worker processes (``python -m chatroom.load`` with a
hidden ``--worker`` flag) that connect, report ready, start together on ``go`` and print their
results as JSON lines; the coordinating process merges them.
"""

import argparse
import dataclasses
import json
import os
import queue
import subprocess
import sys
import threading
import time

import gevent
from gevent.socket import wait_read

from .. import settings
from .config import (
    DEFAULT_CHECK,
    DEFAULT_DURATION,
    DEFAULT_SIZE,
    DEFAULT_WINDOW,
    DRAIN_LIMIT,
    FD_RESERVE,
    ROOT,
    SETUP_TIMEOUT,
    Config,
    SetupError,
)
from .irc import MAX_TEXT
from .report import ServerWatch, format_summary, merge
from .servers import (
    IRC_LISTENING,
    WEB_LISTENING,
    ServerProcess,
    chat_server_command,
    chat_server_irc_command,
    chat_server_web_command,
    raise_nofile_limit,
)
from .worker import Worker

#: Default port with ``--protocol irc``: IRC's own.
IRC_PORT = 6667
#: Seconds between progress updates (the live line, worker reports, server RSS samples).
PROGRESS_INTERVAL = 0.5
#: Seconds a worker process may take to report its result after the senders' deadline and drain.
WORKER_FINISH_SLACK = 30.0
#: Seconds a worker is given to close its sockets and exit after the run (or a stop) before SIGKILL.
WORKER_EXIT_TIMEOUT = 10.0


class Progress:
    """The live progress line, on a terminal only."""

    def __init__(self, enabled):
        self.enabled = enabled
        self.started = time.monotonic()
        self.prev = (self.started, 0)

    def show(self, sent, delivered):
        if not self.enabled:
            return
        now = time.monotonic()
        t, d = self.prev
        rate = (delivered - d) / (now - t) if now > t else 0.0
        self.prev = (now, delivered)
        sys.stdout.write(f"\r[{now - self.started:6.1f} s] sent {sent:,}  delivered {delivered:,}"
                         f"  ({rate:,.0f} msg/s)\033[K")
        sys.stdout.flush()

    def clear(self):
        if self.enabled:
            sys.stdout.write("\r\033[K")
            sys.stdout.flush()


def run_in_process(cfg, watch, progress):
    """Run every client in this process; returns the merged result."""
    worker = Worker(cfg)
    watch.sample("baseline")
    try:
        worker.connect()
        watch.sample("connected")
        t0 = time.monotonic_ns()
        progress.started = time.monotonic()

        def tick():
            while True:
                gevent.sleep(PROGRESS_INTERVAL)
                watch.sample()
                p = worker.progress()
                progress.show(p["sent"], p["delivered"])

        ticker = gevent.spawn(tick)
        try:
            worker.run(t0, on_drained=lambda: watch.sample("drained"))
        finally:
            ticker.kill()
        watch.sample("end")
        return merge(cfg, t0, [worker.result()], watch)
    finally:
        worker.close()
        progress.clear()


class WorkerProcess:
    """One worker subprocess: JSON lines from its stdout go to a shared queue."""

    def __init__(self, cfg, events):
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, "-m", "chatroom.load", "--worker", json.dumps(dataclasses.asdict(cfg))]
        self.index = cfg.index
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
                                     env=env, text=True, bufsize=1)
        self.thread = threading.Thread(target=self._read, args=(events,), daemon=True)
        self.thread.start()

    def _read(self, events):
        for line in self.proc.stdout:
            try:
                events.put((self.index, json.loads(line)))
            except ValueError:
                sys.stderr.write(line)
        events.put((self.index, {"event": "exit", "code": self.proc.wait()}))

    def tell(self, text):
        try:
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass

    def stop(self):
        try:
            self.proc.wait(WORKER_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_in_workers(cfg, watch, progress):
    """Split the clients over ``cfg.procs`` worker processes; start them together; merge."""
    events = queue.Queue()
    watch.sample("baseline")
    workers = [WorkerProcess(dataclasses.replace(cfg, index=i), events) for i in range(cfg.procs)]
    try:
        ready = {}
        deadline = time.monotonic() + SETUP_TIMEOUT + 10
        while len(ready) < len(workers):
            index, ev = _next_event(events, deadline, "worker setup")
            if ev["event"] == "ready":
                ready[index] = ev
            elif ev["event"] in ("error", "exit"):
                raise SetupError(f"worker {index}: {ev.get('error') or 'exited with ' + str(ev.get('code'))}")
        watch.sample("connected")
        t0 = time.monotonic_ns()
        progress.started = time.monotonic()
        for w in workers:
            w.tell(f"go {t0}")
        results = {}
        latest = {}
        drained = set()
        deadline = time.monotonic() + cfg.duration + DRAIN_LIMIT + WORKER_FINISH_SLACK
        while len(results) < len(workers):
            index, ev = _next_event(events, deadline, "worker results")
            if ev["event"] == "progress":
                latest[index] = ev
                if index == 0:
                    watch.sample()
                    progress.show(sum(p["sent"] for p in latest.values()),
                                  sum(p["delivered"] for p in latest.values()))
            elif ev["event"] == "drained":
                drained.add(index)
                if len(drained) == len(workers):
                    watch.sample("drained")
            elif ev["event"] == "result":
                results[index] = ev["result"]
                watch.sample("end")
            elif ev["event"] == "error" or (ev["event"] == "exit" and index not in results):
                raise SetupError(f"worker {index}: {ev.get('error') or 'exited with ' + str(ev.get('code'))}")
        return merge(cfg, t0, list(results.values()), watch)
    finally:
        for w in workers:
            w.tell("stop")
        for w in workers:
            w.stop()
        progress.clear()


def _next_event(events, deadline, what):
    left = deadline - time.monotonic()
    try:
        return events.get(timeout=max(0.01, left))
    except queue.Empty:
        raise SetupError(f"{what} did not finish in time") from None


def worker_main(cfg_json):
    """Hidden ``--worker`` mode: connect, say ready, wait for ``go T0``, run, print the result."""
    cfg = Config(**json.loads(cfg_json))
    raise_nofile_limit()

    def emit(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    worker = Worker(cfg)
    try:
        try:
            worker.connect()
        except SetupError as err:
            emit({"event": "error", "error": str(err)})
            return 2
        emit({"event": "ready", "clients": worker.clients})
        fd = sys.stdin.fileno()
        wait_read(fd, timeout=SETUP_TIMEOUT + 10)
        line = os.read(fd, 1024).decode().split()
        if len(line) != 2 or line[0] != "go":
            return 2
        t0 = int(line[1])

        def tick():
            while True:
                gevent.sleep(PROGRESS_INTERVAL)
                emit({"event": "progress", **worker.progress()})

        ticker = gevent.spawn(tick)
        try:
            worker.run(t0, on_drained=lambda: emit({"event": "drained"}))
        finally:
            ticker.kill()
        emit({"event": "result", "result": worker.result()})
        return 0
    finally:
        worker.close()


def build_parser():
    p = argparse.ArgumentParser(
        prog="chat-load",
        description="Load generator: receivers and senders in one room; reports throughput, "
                    "latency, loss, duplicates and order.")
    a = p.add_argument
    a("--host", default=None, help="server address (default 127.0.0.1)")
    a("--port", type=int, default=None,
      help=f"server port (default {settings.DEFAULT_PORT}, or {IRC_PORT} with --protocol irc)")
    a("--protocol", choices=("native", "irc"), default="native",
      help="what the clients speak: this server's line protocol, or IRC (each client registers "
           "as lN and joins #ROOM) (default %(default)s)")
    a("--transport", choices=("tcp", "ws"), default="tcp",
      help="how the clients connect: plain TCP, or WebSocket to the server's web listener "
           "(HTTP upgrade at /ws, subprotocol chatroom.v1: the native protocol, one line per "
           "frame; point --port at its --web-port); ws is native only, without --tls "
           "(default %(default)s)")
    a("--irc-oper", metavar="NAME:PASSWORD", default="",
      help="with --protocol irc, senders become IRC operators (OPER NAME PASSWORD) and set user "
           "mode +F: ngIRCd's relaxed flood protection, without which it throttles them")
    a("--spawn-server", action="store_true",
      help="start bin/chat-server on a free port (flood limit and per-IP limit off; with "
           "--protocol irc, its IRC listener on a free port too; with --transport ws, its web "
           "listener, any origin) and stop it after")
    a("--server-pid", type=int, default=0, help="PID of the server, to report its RSS")
    a("--room", default="load", help="room every client joins (default %(default)s)")
    a("--receivers", type=int, default=10, help="reading clients (default %(default)s)")
    a("--senders", type=int, default=1, help="talking clients, also in the room (default %(default)s)")
    a("--messages", type=int, default=1000, help="lines per sender (default %(default)s)")
    a("--duration", type=float, default=DEFAULT_DURATION,
      help="seconds the senders may send, a hard cap (default %(default)s)")
    a("--rate", type=float, default=0.0,
      help="lines a second per sender, 0 = as fast as the window allows (default %(default)s)")
    a("--size", type=int, default=DEFAULT_SIZE,
      help=f"bytes of text per line, at most {MAX_TEXT} with --protocol irc (default %(default)s)")
    a("--window", type=int, default=DEFAULT_WINDOW,
      help="lines a sender may have in flight beyond its slowest checked receiver (default %(default)s)")
    a("--check", default=str(DEFAULT_CHECK),
      help="receivers per process that verify and time every line, 'all' for all; the rest "
           "only count lines (default %(default)s)")
    a("--idle", type=int, default=0, help="extra connected, silent clients, each in a room of its own")
    a("--stalled", type=int, default=0, help="extra receivers in the room that never read")
    a("--source-addrs", type=int, default=1,
      help="spread clients over source addresses 127.0.0.1..127.0.0.K (default %(default)s)")
    a("--procs", type=int, default=1, help="worker processes to split the clients over (default %(default)s)")
    a("--tls", action="store_true",
      help="connect over TLS (point --port at the server's --tls-port); the certificate is not checked")
    a("--json", action="store_true", help="print the result as one JSON object")
    a("--worker", help=argparse.SUPPRESS)
    return p


def config_from_args(args):
    check = -1 if args.check == "all" else int(args.check)
    default_port = IRC_PORT if args.protocol == "irc" else settings.DEFAULT_PORT
    cfg = Config(
        host=args.host or settings.DEFAULT_HOST,
        port=args.port if args.port is not None else default_port, protocol=args.protocol,
        room=args.room, receivers=args.receivers, senders=args.senders, idle=args.idle,
        stalled=args.stalled, messages=args.messages, duration=args.duration, rate=args.rate,
        size=args.size, window=args.window, check=check, source_addrs=args.source_addrs,
        procs=max(1, args.procs), irc_oper=args.irc_oper, tls=args.tls, transport=args.transport)
    if cfg.transport == "ws" and cfg.protocol != "native":
        raise SystemExit("chat-load: --transport ws speaks the native protocol only (not "
                         "--protocol irc)")
    if cfg.transport == "ws" and cfg.tls:
        raise SystemExit("chat-load: --transport ws does not do TLS (the web listener is plain HTTP)")
    if cfg.transport == "ws" and args.port is None and not args.spawn_server:
        raise SystemExit("chat-load: --transport ws needs --port (the server's --web-port) or "
                         "--spawn-server")
    for name in ("receivers", "senders", "idle", "stalled", "messages"):
        if getattr(cfg, name) < 0:
            raise SystemExit(f"chat-load: --{name} must not be negative")
    if not 1 <= cfg.source_addrs <= 254:
        raise SystemExit("chat-load: --source-addrs must be 1 to 254 (127.0.0.1 .. 127.0.0.254)")
    if cfg.window < 1 or cfg.duration <= 0 or cfg.size < 1:
        raise SystemExit("chat-load: --window, --duration and --size must be positive")
    if cfg.irc_oper and (cfg.protocol != "irc" or ":" not in cfg.irc_oper):
        raise SystemExit("chat-load: --irc-oper is NAME:PASSWORD, with --protocol irc")
    if cfg.protocol == "irc" and cfg.size > MAX_TEXT:
        raise SystemExit(f"chat-load: --size is at most {MAX_TEXT} with --protocol irc (an IRC line "
                         f"is at most 512 bytes)")
    if cfg.protocol == "irc" and any(c in cfg.room for c in " ,:\r\n\a\0"):
        raise SystemExit("chat-load: with --protocol irc, --room must be one word without ',' or ':'")
    return cfg


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    cfg = config_from_args(args)
    before, after = raise_nofile_limit()
    if after != before:
        print(f"chat-load: open-files limit raised from {before} to {after}", file=sys.stderr)
    per_proc = -(-(cfg.receivers + cfg.senders + cfg.idle + cfg.stalled) // cfg.procs)
    if per_proc + FD_RESERVE > after:
        print(f"chat-load: {per_proc:,} clients per process do not fit the open-files limit "
              f"({after}); use more --procs", file=sys.stderr)
        return 2
    server = None
    try:
        if args.spawn_server and cfg.protocol == "irc":
            server = ServerProcess(chat_server_irc_command("--host", cfg.host), listening=IRC_LISTENING)
            cfg.port = server.port
        elif args.spawn_server and cfg.transport == "ws":
            server = ServerProcess(chat_server_web_command("--host", cfg.host), listening=WEB_LISTENING)
            cfg.port = server.port
        elif args.spawn_server:
            server = ServerProcess(chat_server_command("--host", cfg.host))
            cfg.port = server.port
        pid = server.pid if server else args.server_pid
        progress = Progress(sys.stdout.isatty())
        watch = ServerWatch(pid)
        runner = run_in_workers if cfg.procs > 1 else run_in_process
        result = runner(cfg, watch, progress)
        if server is not None:
            result["server_dropped"] = server.dropped
            result["server"]["pid"] = server.pid
    except SetupError as err:
        print(f"chat-load: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if server is not None:
            server.stop()
    print(json.dumps(result) if args.json else format_summary(result))
    return 0

