"""Figures of a run: the workers' parts merged, percentiles, the server's RSS and CPU, the summary."""

import collections
import math
import os
import time


def percentile(hist, q):
    """The ``q`` quantile (0..1) of a {bucket_us: count} histogram, in microseconds."""
    total = sum(hist.values())
    if not total:
        return 0
    rank = max(1, math.ceil(q * total))
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            return bucket
    return max(hist)


def merge(cfg, t0, parts, watch):
    """One result from the workers' ``parts`` and the :class:`ServerWatch` ``watch``."""
    sent = sum(p["sent"] for p in parts)
    delivered = sum(p["delivered"] for p in parts)
    expected = cfg.receivers * sent + max(0, cfg.senders - 1) * sent
    hist = collections.Counter()
    for p in parts:
        hist.update({int(k): v for k, v in p["latency_hist"].items()})
    samples = sum(hist.values())
    # The run took until the last line arrived, or, when the senders were cut off by the
    # duration (a stalled server), until they stopped: whichever is later.
    last_ns = max((p["last_ns"] for p in parts), default=0)
    if sent and delivered < expected:
        last_ns = max([last_ns] + [p["senders_end_ns"] for p in parts])
    elapsed = (last_ns - t0) / 1e9 if last_ns > t0 else 0.0
    disconnected = collections.Counter()
    for p in parts:
        disconnected.update(p["disconnected"])
    lat_sum = sum(p["latency_sum_ns"] for p in parts)
    server_cpu, wall = watch.busy()
    load_cpu = sum(p["cpu_seconds"] for p in parts)
    return {
        "server": {"host": cfg.host, "port": cfg.port},
        "protocol": cfg.protocol,
        "transport": cfg.transport,
        "room": cfg.room,
        "clients": {"receivers": cfg.receivers, "senders": cfg.senders, "idle": cfg.idle,
                    "stalled": cfg.stalled, "total": cfg.receivers + cfg.senders + cfg.idle + cfg.stalled,
                    "checked": sum(p["checked"] for p in parts)},
        "procs": cfg.procs,
        "messages_per_sender": cfg.messages,
        "rate_per_sender": cfg.rate,
        "size": cfg.size,
        "window": cfg.window,
        "duration_limit": cfg.duration,
        "connect_seconds": round(max(p["connect_seconds"] for p in parts), 3),
        "sent": sent,
        "expected": expected,
        "delivered": delivered,
        "lost": max(0, expected - delivered),
        "duplicates": sum(p["duplicates"] for p in parts),
        "out_of_order": sum(p["out_of_order"] for p in parts),
        "elapsed_seconds": round(elapsed, 4),
        "delivered_per_sec": round(delivered / elapsed, 1) if elapsed else 0.0,
        "sent_per_sec": round(sent / elapsed, 1) if elapsed else 0.0,
        "latency_ms": {
            "p50": percentile(hist, 0.50) / 1000,
            "p90": percentile(hist, 0.90) / 1000,
            "p99": percentile(hist, 0.99) / 1000,
            "max": max((p["latency_max_ns"] for p in parts), default=0) / 1e6,
            "mean": round(lat_sum / samples / 1e6, 3) if samples else 0.0,
            "samples": samples,
        },
        "disconnected": sum(disconnected.values()),
        "disconnect_reasons": dict(disconnected),
        "stalled_dropped": sum(p["stalled_dropped"] for p in parts),
        "idle_alive": sum(p["idle_alive"] for p in parts),
        "idle_heard": sum(p["idle_heard"] for p in parts),
        "server_rss_kib": watch.rss_result(),
        # CPU used from the start of the talk until every line was in, as a share of that
        # wall time: the server's of one core, the generator's of its --procs processes.
        "server_cpu_seconds": round(server_cpu, 2) if server_cpu is not None else None,
        "server_cpu_share": round(server_cpu / wall, 3) if server_cpu is not None and wall else None,
        "load_cpu_seconds": round(load_cpu, 2),
        "load_cpu_share": round(load_cpu / wall / cfg.procs, 3) if wall else None,
    }


def read_rss(pid):
    """VmRSS and VmHWM of process ``pid`` in KiB, from /proc (None where unavailable)."""
    if not pid:
        return None, None
    rss = hwm = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def read_cpu(pid):
    """CPU seconds (user + system) process ``pid`` has used, from /proc/<pid>/stat, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    # After the command name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerWatch:
    """The server's RSS and CPU time at the moments a run cares about.

    Named samples: ``baseline`` (before any client), ``connected`` (after the barrier, when the
    clock starts), ``drained`` (every line in), ``end``; the RSS peak is sampled as the run goes.
    """

    def __init__(self, pid):
        self.pid = pid
        self.rss = {}
        self.cpu = {}
        self.at = {}
        self.peak = None

    def sample(self, name=None):
        if not self.pid:
            return
        rss, _ = read_rss(self.pid)
        if rss is None:
            return
        if name:
            self.rss[name] = rss
            self.cpu[name] = read_cpu(self.pid)
            self.at[name] = time.monotonic()
        self.peak = max(self.peak or 0, rss)

    def rss_result(self):
        if not self.rss:
            return None
        out = dict(self.rss)
        out["peak"] = self.peak
        out["hwm"] = read_rss(self.pid)[1]
        return out

    def busy(self):
        """(server CPU seconds, wall seconds) from the start of the talk until every line was in."""
        try:
            return (self.cpu["drained"] - self.cpu["connected"],
                    self.at["drained"] - self.at["connected"])
        except (KeyError, TypeError):
            return None, None


def _mib(kib):
    return f"{kib / 1024:.1f} MiB" if kib is not None else "?"


def format_summary(r):
    """The human-readable report of one merged result."""
    c = r["clients"]
    lat = r["latency_ms"]
    lines = [
        f"chat-load: {c['receivers']:,} receivers + {c['senders']:,} senders in room '{r['room']}'"
        + (f", {c['idle']:,} idle" if c["idle"] else "")
        + (f", {c['stalled']:,} stalled" if c["stalled"] else "")
        + f" on {r['server']['host']}:{r['server']['port']}"
        + (" over IRC" if r.get("protocol") == "irc" else "")
        + (" over WebSocket" if r.get("transport") == "ws" else "")
        + f" ({r['procs']} process"
        + ("es)" if r["procs"] > 1 else ")"),
        f"  connect     {c['total']:,} clients in {r['connect_seconds']:.2f} s",
        f"  sent        {r['sent']:,} messages ({r['sent_per_sec']:,.0f} msg/s)",
        f"  delivered   {r['delivered']:,} of {r['expected']:,} "
        f"({r['delivered_per_sec']:,.0f} msg/s over {r['elapsed_seconds']:.2f} s)",
        f"  latency     p50 {lat['p50']:.2f} ms  p90 {lat['p90']:.2f} ms  p99 {lat['p99']:.2f} ms  "
        f"max {lat['max']:.2f} ms  ({lat['samples']:,} samples from {c['checked']:,} checked clients)",
        f"  problems    lost {r['lost']:,}, duplicates {r['duplicates']:,}, "
        f"out of order {r['out_of_order']:,}, disconnected {r['disconnected']:,}"
        + (f" {r['disconnect_reasons']}" if r["disconnected"] else ""),
    ]
    if c["stalled"]:
        lines.append(f"  stalled     {r['stalled_dropped']} of {c['stalled']} dropped by the server")
    if c["idle"]:
        lines.append(f"  idle        {r['idle_alive']:,} of {c['idle']:,} still connected at the end, "
                     f"{r['idle_heard']:,} lines heard")
    rss = r.get("server_rss_kib")
    if rss:
        lines.append(
            f"  server RSS  {_mib(rss.get('baseline'))} before clients, {_mib(rss.get('connected'))} "
            f"connected, {_mib(rss.get('end'))} at the end, peak {_mib(rss.get('peak'))}")
    if r.get("server_cpu_share") is not None:
        lines.append(f"  CPU         server {r['server_cpu_share']:.0%} of a core, load generator "
                     f"{r['load_cpu_share']:.0%} of {r['procs']} (until every line was in)")
    return "\n".join(lines)
