#!/usr/bin/env python3
"""Side-by-side benchmark: the same bin/chat-load workloads against this server and its peers.

``make bench`` runs every workload against its peers: the native-protocol workloads against
``bin/chat-server`` (flood and per-IP limits off), the tutorial-style gevent server
(``benchmarks/naive_server.py``) and a stdlib asyncio server (``benchmarks/asyncio_server.py``);
the IRC workloads against ``bin/chat-server``'s IRC listener and ngIRCd. A peer is a command that
starts a server, the line it prints saying where it listens, the protocol chat-load speaks to it
and any chat-load flags of its own (:class:`Peer`); a peer that cannot run here (not installed,
not written yet) is skipped with the reason. Each run gets a fresh server; with two or more cores
the server is pinned to one core and the load generator to the others, so they never share one.
Prints a table (``--markdown`` for docs/performance.md), checks the goals, writes the raw results
to ``benchmarks/results/latest.json`` and a chart to ``benchmarks/results/latest.png``.
"""

import argparse
import collections
import dataclasses
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from chatroom.load.config import DEFAULT_CHECK, DRAIN_LIMIT, FD_RESERVE, SetupError  # noqa: E402
from chatroom.load.report import read_cpu  # noqa: E402
from chatroom.load.servers import (  # noqa: E402
    IRC_LISTENING,
    LISTENING,
    NGIRCD_LISTENING,
    NGIRCD_OPER,
    ServerProcess,
    chat_server_command,
    chat_server_irc_command,
    ngircd_binary,
    ngircd_command,
    raise_nofile_limit,
)

RESULTS = os.path.join(ROOT, "benchmarks", "results")
#: Seconds one load run may take beyond its own duration cap (setup, drain, idle checks).
RUN_SLACK = DRAIN_LIMIT + 120.0
#: Open files the 10,000-client run needs in each of the server and the generator.
NOFILE_FOR_10K = 10_000 + FD_RESERVE
#: Share of the machine's CPU (in cores) used by other programs during a run above which the
#: table flags the run: its figures measure the neighbours as much as the server.
BUSY_MACHINE = 0.1
#: Seconds the machine's CPU use is sampled before the runs, to warn if it is busy already.
BUSY_SAMPLE = 1.0



@dataclasses.dataclass(frozen=True)
class Peer:
    """A server to run workloads against."""

    name: str
    command: object  #: ``command(workdir)``: the argv that starts it (workdir: a fresh, empty folder)
    listening: str = LISTENING  #: regex for the line it prints once it listens: address, port
    protocol: str = "native"  #: what chat-load speaks to it (``--protocol``)
    load_flags: tuple = ()  #: chat-load flags of its own, after the workload's
    unavailable: object = None  #: ``unavailable()``: why it cannot run here, or None

    def skip_reason(self):
        return self.unavailable() if self.unavailable else None


def _script(name):
    return lambda workdir: [sys.executable, os.path.join(ROOT, "benchmarks", name), "--port", "0"]


def _no_irc_listener():
    """Why bin/chat-server's IRC listener cannot be benchmarked, or None when it can."""
    try:
        done = subprocess.run(chat_server_command("--help"), capture_output=True, text=True,
                              cwd=ROOT, timeout=30, stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"bin/chat-server --help failed: {err}"
    return None if "--irc-port" in done.stdout else "bin/chat-server has no --irc-port (its IRC listener) yet"


def _no_ngircd():
    return None if ngircd_binary() else "ngircd is not installed (Debian: apt-get install ngircd)"


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: This server again with --metrics-port on and scraped once a second during the run, to show
#: what metrics cost (workload 100x10 only; the chart and the goals leave it out).
METRICS_PORT = _free_port()
SCRAPE_EVERY = 1.0

PEERS = {p.name: p for p in (
    Peer("chatroom", lambda workdir: chat_server_command()),
    Peer("metrics", lambda workdir: chat_server_command("--metrics-port", str(METRICS_PORT))),
    Peer("naive", _script("naive_server.py")),
    Peer("asyncio", _script("asyncio_server.py")),
    Peer("chatroom-irc", lambda workdir: chat_server_irc_command(), listening=IRC_LISTENING,
         protocol="irc", unavailable=_no_irc_listener),
    # Its senders are IRC operators with user mode +F, ngIRCd's relaxed flood protection: without
    # it, ngIRCd handles 3 lines of a client per turn of its loop and throttles the rest.
    Peer("ngircd", ngircd_command, listening=NGIRCD_LISTENING, protocol="irc",
         load_flags=("--irc-oper", ":".join(NGIRCD_OPER)), unavailable=_no_ngircd),
)}
ALL_SERVERS = tuple(name for name in PEERS if name != "metrics")
NATIVE_SERVERS = ("chatroom", "naive", "asyncio")
IRC_SERVERS = ("chatroom-irc", "ngircd")
#: Peers other servers' throughput is compared with: a column "x NAME" each.
BASELINES = ("naive", "asyncio", "ngircd")


@dataclasses.dataclass
class Workload:
    name: str
    title: str
    args: list  #: bin/chat-load flags
    quick: list  #: flags that replace ``args``'s for --quick (same flags, smaller numbers)
    servers: tuple = NATIVE_SERVERS
    needs: tuple = ()  #: workloads whose results this one's figures are computed against

    def load_args(self, quick):
        return self.quick if quick else self.args

    def duration(self, quick):
        args = self.load_args(quick)
        return float(args[args.index("--duration") + 1])


#: Lines a sender may have in flight in the IRC workloads: chat-load's default, as in the native
#: workloads they mirror. Far more than ngIRCd reads ahead of a client (2 KiB); the rest waits in
#: the kernel's socket buffers, which is what TCP is for.
IRC_WINDOW = "128"

WORKLOADS = [
    Workload("10x1", "10 receivers, 1 sender",
             ["--receivers", "10", "--senders", "1", "--messages", "100000", "--duration", "10"],
             ["--receivers", "10", "--senders", "1", "--messages", "10000", "--duration", "3"]),
    Workload("100x10", "100 receivers, 10 senders",
             ["--receivers", "100", "--senders", "10", "--messages", "20000", "--duration", "10"],
             ["--receivers", "100", "--senders", "10", "--messages", "2000", "--duration", "3"],
             servers=NATIVE_SERVERS + ("metrics",)),
    Workload("1000x10", "1,000 receivers, 10 senders",
             ["--receivers", "1000", "--senders", "10", "--messages", "1000", "--duration", "10"],
             ["--receivers", "1000", "--senders", "10", "--messages", "200", "--duration", "3"]),
    Workload("idle5000", "5,000 idle + 100 active at 10 msg/s each",
             ["--idle", "5000", "--receivers", "0", "--senders", "100", "--rate", "10",
              "--messages", "100", "--duration", "10"],
             ["--idle", "1000", "--receivers", "0", "--senders", "100", "--rate", "10",
              "--messages", "20", "--duration", "2"]),
    Workload("10k", "10,000 clients in one room",
             ["--receivers", "9990", "--senders", "10", "--messages", "100", "--duration", "20",
              "--window", "16"],
             ["--receivers", "1990", "--senders", "10", "--messages", "50", "--duration", "5",
              "--window", "16"],
             servers=("chatroom",)),
    Workload("stalled", "100 receivers, 10 senders + 1 stalled receiver",
             ["--receivers", "100", "--senders", "10", "--messages", "20000", "--duration", "10",
              "--stalled", "1"],
             ["--receivers", "100", "--senders", "10", "--messages", "2000", "--duration", "3",
              "--stalled", "1"],
             needs=("100x10",)),
    # The same fan-out over IRC: this server's IRC listener against ngIRCd, same flags for both.
    Workload("irc100x10", "IRC: 100 receivers, 10 senders",
             ["--receivers", "100", "--senders", "10", "--messages", "20000", "--duration", "10",
              "--window", IRC_WINDOW],
             ["--receivers", "100", "--senders", "10", "--messages", "2000", "--duration", "3",
              "--window", IRC_WINDOW],
             servers=IRC_SERVERS),
    Workload("irc1000x10", "IRC: 1,000 receivers, 10 senders",
             ["--receivers", "1000", "--senders", "10", "--messages", "1000", "--duration", "10",
              "--window", IRC_WINDOW],
             ["--receivers", "1000", "--senders", "10", "--messages", "200", "--duration", "3",
              "--window", IRC_WINDOW],
             servers=IRC_SERVERS),
]
BY_NAME = {w.name: w for w in WORKLOADS}


# -- running --------------------------------------------------------------------------------------


def cpu_plan():
    """(server cpus, generator cpus) for taskset, or (None, None) with fewer than two cores."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return None, None
    return [cpus[0]], cpus[1:]


def pinned(cmd, cpus):
    if not cpus:
        return cmd
    return ["taskset", "-c", ",".join(map(str, cpus)), *cmd]


def generator_procs():
    """Worker processes chat-load runs with: one per core left to it by :func:`cpu_plan`."""
    _, load_cpus = cpu_plan()
    return len(load_cpus) if load_cpus else 1


def run_one(workload, server_name, quick, log, profile=False):
    """One workload against one fresh server; returns chat-load's JSON result (or an error).

    With ``profile``, py-spy samples the server for the whole run; the entry gets the path of the
    collapsed stacks and the top functions by own time.
    """
    peer = PEERS[server_name]
    server_cpus, load_cpus = cpu_plan()
    entry = {"workload": workload.name, "server": server_name, "protocol": peer.protocol}
    with tempfile.TemporaryDirectory(prefix=f"bench-{server_name}-") as workdir:
        try:
            server = ServerProcess(pinned(peer.command(workdir), server_cpus),
                                   listening=peer.listening)
        except SetupError as err:
            entry["error"] = str(err)
            return entry
        return _measure(workload, peer, server, entry, quick, log, profile, load_cpus)


def _measure(workload, peer, server, entry, quick, log, profile, load_cpus):
    server_name = peer.name
    spy = Profiler(server.pid, f"{workload.name}-{server_name}", load_cpus) if profile else None
    cmd = pinned([sys.executable, os.path.join(ROOT, "bin", "chat-load"), "--json",
                  "--protocol", peer.protocol, "--port", str(server.port),
                  "--server-pid", str(server.pid), "--procs", str(generator_procs()),
                  *workload.load_args(quick), *peer.load_flags], load_cpus)
    if sys.stderr.isatty():
        log(f"  {workload.name:<10} {server_name:<12} ...")
    started = time.monotonic()
    scraper = Scraper(METRICS_PORT if server_name == "metrics" else None)
    machine_before = machine_busy()
    ours_before = read_cpu(server.pid) or 0.0, children_cpu()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, stdin=subprocess.DEVNULL,
                              timeout=workload.duration(quick) + RUN_SLACK)
        if done.returncode == 0:
            entry["result"] = json.loads(done.stdout)
            entry["result"]["server_dropped"] = server.dropped
        else:
            entry["error"] = (done.stderr or done.stdout).strip()[-2000:]
    except subprocess.TimeoutExpired:
        entry["error"] = "load run did not finish in time"
    finally:
        # Read before the server is stopped and waited for: from then on its CPU time is in
        # children_cpu() too, and would count twice.
        server_cpu = (read_cpu(server.pid) or ours_before[0]) - ours_before[0]
        load_cpu = children_cpu() - ours_before[1]
        machine_after = machine_busy()
        elapsed = time.monotonic() - started
        if scraper.stop():
            entry["scrapes"] = scraper.count
        if spy is not None:
            entry["profile"] = spy.stop()
        code = server.stop()
    if code not in (0, None) and "result" not in entry:
        entry["server_output"] = server.output()
    entry["wall_seconds"] = round(time.monotonic() - started, 2)
    # CPU that neither this server nor the load generator used: other programs on the machine,
    # which make the figures of this run unreliable.
    entry["other_cpu_share"] = round(max(0.0, machine_after - machine_before - server_cpu - load_cpu)
                                     / elapsed, 3)
    log(f"\r  {workload.name:<10} {server_name:<12} {describe(entry)}\033[K\n"
        if sys.stderr.isatty() else f"  {workload.name:<10} {server_name:<12} {describe(entry)}\n")
    return entry


class Scraper:
    """Scrapes the server's /metrics every :data:`SCRAPE_EVERY` s while a run lasts (if it has them)."""

    def __init__(self, port):
        import threading

        self.count = 0
        self.done = threading.Event()
        self.port = port
        if self.port is not None:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()

    def _run(self):
        import urllib.request

        while not self.done.wait(SCRAPE_EVERY):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                    r.read()
                self.count += 1
            except OSError:
                pass

    def stop(self):
        """Stop scraping; returns whether this run was scraped at all."""
        self.done.set()
        if self.port is not None:
            self.thread.join()
        return self.port is not None


def machine_busy():
    """CPU seconds all processors have spent busy since boot (from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Profiler:
    """``py-spy record`` attached to a running server until :meth:`stop`; raw collapsed stacks."""

    #: Samples a second: enough for a top list in a few seconds, cheap for the server.
    RATE = 250
    #: Seconds py-spy gets to write its output after SIGINT.
    STOP_TIMEOUT = 30.0

    def __init__(self, pid, name, cpus):
        self.path = os.path.join(RESULTS, f"profile-{name}.txt")
        os.makedirs(RESULTS, exist_ok=True)
        spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        cmd = [spy, "record", "--pid", str(pid), "--rate", str(self.RATE), "--nonblocking",
               "--format", "raw", "--output", self.path]
        self.proc = subprocess.Popen(pinned(cmd, cpus), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(self.STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return {"path": os.path.relpath(self.path, ROOT), "top": profile_top(self.path)}


def profile_top(path, n=15):
    """Own time from py-spy's collapsed stacks: ``{"functions": [(share, frame)], "lines": [...]}``."""
    functions = collections.Counter()
    lines = collections.Counter()
    try:
        with open(path) as f:
            for line in f:
                stack, _, count = line.rstrip("\n").rpartition(" ")
                leaf = stack.rsplit(";", 1)[-1].strip()
                if not count.isdigit() or not leaf:
                    continue  # a sample py-spy could not read (it does not pause the server)
                lines[leaf] += int(count)
                functions[re.sub(r":\d+\)$", ")", leaf)] += int(count)
    except OSError:
        return {"functions": [], "lines": []}
    total = sum(functions.values()) or 1
    return {"samples": total,
            "functions": [(round(c / total, 4), frame) for frame, c in functions.most_common(n)],
            "lines": [(round(c / total, 4), frame) for frame, c in lines.most_common(n)]}


def describe(entry):
    if "error" in entry:
        return "ERROR: " + entry["error"].splitlines()[-1] if entry["error"] else "ERROR"
    r = entry["result"]
    return (f"{r['delivered_per_sec']:>12,.0f} msg/s  p50 {r['latency_ms']['p50']:8.2f} ms  "
            f"p99 {r['latency_ms']['p99']:8.2f} ms  lost {r['lost']:,}  CPU server {_share(r['server_cpu_share'])}"
            f" load {_share(r['load_cpu_share'])} other {_share(entry.get('other_cpu_share'))}"
            f"  ({entry['wall_seconds']:.0f} s)")


def _share(x):
    return f"{x:.0%}" if x is not None else "?"


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import gevent

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "gevent": gevent.__version__,
        "kernel": platform.release(),
        "pinning": "server on cpu %s, load on cpu %s" % tuple(
            ",".join(map(str, c)) for c in cpu_plan()) if cpu_plan()[0] else "none (one core)",
        "generator": f"bin/chat-load (chatroom/load/), {generator_procs()} process"
                     f"{'es' if generator_procs() > 1 else ''}, --check {DEFAULT_CHECK} per process "
                     f"unless a workload says otherwise",
    }


def git_commit():
    """The checkout's commit (with -dirty when files differ from it), or None outside git."""
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                              text=True, cwd=ROOT, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def check_nofile(selected):
    """The 10k run needs 10,000 sockets on each side: warn early if the hard limit is too low."""
    if "10k" not in selected:
        return
    _, hard = raise_nofile_limit()
    if hard < NOFILE_FOR_10K:
        sys.stderr.write(f"warning: open-files limit {hard} < {NOFILE_FOR_10K}: the 10k run will "
                         f"fail; raise it (ulimit -n) or skip it (--only)\n")


# -- figures --------------------------------------------------------------------------------------


def index(entries):
    return {(e["workload"], e["server"]): e.get("result") for e in entries}


def rss_per_connection(r):
    """Server KiB per connection: (RSS with every client connected - RSS before) / clients."""
    rss = r.get("server_rss_kib") or {}
    if "baseline" not in rss or "connected" not in rss:
        return None
    return (rss["connected"] - rss["baseline"]) / max(1, r["clients"]["total"])


def rows(entries):
    """Table rows: one per (workload, server), with ratios to the baselines and a note."""
    got = index(entries)
    out = []
    for w in WORKLOADS:
        for server in w.servers:
            if (w.name, server) not in got:
                continue
            r = got[(w.name, server)]
            row = {"workload": w.name, "title": w.title, "server": server, "result": r}
            if r is None:
                row["note"] = "error"
                out.append(row)
                continue
            for base in BASELINES:
                b = got.get((w.name, base))
                if b and b["delivered_per_sec"] and server != base:
                    row["x_" + base] = r["delivered_per_sec"] / b["delivered_per_sec"]
            notes = []
            if r["lost"] or r["duplicates"] or r["out_of_order"]:
                notes.append(f"lost {r['lost']:,} dup {r['duplicates']:,} ooo {r['out_of_order']:,}")
            if r["clients"]["idle"]:
                per = rss_per_connection(r)
                row["rss_per_conn_kib"] = per
                if per is not None:
                    notes.append(f"RSS {per:.1f} KiB/conn")
            if r["clients"]["stalled"]:
                healthy = got.get(("100x10", server))
                if healthy and healthy["delivered_per_sec"]:
                    row["healthy_ratio"] = r["delivered_per_sec"] / healthy["delivered_per_sec"]
                    notes.append(f"{row['healthy_ratio']:.0%} of no-stall")
                notes.append("stalled dropped" if r["stalled_dropped"] else "stalled kept")
            rss = r.get("server_rss_kib") or {}
            if rss.get("peak"):
                row["rss_peak_mib"] = rss["peak"] / 1024
            if r["disconnected"]:
                notes.append(f"{r['disconnected']} disconnected")
            other = next((e.get("other_cpu_share") for e in entries
                          if e["workload"] == w.name and e["server"] == server), None)
            if other is not None and other > BUSY_MACHINE:
                notes.append(f"machine busy: other programs used {other:.0%} CPU")
            if generator_bound(r):
                notes.append("generator-bound: the load generator, not the server, was at its limit")
            row["note"] = ", ".join(notes)
            out.append(row)
    return out


HEADER = ["workload", "server", "delivered msg/s", "p50 ms", "p99 ms", "lost",
          *(f"x {b}" for b in BASELINES), "server CPU", "load CPU", "server RSS peak", "notes"]
#: Columns aligned right (numbers).
NUMERIC = set(range(2, len(HEADER) - 1))


#: A run whose generator used this share of its cores while the server used less than
#: SATURATED of its one was limited by the generator: its figures are the server's floor.
GENERATOR_LIMIT = 0.9
#: Server CPU share from which a run counts as saturating the server.
SATURATED = 0.9


def generator_bound(r):
    load, server = r.get("load_cpu_share"), r.get("server_cpu_share")
    return load is not None and server is not None and load >= GENERATOR_LIMIT and server < SATURATED


def cells(row):
    r = row["result"]
    if r is None:
        return [row["workload"], row["server"], "error"] + [""] * (len(HEADER) - 3)

    def ratio(key):
        return f"{row[key]:.1f}x" if key in row else ""

    return [row["workload"], row["server"], f"{r['delivered_per_sec']:,.0f}",
            f"{r['latency_ms']['p50']:.2f}", f"{r['latency_ms']['p99']:.2f}", f"{r['lost']:,}",
            *(ratio("x_" + b) for b in BASELINES),
            _share(r.get("server_cpu_share")) if r.get("server_cpu_share") is not None else "",
            _share(r.get("load_cpu_share")) if r.get("load_cpu_share") is not None else "",
            f"{row['rss_peak_mib']:.1f} MiB" if "rss_peak_mib" in row else "", row["note"]]


def columns(table):
    """The header, each row's cells and the numeric column indexes, without ratio columns that
    no row has a figure in (a run of only IRC workloads has no naive or asyncio)."""
    data = [cells(r) for r in table]
    keep = [i for i, name in enumerate(HEADER)
            if not name.startswith("x ") or any(line[i] for line in data)]
    return ([HEADER[i] for i in keep], [[line[i] for i in keep] for line in data],
            {k for k, i in enumerate(keep) if i in NUMERIC})


def table_text(table):
    header, body, numeric = columns(table)
    data = [header] + body
    widths = [max(len(line[i]) for line in data) for i in range(len(header))]
    lines = []
    for n, line in enumerate(data):
        lines.append("  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                               for i, (c, w) in enumerate(zip(line, widths))).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def table_markdown(table):
    header, body, numeric = columns(table)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i in numeric else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in body]
    return "\n".join(lines)


def goals(entries):
    """(goal, verdict, detail) for each goal the run has the figures for."""
    got = index(entries)
    out = []
    for name in ("100x10", "1000x10"):
        ours, naive, aio = (got.get((name, s)) for s in ("chatroom", "naive", "asyncio"))
        if ours and naive and aio:
            x = ours["delivered_per_sec"] / max(1e-9, naive["delivered_per_sec"])
            ok = x >= 10 and ours["delivered_per_sec"] > aio["delivered_per_sec"]
            out.append((f"{name}: >= 10x naive and above asyncio", ok,
                        f"{x:.1f}x naive, {ours['delivered_per_sec'] / max(1e-9, aio['delivered_per_sec']):.1f}x asyncio"))
    ours = got.get(("idle5000", "chatroom"))
    if ours:
        p99 = ours["latency_ms"]["p99"]
        per = rss_per_connection(ours)
        out.append(("idle5000: p99 < 50 ms", p99 < 50, f"p99 {p99:.2f} ms"))
        if per is not None:
            out.append(("idle5000: server RSS per connection < 8 KiB", per < 8, f"{per:.2f} KiB"))
    ours = got.get(("10k", "chatroom"))
    if ours:
        ok = ours["lost"] == 0 and ours["disconnected"] == 0 and ours["clients"]["total"] >= 10_000
        out.append(("10k: 10,000 clients, nothing lost", ok,
                    f"{ours['clients']['total']:,} clients, {ours['delivered_per_sec']:,.0f} msg/s, lost {ours['lost']:,}"))
    ours, healthy = got.get(("stalled", "chatroom")), got.get(("100x10", "chatroom"))
    if ours and healthy:
        ratio = ours["delivered_per_sec"] / max(1e-9, healthy["delivered_per_sec"])
        out.append(("stalled: healthy throughput within 10% of no-stall", ratio >= 0.9,
                    f"{ratio:.0%}, stalled client {'dropped' if ours['stalled_dropped'] else 'kept'}"))
    return out


def goals_text(entries, markdown=False):
    lines = []
    for goal, ok, detail in goals(entries):
        verdict = "met" if ok else "NOT met"
        lines.append(f"- {goal}: **{verdict}** ({detail})" if markdown else f"  [{verdict:^7}] {goal}: {detail}")
    return "\n".join(lines)


def chart(entries, path):
    """Throughput and p99 latency per workload, one bar per server; returns False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    got = index(entries)
    names = [w.name for w in WORKLOADS if any(got.get((w.name, s)) for s in ALL_SERVERS)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / len(ALL_SERVERS)
    for k, server in enumerate(ALL_SERVERS):
        xs = [i + (k - (len(ALL_SERVERS) - 1) / 2) * width for i in range(len(names))]
        results = [got.get((n, server)) for n in names]
        thr = [r["delivered_per_sec"] if r else 0 for r in results]
        p99 = [r["latency_ms"]["p99"] if r else 0 for r in results]
        axes[0].bar(xs, thr, width, label=server)
        axes[1].bar(xs, p99, width, label=server)
    for ax, title in ((axes[0], "delivered messages/s (log)"), (axes[1], "p99 latency, ms (log)")):
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names)
        ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    fig.suptitle("chat-load, same workloads per server (" + machine()["cpu"] + ")", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- command line ---------------------------------------------------------------------------------


def build_parser():
    p = argparse.ArgumentParser(description="Run the chat-load workloads side by side against "
                                            "this server and its peers: the naive and asyncio "
                                            "baselines (native protocol) and ngIRCd (IRC).")
    p.add_argument("--quick", action="store_true", help="smaller numbers: a smoke run of a minute or so")
    p.add_argument("--only", default="",
                   help="comma-separated workloads to run: " + ", ".join(BY_NAME))
    p.add_argument("--servers", default=",".join(PEERS),
                   help="comma-separated servers to run against (default %(default)s)")
    p.add_argument("--profile", action="store_true",
                   help="sample this server (chatroom, chatroom-irc) with py-spy during each run; "
                        "top functions are printed")
    p.add_argument("--markdown", action="store_true", help="print the table and goals as markdown")
    p.add_argument("--from", dest="source", metavar="JSON",
                   help="do not run: print the table (and chart) of a saved results file")
    p.add_argument("--out", default=os.path.join(RESULTS, "latest.json"),
                   help="where to write the raw results (default %(default)s)")
    p.add_argument("--driver", choices=("chat-load", "c"), default="chat-load",
                   help="load generator: chat-load (default), or c: benchmarks/peers.py, the C driver "
                        "against this server, Redis pub/sub and ngIRCd (--quick, --only and --markdown "
                        "pass through)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.driver == "c":
        import peers

        return peers.main((["--quick"] if args.quick else []) + (["--markdown"] if args.markdown else [])
                          + (["--only", args.only] if args.only else []))
    if args.source:
        with open(args.source) as f:
            saved = json.load(f)
        report(saved, args, write=False)
        return 0
    selected = [n for n in args.only.split(",") if n] or [w.name for w in WORKLOADS]
    unknown = [n for n in selected if n not in BY_NAME]
    servers = [s for s in args.servers.split(",") if s]
    if unknown or any(s not in PEERS for s in servers):
        sys.stderr.write(f"unknown workload or server: {unknown or servers}\n")
        return 2
    for name in list(selected):
        for need in BY_NAME[name].needs:
            if need not in selected:
                selected.insert(selected.index(name), need)
    check_nofile(selected)
    raise_nofile_limit()  # for the servers started from here too (ngIRCd does not raise its own)
    wanted = {s for w in WORKLOADS if w.name in selected for s in w.servers if s in servers}
    skipped = {}
    for name in sorted(wanted):
        reason = PEERS[name].skip_reason()
        if reason:
            skipped[name] = reason
            sys.stderr.write(f"skipped: every run against {name}: {reason}\n")
    before = machine_busy()
    time.sleep(BUSY_SAMPLE)
    busy = (machine_busy() - before) / BUSY_SAMPLE
    if busy > BUSY_MACHINE:
        sys.stderr.write(f"warning: other programs are using {busy:.0%} CPU: the figures will be low "
                         f"and noisy (the table flags each run they disturbed)\n")
    info = machine()
    sys.stderr.write(f"{info['cpu']}, {info['cores']} cores, Python {info['python']}, "
                     f"gevent {info['gevent']}; pinning: {info['pinning']}\n")
    entries = []
    started = time.monotonic()
    for w in WORKLOADS:
        if w.name not in selected:
            continue
        for server in w.servers:
            if server in servers and server not in skipped:
                entries.append(run_one(w, server, args.quick, sys.stderr.write,
                                       profile=args.profile and server.startswith("chatroom")))
    saved = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "quick": args.quick,
        "machine": info,
        "wall_seconds": round(time.monotonic() - started, 1),
        "workloads": {w.name: {"title": w.title, "args": w.load_args(args.quick)}
                      for w in WORKLOADS if w.name in selected},
        "runs": entries,
        "skipped": skipped,
    }
    report(saved, args, write=True)
    return 1 if any("error" in e for e in entries) else 0


def report(saved, args, write):
    entries = saved["runs"]
    table = rows(entries)
    m = saved["machine"]
    if args.markdown:
        commit = f" of commit {saved['commit']}" if saved.get("commit") else ""
        print(f"Run {saved['date']}{commit}{' (--quick)' if saved['quick'] else ''}: {m['cpu']}, {m['cores']} cores, "
              f"Python {m['python']}, gevent {m['gevent']}; {m['pinning']}; "
              f"{saved['wall_seconds']:.0f} s in all. Load generator: {m.get('generator', 'bin/chat-load')}.\n")
        print(table_markdown(table))
        print()
        print(goals_text(entries, markdown=True))
    else:
        print(f"load generator: {m.get('generator', 'bin/chat-load')}\n")
        print(table_text(table))
        print()
        print(goals_text(entries))
    for name, reason in saved.get("skipped", {}).items():
        print(f"{'- ' if args.markdown else '  '}skipped {name}: {reason}")
    for e in entries:
        if e.get("profile"):
            top = e["profile"]["top"]
            print(f"\nprofile of {e['server']} in {e['workload']}: own time of "
                  f"{top.get('samples', 0):,} samples ({e['profile']['path']})")
            for kind in ("functions", "lines"):
                print(f"  by {kind[:-1]}:")
                for share, frame in top[kind]:
                    print(f"    {share:6.1%}  {frame}")
        if "error" in e:
            print(f"\n{e['workload']} on {e['server']} failed:\n{e['error']}", file=sys.stderr)
    if not write:
        return
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(saved, f, indent=1)
    png = os.path.splitext(args.out)[0] + ".png"
    drawn = chart(entries, png)
    print(f"\nraw results: {os.path.relpath(args.out, ROOT)}"
          + (f", chart: {os.path.relpath(png, ROOT)}" if drawn else " (no chart: matplotlib missing)"),
          file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
