#!/usr/bin/env python3
"""This server side by side with Redis pub/sub and ngIRCd, all driven by one C load driver.

``bin/chat-load`` is Python on gevent: at 10 receivers / 1 sender it saturates before this server
does, so its figures there measure the generator. This runner uses ``benchmarks/driver.c``
instead (C, one epoll loop, every line of every receiver checked and timed), built with
``cc -O2`` into ``benchmarks/results/driver`` on first use, and runs in ONE go, each on a fresh
server pinned to the first core with the driver on the second:

  servers   chatroom (native protocol), chatroom's IRC listener, Redis pub/sub (redis-server),
            ngIRCd; a peer that is not installed is skipped with a line saying so
  workloads 10x1, 100x10, 1000x10 (as fast as the window allows), and for latency 5000x10
            (5,000 receivers, 10 senders at 2 lines/s: each fan-out ends before the next line)
            and 5000x10busy (5 lines/s: lines arrive while a fan-out is still going out)

It prints a table with deliveries/s, the ratio to Redis and to ngIRCd, latency, loss, and the CPU
shares of the server, of the driver and of other programs, measured by the driver over the
interval it timed (the server's from /proc/PID/schedstat, its own from getrusage, the machine's
from /proc/stat). "server waited" is the time the server sat ready on the run queue while other
programs held its core ("driver waited" the same for the driver). A run where the server's share is near 100% and the driver's well below
is one where the server was the bottleneck; one where server CPU + server waited is near 100% was
limited by the server's core being shared, which says nothing about the driver. Raw results go
to ``benchmarks/results/peers.json``.

ngIRCd: it throttles every client to a few commands a second (a one-second penalty once it is
over), which would make it a benchmark of its flood protection. The config below sets
``MaxPenaltyTime = 0`` (ngIRCd 25 and later: "0 to disable penalties altogether") and gives every
client user mode ``F`` (``DefaultUserModes = F``: "relaxed flood protection", ngIRCd 22 and later,
normally only for IRC operators), lifts ``MaxConnectionsIP`` and ``MaxJoins``, and turns DNS and
ident look-ups off. ngIRCd listens with a backlog of 10, so the driver connects at most 8 clients
at a time to it (more overflow the accept queue and the kernel's SYN retries stall setup).
"""

import argparse
import dataclasses
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
SOURCE = os.path.join(ROOT, "benchmarks", "driver.c")
DRIVER = os.path.join(RESULTS, "driver")

#: Seconds a server may take to listen, and to stop after SIGTERM.
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
#: Seconds a driver run may take beyond its duration cap (setup of 5,000 clients, drain).
RUN_SLACK = 150.0
#: Setup (connect + join) bound handed to the driver; ngIRCd's 5,000 joins are the slow case
#: (each JOIN is announced to every member: 12.5 million lines).
SETUP_TIMEOUT = 120.0
#: Share of a core other programs may use during a run before the table flags it.
BUSY = 0.1


@dataclasses.dataclass
class Workload:
    name: str
    receivers: int
    senders: int
    messages: int  #: per sender: an upper bound, the cap usually ends the run first
    window: int
    cap: float  #: seconds the senders may send
    rate: float = 0.0  #: lines a second per sender, 0 = as fast as the window allows
    skip: dict = dataclasses.field(default_factory=dict)  #: server -> why this workload skips it
    warmup: float = 0.0  #: seconds of lines checked but not timed (driver.c --warmup)

    def args(self, quick):
        m, cap = (max(1, self.messages // 10), min(self.cap, 3.0)) if quick else (self.messages, self.cap)
        if quick and self.rate:
            m = min(self.messages, int(cap * self.rate))
        warmup = min(self.warmup, cap / 3) if quick else self.warmup
        return ["--receivers", str(self.receivers), "--senders", str(self.senders), "--messages", str(m),
                "--window", str(self.window), "--duration-cap", str(cap), "--rate", str(self.rate),
                "--warmup", str(warmup)]


NGIRCD_5000 = ("ngIRCd at {} skipped: IRC announces every JOIN to every member, so 5,000 joins are "
               "12.5 million lines, and ngIRCd (listen backlog 10) had 3,442 of 5,010 clients in "
               "after the 120 s setup bound on this machine")

WORKLOADS = [
    # One sender needs a deeper window to keep ten readers busy: 1,024 lines of ~90 bytes is
    # 90 KiB queued per reader at most, well under every server's slow-consumer limits.
    Workload("10x1", 10, 1, 2_000_000, 1024, 8.0),
    Workload("100x10", 100, 10, 100_000, 128, 8.0),
    Workload("1000x10", 1000, 10, 10_000, 128, 8.0),
    # 10 senders x 2 lines/s x 5,000 receivers = 100,000 deliveries/s (the idle5000 run's rate),
    # the senders' lines spread evenly: every line is a fan-out of 5,000 sends of its own, which
    # ends before the next line comes (latency without queueing). 600 lines, the first 2 s (40
    # lines) not timed: a new TCP connection acknowledges its first 16 segments one by one
    # (quick-ack), which made the first 16 lines cost every server about 40% more; with 160 lines
    # in all, p99 was the worst 1.6 lines' deliveries: those first ones, whoever served them.
    Workload("5000x10", 5000, 10, 60, 128, 30.0, rate=2.0, warmup=2.0,
             skip={"ngircd": NGIRCD_5000.format("5000x10")}),
    # 5 lines/s per sender: 50 lines/s, each a 5,000-send fan-out that takes longer than the 20 ms
    # between lines, so the server's core is full and lines arrive while a fan-out is going out:
    # a busy big room, where what a server does with such a line decides the latency.
    Workload("5000x10busy", 5000, 10, 100, 128, 20.0, rate=5.0, warmup=2.0,
             skip={"ngircd": NGIRCD_5000.format("5000x10busy")}),
]
BY_NAME = {w.name: w for w in WORKLOADS}

NGIRCD_CONF = """\
[Global]
    Name = bench.local
    Info = chatroom benchmark peer
    AdminInfo1 = benchmark
    AdminInfo2 = loopback
    AdminEMail = bench@localhost
    Listen = 127.0.0.1
    Ports = {port}
[Limits]
    MaxConnections = 0
    MaxConnectionsIP = 0
    MaxJoins = 0
    MaxNickLength = 16
    MaxPenaltyTime = 0
    PingTimeout = 600
    PongTimeout = 600
[Options]
    DNS = no
    Ident = no
    PAM = no
    DefaultUserModes = F
"""


# -- servers --------------------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_plan():
    """(server cpu, driver cpu) for taskset, or (None, None) with fewer than two cores."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return None, None
    return cpus[0], cpus[1]


def pinned(cmd, cpu):
    return cmd if cpu is None else ["taskset", "-c", str(cpu), *cmd]


class Server:
    """A server subprocess: ready when its output matches ``ready`` (a regex whose last group is
    the port) or, with a known ``port``, when that port accepts a connection."""

    def __init__(self, name, cmd, ready=None, port=None, cwd=ROOT, cleanup=None):
        self.name = name
        self.cleanup = cleanup
        self.tail = []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True)
        self._found = {}
        self._event = threading.Event()
        self._rx = re.compile(ready) if ready else None
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        self.port = port
        try:
            if self._rx:
                if not self._event.wait(START_TIMEOUT) or "port" not in self._found:
                    raise RuntimeError(f"{name} did not start; output:\n" + "\n".join(self.tail[-20:]))
                self.port = self._found["port"]
            else:
                while not self._accepts():
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{name} did not listen on {port}; output:\n"
                                           + "\n".join(self.tail[-20:]))
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        self.pid = self._server_pid()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if len(self.tail) < 200:
                self.tail.append(line)
            if self._rx and "port" not in self._found:
                m = self._rx.search(line)
                if m:
                    self._found["port"] = int(m.groups()[-1])
                    self._event.set()
        self._event.set()

    def _accepts(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.5):
                return True
        except OSError:
            return False

    def _server_pid(self):
        """The server's own pid: taskset execs it, so the child we started is the server."""
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        if self.cleanup:
            self.cleanup()


def python():
    venv = os.path.join(ROOT, ".venv", "bin", "python")
    return sys.executable if "gevent" in sys.modules or not os.path.exists(venv) else venv


def start_chatroom(cpu, irc):
    # History off: Redis pub/sub and ngIRCd keep nothing either, and a history in the default data
    # directory would replay one run's lines into the next (history on vs off: history_bench.py).
    cmd = [python(), os.path.join(ROOT, "bin", "chat-server"), "--port", "0", "--flood-rate", "0",
           "--max-per-ip", "0", "--history", "off"]
    if irc:
        cmd += ["--irc-port", "0"]
        ready = r"IRC listening on \[?[^\]\s]+?\]?:(\d+)"
    else:
        ready = r"^Listening on \[?[^\]\s]+?\]?:(\d+)"
    return Server("chatroom-irc" if irc else "chatroom", pinned(cmd, cpu), ready=ready)


def start_redis(cpu):
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--maxclients", "12000", "--loglevel", "warning"]
    return Server("redis", pinned(cmd, cpu), port=port)


def start_ngircd(cpu):
    port = free_port()
    folder = tempfile.mkdtemp(prefix="ngircd-bench-")
    conf = os.path.join(folder, "ngircd.conf")
    with open(conf, "w") as f:
        f.write(NGIRCD_CONF.format(port=port))
    os.chmod(folder, 0o755)
    os.chmod(conf, 0o644)
    return Server("ngircd", pinned(["ngircd", "--nodaemon", "--config", conf], cpu), port=port,
                  cwd=folder, cleanup=lambda: shutil.rmtree(folder, ignore_errors=True))


@dataclasses.dataclass
class Peer:
    name: str
    proto: str
    binary: str  #: what must be installed
    start: object
    connect_concurrency: int = 200


PEERS = [
    Peer("chatroom", "native", "cc", lambda cpu: start_chatroom(cpu, irc=False)),
    Peer("chatroom-irc", "irc", "cc", lambda cpu: start_chatroom(cpu, irc=True)),
    Peer("redis", "redis", "redis-server", start_redis),
    # ngIRCd listens with a backlog of 10 (see the docstring)
    Peer("ngircd", "irc", "ngircd", start_ngircd, connect_concurrency=8),
]
BY_PEER = {p.name: p for p in PEERS}


# -- the driver -----------------------------------------------------------------------------------


def build_driver(log=sys.stderr.write):
    """Compile driver.c into benchmarks/results/driver when missing or older; None without cc."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    if os.path.exists(DRIVER) and os.path.getmtime(DRIVER) >= os.path.getmtime(SOURCE):
        return DRIVER
    os.makedirs(RESULTS, exist_ok=True)
    log(f"building {os.path.relpath(DRIVER, ROOT)} ({cc} -O2)\n")
    subprocess.run([cc, "-O2", "-Wall", "-o", DRIVER, SOURCE], check=True, timeout=120)
    return DRIVER


def run_one(driver, workload, peer, quick, log):
    server_cpu, driver_cpu = cpu_plan()
    entry = {"workload": workload.name, "server": peer.name, "proto": peer.proto}
    started = time.monotonic()
    try:
        server = peer.start(server_cpu)
    except (RuntimeError, OSError) as err:
        entry["error"] = str(err)
        log(f"  {workload.name:<8} {peer.name:<13} ERROR: {str(err).splitlines()[0]}\n")
        return entry
    cmd = pinned([driver, "--proto", peer.proto, "--port", str(server.port), "--server-pid", str(server.pid),
                  "--label", f"{workload.name} {peer.name}", "--setup-timeout", str(SETUP_TIMEOUT),
                  "--connect-concurrency", str(peer.connect_concurrency), *workload.args(quick)], driver_cpu)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=workload.cap + SETUP_TIMEOUT + RUN_SLACK)
        if done.returncode == 0:
            entry["result"] = json.loads(done.stdout)
            if done.stderr.strip():
                entry["driver_stderr"] = done.stderr.strip()[-2000:]
        else:
            entry["error"] = (done.stderr or done.stdout).strip()[-2000:] or f"driver exited {done.returncode}"
    except subprocess.TimeoutExpired:
        entry["error"] = "driver did not finish in time"
    finally:
        server.stop()
    entry["wall_seconds"] = round(time.monotonic() - started, 2)
    log(f"  {workload.name:<8} {peer.name:<13} {describe(entry)}\n")
    return entry


def describe(entry):
    if "error" in entry:
        return "ERROR: " + entry["error"].strip().splitlines()[-1]
    r = entry["result"]
    return (f"{r['deliveries_per_sec']:>12,.0f} deliveries/s  p99 {r['latency_ms']['p99']:9.2f} ms  "
            f"lost {r['lost']:,}  CPU server {pct(server_share(r))} (waited {pct(r.get('server_wait_share'))}) driver {pct(r['driver_cpu_share'])} "
            f"other {pct(r['other_cpu_share'])}  ({entry['wall_seconds']:.0f} s)")


def pct(x):
    return f"{x:.0%}" if x is not None and x >= 0 else "?"


# -- the table ------------------------------------------------------------------------------------

HEADER = ["workload", "server", "deliveries/s", "x redis", "x ngircd", "p50 ms", "p99 ms", "lost/dup/ooo",
          "server CPU", "server waited", "driver CPU", "driver waited", "other CPU", "notes"]
NUMERIC = set(range(2, 13))


def server_share(r):
    """The server's share of a core: from schedstat (ns) when known, else from /proc ticks."""
    run = r.get("server_run_share", -1)
    return run if run is not None and run >= 0 else r["server_cpu_share"]


def rows(entries):
    got = {(e["workload"], e["server"]): e.get("result") for e in entries}
    out = []
    for e in entries:
        r = e.get("result")
        if r is None:
            out.append([e["workload"], e["server"], "error"] + [""] * (len(HEADER) - 3))
            continue

        def ratio(peer):
            b = got.get((e["workload"], peer))
            if not b or peer == e["server"] or not b["deliveries_per_sec"]:
                return ""
            return f"{r['deliveries_per_sec'] / b['deliveries_per_sec']:.2f}x"

        notes = []
        if r["capped"]:
            notes.append(f"cut at the cap after {r['sent']:,} lines")
        if r["disconnected"]:
            notes.append(f"{r['disconnected']} disconnected")
        if r["other_cpu_share"] > BUSY:
            notes.append("machine busy")
        out.append([e["workload"], e["server"], f"{r['deliveries_per_sec']:,.0f}", ratio("redis"),
                    ratio("ngircd"), f"{r['latency_ms']['p50']:.2f}", f"{r['latency_ms']['p99']:.2f}",
                    f"{r['lost']}/{r['duplicates']}/{r['out_of_order']}", pct(server_share(r)),
                    pct(r.get("server_wait_share")), pct(r["driver_cpu_share"]), pct(r.get("driver_wait_share")),
                    pct(r["other_cpu_share"]), ", ".join(notes)])
    return out


def table_text(data, markdown=False):
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |",
                 "|" + "|".join("---:" if i in NUMERIC else "---" for i in range(len(HEADER))) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in data])
    widths = [max(len(str(line[i])) for line in [HEADER] + data) for i in range(len(HEADER))]
    lines = []
    for n, line in enumerate([HEADER] + data):
        lines.append("  ".join(c.rjust(w) if i in NUMERIC else c.ljust(w)
                               for i, (c, w) in enumerate(zip(line, widths))).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def disturbed(*results):
    """A caveat when other programs took CPU during any of these runs: the comparison is then
    as much about who was unlucky with the neighbours as about the servers."""
    worst = max(r["other_cpu_share"] for r in results)
    return f"; other programs used up to {worst:.0%} of a core meanwhile: re-run on a quiet machine" \
        if worst > BUSY else ""


def goals(entries):
    """(goal, met, detail) per goal of the issue the run has figures for."""
    got = {(e["workload"], e["server"]): e.get("result") for e in entries}
    out = []
    for name, factor in (("10x1", 1.0), ("100x10", 1.5), ("1000x10", 1.5)):
        ours, redis = got.get((name, "chatroom")), got.get((name, "redis"))
        if ours and redis:
            x = ours["deliveries_per_sec"] / max(1e-9, redis["deliveries_per_sec"])
            out.append((f"{name}: deliveries/s >= {factor:g}x Redis pub/sub", x >= factor,
                        f"{x:.2f}x" + disturbed(ours, redis)))
    for name in ("5000x10", "5000x10busy"):
        ours, redis = got.get((name, "chatroom")), got.get((name, "redis"))
        if not (ours and redis):
            continue
        a, b = ours["latency_ms"]["p99"], redis["latency_ms"]["p99"]
        detail = f"{a:.2f} ms vs {b:.2f} ms"
        if ours.get("warmup_seconds"):
            detail += (f" after the {ours['warmup_seconds']:g} s warm-up; with it "
                       f"{ours['latency_with_warmup_ms']['p99']:.2f} ms vs "
                       f"{redis['latency_with_warmup_ms']['p99']:.2f} ms")
        out.append((f"{name}: p99 latency no worse than Redis's", a <= b, detail + disturbed(ours, redis)))
    mine = [r for (w, s), r in got.items() if s.startswith("chatroom") and r]
    if mine:
        bad = sum(r["lost"] + r["duplicates"] + r["out_of_order"] + r["disconnected"] for r in mine)
        out.append(("chatroom: zero loss, duplicates, reordering, disconnects", bad == 0, f"{bad} problems"))
    return out


def verdict(r):
    """Which side limited a run, from the CPU shares the driver measured."""
    driver = r["driver_cpu_share"] + max(0.0, r.get("driver_wait_share", -1))
    server = server_share(r)
    if driver >= 0.9:
        return "the driver's core was full: this figure is a floor for the server"
    if server >= 0.9:
        return "the server's core was full: the server was the bottleneck"
    if server + max(0.0, r.get("server_wait_share", -1)) >= 0.9:
        return "the server was running or waiting for its core (neighbours) nearly all the time"
    return "neither core was full: the limit was the hand-off between them (or the offered rate)"


def report(saved, markdown=False):
    entries = saved["runs"]
    m = saved["machine"]
    print(f"Run {saved['date']} of commit {saved.get('commit')}{' (--quick)' if saved.get('quick') else ''}: "
          f"{m['cpu']}, {m['cores']} cores; {m['pinning']}; {saved['wall_seconds']:.0f} s in all.")
    print()
    print(table_text(rows(entries), markdown))
    print()
    for e in entries:
        r = e.get("result")
        if r and e["server"] == "chatroom":
            print(f"{'- ' if markdown else ''}{e['workload']}: load generator: benchmarks/driver.c (C, epoll); "
                  f"server CPU {pct(server_share(r))}, driver CPU {pct(r['driver_cpu_share'])}; "
                  f"the server waited for its core {pct(r.get('server_wait_share'))} of the time, "
                  f"other programs used {pct(r['other_cpu_share'])} of a core; {verdict(r)}")
    print()
    for goal, ok, detail in goals(entries):
        word = "met" if ok else "NOT met"
        print(f"- {goal}: **{word}** ({detail})" if markdown else f"  [{word:^7}] {goal}: {detail}")
    for line in saved.get("skipped", []):
        print(line)
    for e in entries:
        if "error" in e:
            print(f"\n{e['workload']} on {e['server']} failed:\n{e['error']}", file=sys.stderr)


def machine_info():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), model)
    except OSError:
        pass
    server_cpu, driver_cpu = cpu_plan()
    return {"cpu": model, "cores": os.cpu_count(),
            "pinning": (f"server on cpu {server_cpu}, driver on cpu {driver_cpu}" if server_cpu is not None
                        else "none (one core)")}


def git_commit():
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=ROOT, timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def build_parser():
    p = argparse.ArgumentParser(description="chatroom, Redis pub/sub and ngIRCd side by side under "
                                            "benchmarks/driver.c")
    p.add_argument("--quick", action="store_true", help="smaller numbers: a smoke run")
    p.add_argument("--only", default="", help="comma-separated workloads: " + ", ".join(BY_NAME))
    p.add_argument("--servers", default=",".join(BY_PEER),
                   help="comma-separated servers (default %(default)s)")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    p.add_argument("--from", dest="source", metavar="JSON", help="do not run: print a saved results file")
    p.add_argument("--out", default=os.path.join(RESULTS, "peers.json"), help="raw results (default %(default)s)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.source:
        with open(args.source) as f:
            report(json.load(f), args.markdown)
        return 0
    workloads = [w for w in WORKLOADS if not args.only or w.name in args.only.split(",")]
    wanted = [s for s in args.servers.split(",") if s]
    unknown = [s for s in wanted if s not in BY_PEER] + [n for n in args.only.split(",") if n and n not in BY_NAME]
    if unknown:
        sys.stderr.write(f"unknown server or workload: {', '.join(unknown)}\n")
        return 2
    driver = build_driver()
    if driver is None:
        print("no C compiler (cc): the peer benchmark (benchmarks/driver.c) is skipped")
        return 0
    peers, skipped = [], []
    for name in wanted:
        peer = BY_PEER[name]
        if shutil.which(peer.binary) is None:
            skipped.append(f"{peer.binary} not installed: the {name} peer is skipped "
                           f"(Debian: apt-get install {'redis-server' if name == 'redis' else name})")
        else:
            peers.append(peer)
    for line in skipped:
        sys.stderr.write(line + "\n")
    info = machine_info()
    sys.stderr.write(f"peers under benchmarks/driver.c: {info['cpu']}, {info['cores']} cores; {info['pinning']}\n")
    started = time.monotonic()
    entries = []
    for w in workloads:
        for p in peers:
            if p.name in w.skip and not args.quick:
                skipped.append(w.skip[p.name])
                sys.stderr.write(f"  {w.name:<8} {p.name:<13} skipped (see the end)\n")
            else:
                entries.append(run_one(driver, w, p, args.quick, sys.stderr.write))
    saved = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "commit": git_commit(), "quick": args.quick, "machine": info,
             "wall_seconds": round(time.monotonic() - started, 1), "skipped": skipped,
             "workloads": {w.name: w.args(args.quick) for w in workloads}, "runs": entries}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(saved, f, indent=1)
    report(saved, args.markdown)
    print(f"\nraw results: {os.path.relpath(args.out, ROOT)}", file=sys.stderr)
    return 1 if any("error" in e for e in entries) else 0


if __name__ == "__main__":
    sys.exit(main())
