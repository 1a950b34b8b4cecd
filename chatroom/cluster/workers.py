"""``--workers N``: a supervisor process running N server processes that share the ports."""

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time

from .registry import default_node_name
from ..transport.sockets import reuse_port_socket

log = logging.getLogger("chatroom.cluster")

#: Seconds between the supervisor's looks at its workers.
SUPERVISE_POLL = 0.2
#: Seconds before a worker that exited on its own is started again; doubled after each exit
#: that came sooner than WORKER_STABLE seconds after its start, up to WORKER_RESTART_MAX.
WORKER_RESTART_DELAY = 1.0
WORKER_RESTART_MAX = 30.0
WORKER_STABLE = 10.0
#: Seconds a stopping worker gets beyond its own --shutdown-timeout before it is killed.
WORKER_STOP_GRACE = 5.0

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _die_with_parent():
    """In a worker, before exec: get SIGTERM if the supervisor dies, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_workers(args, argv):
    """Run ``args.workers`` server processes on one port until SIGTERM/SIGINT; returns the exit code.

    Each worker is this server (``argv`` plus ``--workers 1 --reuse-port --port P [--irc-port Q]
    --node <node>-<n>``), so each is a node of the cluster at ``--redis``. The supervisor holds
    the ports bound (never listening, so no connection comes to it; a port given as 0 is picked
    here, once, for every worker), restarts a worker that exits, and passes SIGHUP on to them.
    """
    probes = []
    ports = {}
    for flag, wanted in (("--port", args.port), ("--irc-port", args.irc_port)):
        if wanted is None:
            continue
        try:
            probes.append(reuse_port_socket((args.host, wanted)))
        except OSError as err:
            log.error("cannot bind %s:%s: %s", args.host, wanted, err)
            for probe in probes:
                probe.close()
            return 1
        ports[flag] = probes[-1].getsockname()[1]
    port = ports["--port"]
    chosen = [arg for flag, p in ports.items() for arg in (flag, str(p))]
    base = args.node or default_node_name()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))

    def start(n):
        cmd = [sys.executable, "-m", "chatroom.server", *argv, "--workers", "1", "--reuse-port",
               *chosen, "--node", f"{base}-{n}"]
        if args.metrics_port:  # one scrape target per worker: --metrics-port + n
            cmd += ["--metrics-port", str(args.metrics_port + n)]
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)

    signals = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: signals.append(signum))
    workers = {}

    def reload(signum, frame):
        """SIGHUP (systemd's ExecReload) is for the workers: each re-reads its files itself."""
        for proc in list(workers.values()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGHUP)

    signal.signal(signal.SIGHUP, reload)
    irc = f", IRC port {ports['--irc-port']}" if "--irc-port" in ports else ""
    log.info("Starting %d workers on port %d%s (supervisor pid %d)", args.workers, port, irc,
             os.getpid())
    workers.update((n, start(n)) for n in range(1, args.workers + 1))
    started = {n: time.monotonic() for n in workers}
    delays = dict.fromkeys(workers, WORKER_RESTART_DELAY)
    restart_at = {}
    while not signals:
        time.sleep(SUPERVISE_POLL)
        now = time.monotonic()
        for n, proc in workers.items():
            if proc.poll() is not None and n not in restart_at:
                delay = delays[n] if now - started[n] < WORKER_STABLE else WORKER_RESTART_DELAY
                delays[n] = min(delay * 2, WORKER_RESTART_MAX)
                restart_at[n] = now + delay
                log.warning("Worker %d (pid %d) exited with %s; restarting in %.0f s",
                            n, proc.pid, proc.returncode, delay)
        for n, when in list(restart_at.items()):
            if now >= when and not signals:
                del restart_at[n]
                workers[n], started[n] = start(n), now
    log.info("Stopping %d workers", len(workers))
    for proc in workers.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + args.shutdown_timeout + WORKER_STOP_GRACE
    codes = []
    for proc in workers.values():
        try:
            codes.append(proc.wait(max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
    for probe in probes:
        probe.close()
    return 0 if all(code == 0 for code in codes) else 1
