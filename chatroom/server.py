"""``chat-server``: settings in, listeners up, run until SIGTERM.

The program around the pieces: it reads the settings (:mod:`chatroom.settings`), builds the
registry (alone, or a cluster node with ``--redis``), opens a listener per protocol on the
transport (:mod:`chatroom.transport.server`), and handles signals and logging.
"""

import logging
import os
import signal
import sqlite3
import sys
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
        max_per_ip=args.max_per_ip,
        max_line=args.max_line,
        flood_rate=args.flood_rate,
        flood_burst=args.flood_burst,
        send_timeout=args.send_timeout,
        idle_timeout=args.idle_timeout,
        ping_timeout=args.ping_timeout,
        shutdown_timeout=args.shutdown_timeout,
        server_name=args.server_name,
        motd=_read_motd(args.motd),
        tls_handshake_timeout=args.tls_handshake_timeout,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        accounts=_open_accounts(args),
        password=_read_password(args.password_file),
        opers=frozenset(name.casefold() for name in args.oper or ()),
    )

    def address(port):
        if args.reuse_port:
            return reuse_port_socket((args.host, port), listen=BACKLOG)
        return (args.host, port)

    server.listen(address(args.port), NativeClient)
    if args.irc_port is not None:
        from .transport.irc import IrcClient

        server.listen(address(args.irc_port), IrcClient)
    if args.tls_port is not None:
        server.listen(address(args.tls_port), NativeClient, tls=True)
    if args.irc_tls_port is not None:
        from .transport.irc import IrcClient

        server.listen(address(args.irc_tls_port), IrcClient, tls=True)
    return server


class StartupError(Exception):
    """The server cannot start; the message says why."""


def _open_accounts(args):
    """The accounts service over its store: SQLite under --data-dir (opened and migrated here)."""
    from .accounts.service import Accounts
    from .accounts.store import SqliteStore, default_data_dir

    if args.redis:  # a cluster: every node sees the same accounts and bans
        from .accounts.redis_store import RedisStore

        return Accounts(RedisStore(args.redis))  # Redis may come later (docs/cluster.md)
    directory = args.data_dir or default_data_dir()
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
    parser = settings.build_parser()
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > 1 and not args.redis:
        parser.error("--workers above 1 needs --redis: the workers are one chat through it")
    tls = args.tls_port is not None or args.irc_tls_port is not None
    if tls and not (args.tls_cert and args.tls_key):
        parser.error("--tls-port and --irc-tls-port need --tls-cert and --tls-key")
    if args.redis and args.workers == 1:
        # Before redis is first imported, so that its sockets and locks are gevent's. Only a
        # cluster node patches: without --redis nothing changes (docs/cluster.md).
        from gevent import monkey

        monkey.patch_all()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_LogFormatter())
    logging.basicConfig(level=args.log_level, handlers=[handler])
    if args.workers > 1:
        from .cluster import run_workers

        return run_workers(args, sys.argv[1:] if argv is None else list(argv))

    nofile = raise_nofile_limit()
    if args.max_clients > nofile - RESERVED_FDS - REJECT_SLOTS:
        args.max_clients = max(1, nofile - RESERVED_FDS - REJECT_SLOTS)
        log.warning("open-files limit is %d: --max-clients lowered to %d", nofile, args.max_clients)
    if args.tls_port is not None or args.irc_tls_port is not None:
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

    def on_stats():
        log.info("Stats: %s", " ".join(f"{k}={v}" for k, v in server.stats().items()))

    # Installed before the server says it listens: whoever waits for that line may signal at once.
    gevent.signal_handler(signal.SIGUSR1, on_stats)
    gevent.signal_handler(signal.SIGTERM, on_signal)
    gevent.signal_handler(signal.SIGINT, on_signal)
    if server.tls_context is not None:
        gevent.signal_handler(signal.SIGHUP, server.reload_tls)
    try:
        server.start()
    except OSError as err:
        log.error("cannot listen on %s: %s", args.host, err)
        return 1
    if args.redis:
        server.registry.start()
        server.accounts.follow(server.enforce_bans)
    native_listener, *others = server.listeners
    log.info("Listening on %s (max %d clients, open-files limit %d, pid %d)",
             format_addr(native_listener.address[:2]), args.max_clients, nofile, os.getpid())
    for listener in others:
        log.info("%s listening on %s", listener.label, format_addr(listener.address[:2]))
    done.wait()
    if args.redis:
        server.registry.leave()
    log.info("Server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
