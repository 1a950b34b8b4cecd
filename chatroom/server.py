"""``chat-server``: settings in, listeners up, run until SIGTERM.

The program around the pieces: it reads the settings (:mod:`chatroom.settings`), builds the
registry (alone, or a cluster node with ``--redis``), opens a listener per protocol on the
transport (:mod:`chatroom.transport.server`), and handles signals and logging.
"""

import json
import logging
import os
import signal
import sqlite3
import sys
import time
import unicodedata

import gevent
import gevent.event

from . import settings
from .codec.native import format_addr
from .core.registry import Registry
from .transport.native import NativeClient
from .transport.server import REJECT_SLOTS, ChatServer
from .transport.tls import make_context
from .transport.sockets import BACKLOG, RESERVED_FDS, raise_nofile_limit, reuse_port_socket

log = logging.getLogger("chatroom.server")


class _LogFormatter(logging.Formatter):
    """Plain lines for information, the level in front of anything worse."""

    def format(self, record):
        text = record.getMessage()
        if record.levelno > logging.INFO:
            text = f"{record.levelname}: {text}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``event`` (the message) and
    ``fields``: the logger, the message's template and arguments when it has some (so lines of
    one kind group by ``fields.template``), and ``exception`` with its traceback."""

    def format(self, record):
        fields = {"logger": record.name}
        if record.args:
            fields["template"] = record.msg
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            fields["args"] = [a if isinstance(a, (int, float, str, bool, type(None))) else str(a)
                              for a in args]
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return json.dumps({"time": f"{when}.{int(record.msecs):03d}Z", "level": record.levelname,
                           "event": record.getMessage(), "fields": fields}, ensure_ascii=False)


def make_server(args):
    """Build a :class:`ChatServer` with its listeners from parsed settings ``args`` (not yet started).

    With ``--reuse-port`` the listening sockets are bound here; with ``--redis`` the registry is a
    cluster node's (its link to Redis starts with ``registry.start()``).
    """
    limits = dict(
        outbox_limit=args.outbox_limit,
        soft_limit=args.outbox_soft_limit,
        soft_seconds=args.outbox_soft_seconds,
        presence_limit=args.presence_limit,
    )
    if args.redis:
        from .cluster import ClusterRegistry

        registry = ClusterRegistry(args.redis, args.node, args.cluster_ttl, **limits)
    else:
        registry = Registry(**limits)
    server = ChatServer(
        registry=registry,
        max_clients=args.max_clients,
        max_per_ip=settings.max_per_ip(args),
        max_line=args.max_line,
        flood_rate=args.flood_rate,
        flood_burst=args.flood_burst,
        send_timeout=args.send_timeout,
        idle_timeout=args.idle_timeout,
        ping_timeout=args.ping_timeout,
        shutdown_timeout=args.shutdown_timeout,
        server_name=args.server_name,
        motd=_read_motd(args.motd),
        web_max_message=args.web_max_message,
        tls_handshake_timeout=args.tls_handshake_timeout,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        accounts=_open_accounts(args),
        password=_read_password(args.password_file),
        opers=frozenset(name.casefold() for name in args.oper or ()),
        register_before_connect=args.register_before_connect == "on",
    )
    origins = [o.strip().rstrip("/") for o in (args.web_origin or "").split(",") if o.strip()]
    server.web_any_origin = "*" in origins
    server.web_origins = frozenset(origins) if origins and "*" not in origins else None

    def address(port):
        if args.reuse_port:
            return reuse_port_socket((args.host, port), listen=BACKLOG)
        return (args.host, port)

    if args.history == "on":
        _keep_history(server, args)
    server.listen(address(args.port), NativeClient)
    if args.irc_port is not None:
        from .transport.irc import IrcClient

        server.listen(address(args.irc_port), IrcClient)
    if args.web_port is not None:
        from .transport.web import HttpClient

        server.listen(address(args.web_port), HttpClient)
    if args.tls_port is not None:
        server.listen(address(args.tls_port), NativeClient, tls=True)
    if args.irc_tls_port is not None:
        from .transport.irc import IrcClient

        server.listen(address(args.irc_tls_port), IrcClient, tls=True)
    if args.web_tls_port is not None:
        from .transport.web import HttpClient

        server.listen(address(args.web_tls_port), HttpClient, tls=True)
    return server


def _settings(argv):
    """Parse and check the settings; a bad one exits (status 2) saying which and why."""
    parser = settings.build_parser()
    try:
        args = settings.parse_args(argv)
    except settings.ConfigError as err:
        parser.error(str(err))
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > 1 and not args.redis:
        parser.error("--workers above 1 needs --redis: the workers are one chat through it")
    tls = any(p is not None for p in (args.tls_port, args.irc_tls_port, args.web_tls_port))
    if tls and not (args.tls_cert and args.tls_key):
        parser.error("--tls-port, --irc-tls-port and --web-tls-port need --tls-cert and --tls-key")
    if args.motd is not None:
        try:
            _read_motd(args.motd)
        except OSError as err:
            parser.error(f"--motd {args.motd}: {err.strerror or err}")
    return args



def _keep_history(server, args):
    """Record every room message and replay it (chatroom/store/history.py): under ``--data-dir``,
    or with ``--redis`` in Redis Streams every node of the cluster writes and reads."""
    from .store.history import History, SqliteStore
    from .codec.native import Encoder as NativeEncoder, format_notice

    if args.redis:
        from .store.redis_history import RedisStreamStore

        store = RedisStreamStore(args.redis, args.history_max, args.history_days)
    else:
        directory = args.data_dir or settings.default_data_dir()
        store = SqliteStore(directory, args.history_max, args.history_days)

    def on_status(up):
        if up:
            line = format_notice("history-up", "messages are saved in the room history again")
        else:
            line = format_notice("history-down", "messages are not being saved in the room history")
        registry = server.registry
        for member in list(registry.ids.values()):
            if isinstance(member.encoder, NativeEncoder):  # framed for web clients by reply
                registry.reply(member, line)

    server.history = History(store, args.scrollback, on_status)
    # Every node of a cluster writes the shared streams: a tail kept here would miss the others'.
    server.history.cache = not args.redis
    server.registry.on_message = server.history.record
    server.registry.on_private = server.history.record_private


class StartupError(Exception):
    """The server cannot start; the message says why."""


def _open_accounts(args):
    """The accounts service over its store: SQLite under --data-dir (opened and migrated here)."""
    from .accounts.service import Accounts
    from .accounts.store import SqliteStore

    if args.redis:  # a cluster: every node sees the same accounts and bans
        from .accounts.redis_store import RedisStore

        return Accounts(RedisStore(args.redis))  # Redis may come later (docs/cluster.md)
    directory = args.data_dir or settings.default_data_dir()
    try:
        store = SqliteStore(directory)
    except (OSError, sqlite3.Error) as err:
        raise StartupError(f"cannot open the accounts database in {directory}: {err}") from None
    log.debug("Accounts in %s", store.path)
    return Accounts(store)


def _read_password(path):
    """The server password: the first line of ``path``, NFKC-normalised, as UTF-8 bytes."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as err:
        raise StartupError(f"cannot read the password file {path}: {err}") from None
    if not line:
        raise StartupError(f"the password file {path} has an empty first line")
    return unicodedata.normalize("NFKC", line).encode("utf-8")


def _read_motd(path):
    if path is None:
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        return [line.rstrip("\r\n") for line in f][:100]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["backup"]:  # chat-server backup DEST: copy the databases while serving
        from .store.backup import main as backup

        return backup(argv[1:])
    if argv[:1] == ["account"]:  # chat-server account add NAME: an account before the server runs
        from .accounts.admin import main as account

        return account(argv[1:])
    checking = "--check-config" in argv
    try:
        args = _settings(argv)
    except SystemExit as stop:  # argparse's error (2) is --check-config's "bad" (1)
        if checking and stop.code:
            return 1
        raise
    if args.check_config:
        print(f"chat-server: settings are good{' (' + args.config + ')' if args.config else ''}")
        return 0
    if args.redis and args.workers == 1:
        # Before redis is first imported, so that its sockets and locks are gevent's. Only a
        # cluster node patches: without --redis nothing changes (docs/cluster.md).
        from gevent import monkey

        monkey.patch_all()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_JsonFormatter() if args.log_format == "json" else _LogFormatter())
    logging.basicConfig(level=args.log_level, handlers=[handler])
    if args.workers > 1:
        from .cluster import run_workers

        return run_workers(args, argv)

    nofile = raise_nofile_limit()
    if args.max_clients > nofile - RESERVED_FDS - REJECT_SLOTS:
        args.max_clients = max(1, nofile - RESERVED_FDS - REJECT_SLOTS)
        log.warning("open-files limit is %d: --max-clients lowered to %d", nofile, args.max_clients)
    if any(p is not None for p in (args.tls_port, args.irc_tls_port, args.web_tls_port)):
        try:
            make_context(args.tls_cert, args.tls_key)  # the listeners load it again; fail here first
        except (OSError, ValueError) as err:
            log.error("cannot load the TLS certificate %s and key %s: %s", args.tls_cert,
                      args.tls_key, err)
            return 1
    try:
        server = make_server(args)
    except StartupError as err:
        log.error("%s", err)
        return 1
    except OSError as err:  # --reuse-port binds here
        log.error("cannot listen on %s: %s", args.host, err)
        return 1
    done = gevent.event.Event()

    def on_signal():
        gevent.spawn(lambda: (server.shutdown(), done.set()))

    def on_reload():
        """SIGHUP (systemd's ExecReload): re-read the files the server reads; never stops it."""
        if server.tls_context is not None:
            server.reload_tls()  # renewed certificates; a bad new pair keeps the old one
        if args.motd is not None:
            try:
                server.motd = _read_motd(args.motd)
                log.info("Reloaded: MOTD %s (%d lines)", args.motd, len(server.motd))
            except OSError as err:
                log.error("Reload: cannot read MOTD %s: %s; keeping the old one", args.motd, err)
        elif server.tls_context is None:
            log.info("Reloaded: nothing to re-read")

    def on_stats():
        log.info("Stats: %s", " ".join(f"{k}={v}" for k, v in server.stats().items()))

    # Installed before the server says it listens: whoever waits for that line may signal at once.
    gevent.signal_handler(signal.SIGUSR1, on_stats)
    gevent.signal_handler(signal.SIGHUP, on_reload)
    gevent.signal_handler(signal.SIGTERM, on_signal)
    gevent.signal_handler(signal.SIGINT, on_signal)
    try:
        server.start()
    except OSError as err:
        log.error("cannot listen on %s: %s", args.host, err)
        return 1
    if args.redis:
        server.registry.start()
        server.accounts.follow(server.enforce_bans)
    metrics_http = None
    if args.metrics_port is not None:
        from . import metrics

        try:
            metrics_http = metrics.serve(server, args.metrics_host, args.metrics_port)
        except OSError as err:
            log.error("cannot serve metrics on %s:%s: %s", args.metrics_host, args.metrics_port, err)
            server.shutdown()
            return 1
        log.info("Metrics on http://%s/metrics", format_addr(metrics_http.address[:2]))
    if server.history is not None:
        server.history.start()
        log.info("History in %s (%s)", server.history.store.path,
                 "ready" if server.history.up else "failing: chat goes on without it")
    native_listener, *others = server.listeners
    log.info("Listening on %s (max %d clients, open-files limit %d, pid %d)",
             format_addr(native_listener.address[:2]), args.max_clients, nofile, os.getpid())
    if args.max_per_ip is None and server.max_per_ip:
        log.info("Public address: at most %d connections per IP address (--max-per-ip to change)",
                 server.max_per_ip)
    for listener in others:
        log.info("%s listening on %s", listener.label, format_addr(listener.address[:2]))
    done.wait()
    if metrics_http is not None:
        metrics_http.stop(timeout=1)
    if server.history is not None:
        server.history.stop()
    if args.redis:
        server.registry.leave()
    log.info("Server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
