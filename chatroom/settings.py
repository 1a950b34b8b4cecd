"""Every setting of the server in one table: the command line, the README's limits table and its
drift test all read :data:`SETTINGS`, so a setting is added, documented and checked in one place.

Each :class:`Setting` is one ``--flag`` of ``chat-server``; its ``default`` is the value a server
gets when the flag is not given, and ``doc`` is the README's wording of what it means. Modules
read defaults with :func:`default` rather than keeping constants of their own.
"""

import argparse
import os
import re
from dataclasses import dataclass

#: The native protocol's default TCP port; the client and the load tool use the same one.
DEFAULT_PORT = 7777
DEFAULT_HOST = "127.0.0.1"
#: Bytes without any line end after which a connection is judged not to speak a line protocol.
NO_LINE_END_LIMIT = 64 * 1024


def _line_limit(text):
    value = int(text)
    # Beyond this the 64 KiB no-line-end rule would close the connection before the limit applied.
    if not 16 <= value <= NO_LINE_END_LIMIT - 2:
        raise argparse.ArgumentTypeError(f"must be from 16 to {NO_LINE_END_LIMIT - 2}")
    return value


def _port(text):
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be from 0 to 65535")
    return value


def _redis_url(text):
    if not text.startswith(("redis://", "rediss://", "unix://")):
        raise argparse.ArgumentTypeError("expected redis://HOST:PORT/DB")
    return text


#: Cluster node names: safe in keys, in ``node/id`` addresses and in log lines.
NODE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")


def _node_name(text):
    if not NODE_RE.match(text):
        raise argparse.ArgumentTypeError("node names are 1-64 of A-Z a-z 0-9 _ . -")
    return text


@dataclass(frozen=True)
class Setting:
    name: str  #: the flag without its dashes, ``max-clients``
    default: object  #: the embedded default (None: unset, False: a switch that is off)
    help: str  #: one line for ``--help``
    type: object = str  #: parses the flag's text; ``bool`` makes a switch
    choices: tuple = None
    metavar: str = None
    group: str = "limits"  #: where it belongs: "listen", "limits", "cluster", "logging"
    repeat: bool = False  #: may be given several times: a list (the variable: comma-separated)

    @property
    def flag(self):
        return "--" + self.name

    @property
    def dest(self):
        return self.name.replace("-", "_")

    @property
    def env(self):
        """The environment variable that sets it when the flag is not given: ``CHATROOM_MAX_CLIENTS``."""
        return "CHATROOM_" + self.name.upper().replace("-", "_")


SETTINGS = (
    # -- where to listen ----------------------------------------------------------------------
    Setting("host", DEFAULT_HOST, "address to listen on", group="listen"),
    Setting("port", DEFAULT_PORT, "native protocol TCP port; 0 picks a free one (printed in "
            "'Listening on ...')", _port, group="listen"),
    Setting("irc-port", None, "IRC listener's TCP port (6667 by convention); 0 picks a free one; "
            "none: no IRC listener", _port, metavar="PORT", group="listen"),
    Setting("tls-port", None, "native protocol over TLS: its TCP port; 0 picks a free one; none: "
            "no TLS listener (needs --tls-cert and --tls-key)", _port, metavar="PORT", group="listen"),
    Setting("irc-tls-port", None, "IRC over TLS: its TCP port (6697 by convention); 0 picks a free "
            "one; none: no such listener (needs --tls-cert and --tls-key)", _port, metavar="PORT",
            group="listen"),
    Setting("tls-cert", None, "PEM file of the TLS certificate chain; read again on SIGHUP",
            metavar="FILE", group="listen"),
    Setting("tls-key", None, "PEM file of the TLS private key; read again on SIGHUP",
            metavar="FILE", group="listen"),
    Setting("reuse-port", False, "bind with SO_REUSEPORT so several servers share the ports",
            bool, group="listen"),
    # -- limits -------------------------------------------------------------------------------
    Setting("max-clients", 10000, "most clients at once on all listeners, capped by the "
            "open-files limit", int),
    Setting("max-per-ip", 0, "most connections from one IP address, 0 = no limit", int),
    Setting("max-line", 4096, "longest native line in bytes", _line_limit),
    Setting("outbox-limit", 1024 * 1024, "bytes queued to one client before it is dropped as a "
            "slow consumer", int),
    Setting("outbox-soft-limit", 256 * 1024, "bytes queued that may last only "
            "--outbox-soft-seconds, 0 = off", int),
    Setting("outbox-soft-seconds", 10.0, "seconds a client may stay over the soft limit", float),
    Setting("send-timeout", 30.0, "seconds a client's socket may take no bytes before it is "
            "dropped", float),
    Setting("flood-rate", 10.0, "lines per second per client, 0 = no flood control", float),
    Setting("flood-burst", 20, "lines a client may send at once above the rate", int),
    Setting("idle-timeout", 120.0, "seconds of silence before the server sends PING, 0 = never",
            float),
    Setting("ping-timeout", 30.0, "seconds to wait for an answer to PING", float),
    Setting("tls-handshake-timeout", 10.0, "seconds a TLS connection has to finish its "
            "handshake", float),
    Setting("presence-limit", 200, "rooms larger than this do not announce JOIN/PART/NICK", int),
    Setting("shutdown-timeout", 5.0, "seconds a shutdown waits for clients to take their last "
            "bytes", float),
    # -- identity -----------------------------------------------------------------------------
    Setting("server-name", "chatroom.local", "the server's name on IRC (the source of its "
            "numerics)", group="listen"),
    Setting("motd", None, "file whose lines are the IRC message of the day; none: no MOTD (422)",
            metavar="FILE", group="listen"),
    Setting("password-file", None, "file whose first line is the server password (native: PASS "
            "as the first line; IRC: PASS); none: no password", metavar="FILE", group="listen"),
    # -- accounts -----------------------------------------------------------------------------
    Setting("data-dir", None, "directory of the accounts database; none: $XDG_STATE_HOME/chatroom, "
            "else ~/.local/state/chatroom", metavar="DIR", group="accounts"),
    Setting("oper", None, "an account whose holder, logged in, is a server operator (KICK and "
            "TOPIC anywhere, BAN, UNBAN; IRC OPER and KILL); repeat for more", metavar="NAME",
            group="accounts", repeat=True),
    # -- logging ------------------------------------------------------------------------------
    Setting("log-level", "INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
            group="logging"),
    # -- cluster ------------------------------------------------------------------------------
    Setting("redis", None, "join the cluster of servers sharing rooms, nicknames and messages "
            "over the Redis at URL, redis://HOST:PORT/DB; none: this server alone", _redis_url,
            metavar="URL", group="cluster"),
    Setting("node", None, "this server's name in the cluster; none: hostname-pid", _node_name,
            group="cluster"),
    Setting("cluster-ttl", 15.0, "seconds a dead node's members and nicknames outlive it", float,
            group="cluster"),
    Setting("workers", 1, "server processes sharing the ports, each a cluster node; above 1 "
            "needs --redis", int, group="cluster"),
)

BY_NAME = {s.name: s for s in SETTINGS}


def default(name):
    """The embedded default of the setting ``name`` (``"outbox-limit"``)."""
    return BY_NAME[name].default


def build_parser(prog="chat-server", environ=None):
    """The server's argument parser, one option per :data:`SETTINGS` entry.

    A flag not given on the command line takes its value from the environment variable
    ``CHATROOM_<NAME>`` when that is set (``CHATROOM_SERVER_NAME=irc.example.org``), else its
    embedded default. A bad value in the environment is refused like a bad flag.
    """
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog=prog, description="A gevent chat server.",
        epilog="Every flag can also be set in the environment: --max-clients as CHATROOM_MAX_CLIENTS.")
    for s in SETTINGS:
        shown = "none" if s.default is None else "off" if s.default is False else str(s.default)
        help_text = f"{s.help} (default {shown})".replace("%", "%%")
        value = environ.get(s.env)
        if s.type is bool:
            on = value is not None and value.strip().lower() in ("1", "true", "yes", "on")
            parser.add_argument(s.flag, action="store_true", default=on, help=help_text)
        elif s.repeat:
            given = None if value is None else [s.type(v.strip()) for v in value.split(",") if v.strip()]
            parser.add_argument(s.flag, type=s.type, action="append", default=given,
                                metavar=s.metavar, help=help_text)
        else:
            # argparse runs a string default through ``type``, so the variable is checked too.
            parser.add_argument(s.flag, type=s.type, default=s.default if value is None else value,
                                choices=s.choices, metavar=s.metavar, help=help_text)
    return parser
