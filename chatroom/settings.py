"""Every setting of the server in one table: the command line, the README's limits table and its
drift test all read :data:`SETTINGS`, so a setting is added, documented and checked in one place.

Each :class:`Setting` is one ``--flag`` of ``chat-server``; its ``default`` is the value a server
gets when the flag is not given, and ``doc`` is the README's wording of what it means. Modules
read defaults with :func:`default` rather than keeping constants of their own.
"""

import argparse
import dataclasses
import os
import re
from dataclasses import dataclass

#: The native protocol's default TCP port; the client and the load tool use the same one.
DEFAULT_PORT = 7777
DEFAULT_HOST = "127.0.0.1"
#: --max-per-ip when it is not given and --host is not a loopback address (public defaults).
PUBLIC_MAX_PER_IP = 10
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


def _non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _non_negative_float(text):
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


@dataclass(frozen=True)
class Setting:
    name: str  #: the flag without its dashes, ``max-clients``
    default: object  #: the embedded default (None: unset, False: a switch that is off)
    help: str  #: one line for ``--help``
    type: object = str  #: parses the flag's text; ``bool`` makes a switch
    choices: tuple = None
    metavar: str = None
    group: str = "limits"  #: where it belongs: "listen", "limits", "cluster", "logging", "storage"
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
    Setting("web-port", None, "HTTP listener serving the web client at / and WebSocket at /ws; "
            "0 picks a free one (printed in 'Web listening on ...'); none: no web listener", _port,
            metavar="PORT", group="listen"),
    Setting("web-origin", None, "comma-separated origins (scheme://host:port) whose pages may open "
            "a WebSocket, * for any; none: only the web listener's own", metavar="ORIGINS",
            group="listen"),
    Setting("tls-port", None, "native protocol over TLS: its TCP port; 0 picks a free one; none: "
            "no TLS listener (needs --tls-cert and --tls-key)", _port, metavar="PORT", group="listen"),
    Setting("irc-tls-port", None, "IRC over TLS: its TCP port (6697 by convention); 0 picks a free "
            "one; none: no such listener (needs --tls-cert and --tls-key)", _port, metavar="PORT",
            group="listen"),
    Setting("web-tls-port", None, "the web listener over TLS (HTTPS and WSS; 443 by convention): "
            "its TCP port; 0 picks a free one; none: no such listener (needs --tls-cert and "
            "--tls-key)", _port, metavar="PORT", group="listen"),
    Setting("tls-cert", None, "PEM file of the TLS certificate chain; read again on SIGHUP",
            metavar="FILE", group="listen"),
    Setting("tls-key", None, "PEM file of the TLS private key; read again on SIGHUP",
            metavar="FILE", group="listen"),
    Setting("reuse-port", False, "bind with SO_REUSEPORT so several servers share the ports",
            bool, group="listen"),
    # -- limits -------------------------------------------------------------------------------
    Setting("max-clients", 10000, "most clients at once on all listeners, capped by the "
            "open-files limit", int),
    Setting("max-per-ip", None, "most connections from one IP address, 0 = no limit; none: "
            f"{PUBLIC_MAX_PER_IP} when --host is not loopback, no limit on loopback", int),
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
    Setting("web-max-message", 16384, "longest WebSocket message in bytes, however many frames "
            "it comes in; a longer one closes the connection (1009)", int),
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
    # -- metrics ------------------------------------------------------------------------------
    Setting("metrics-port", None, "serve Prometheus metrics at http://METRICS-HOST:PORT/metrics; "
            "0 picks a free one; none: no metrics", _port, metavar="PORT", group="metrics"),
    Setting("metrics-host", "127.0.0.1", "address the metrics listen on", group="metrics"),
    Setting("password-file", None, "file whose first line is the server password (native: PASS "
            "as the first line; IRC: PASS); none: no password", metavar="FILE", group="listen"),
    # -- accounts -----------------------------------------------------------------------------
    Setting("oper", None, "an account whose holder, logged in, is a server operator (KICK and "
            "TOPIC anywhere, BAN, UNBAN; IRC OPER and KILL); repeat for more", metavar="NAME",
            group="accounts", repeat=True),
    Setting("register-before-connect", "on", "IRC REGISTER (draft/account-registration) also "
            "before the connection is registered, as web IRC clients do it; off: only after",
            choices=("on", "off"), group="accounts"),
    # -- logging ------------------------------------------------------------------------------
    Setting("log-level", "INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
            group="logging"),
    Setting("log-format", "text", "text: plain lines; json: one JSON object per line (time, "
            "level, event, fields)", choices=("text", "json"), group="logging"),
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
    # -- storage and history ------------------------------------------------------------------
    Setting("data-dir", None, "directory of the server's files (accounts, bans, history); none: "
            "$XDG_STATE_HOME/chatroom or ~/.local/state/chatroom", metavar="DIR", group="storage"),
    Setting("history", "on", "keep every room message in DIR/history.sqlite3 (with --redis: in "
            "Redis streams every node shares) and replay it",
            choices=("on", "off"), group="storage"),
    Setting("history-max", 10000, "messages kept per room, 0 = no limit", _non_negative_int,
            group="storage"),
    Setting("history-days", 0.0, "days a message is kept, 0 = no limit", _non_negative_float,
            group="storage"),
    Setting("scrollback", 50, "messages of a room replayed on connect and JOIN, 0 = none",
            _non_negative_int, group="storage"),
)

BY_NAME = {s.name: s for s in SETTINGS}


def default_data_dir(environ=os.environ):
    """``$XDG_STATE_HOME/chatroom``, else ``~/.local/state/chatroom``."""
    base = environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "chatroom")


def add_data_dir_argument(parser):
    """``--data-dir`` for the server's subcommands (``backup``, ``account``): the server's own."""
    parser.add_argument("--data-dir", default=os.environ.get("CHATROOM_DATA_DIR") or default_data_dir(),
                        help="the server's --data-dir (default: CHATROOM_DATA_DIR, else "
                             "$XDG_STATE_HOME/chatroom or ~/.local/state/chatroom)")


def default(name):
    """The embedded default of the setting ``name`` (``"outbox-limit"``)."""
    return BY_NAME[name].default


def build_parser(prog="chat-server", environ=None, config=None):
    """The server's argument parser, one option per :data:`SETTINGS` entry.

    A flag not given on the command line takes its value from the environment variable
    ``CHATROOM_<NAME>`` when that is set (``CHATROOM_SERVER_NAME=irc.example.org``), else from
    ``config`` (the settings file's values, ``{"max-clients": 100}``, from :func:`load_config`),
    else its embedded default. A bad value in the environment is refused like a bad flag.
    """
    environ = os.environ if environ is None else environ
    config = config or {}
    parser = argparse.ArgumentParser(
        prog=prog, description="A gevent chat server.",
        epilog="Every flag can also be set in the environment (--max-clients as "
               "CHATROOM_MAX_CLIENTS) or in the --config file (max-clients = 100); "
               "flags win over the environment, which wins over the file.")
    for s in SETTINGS:
        shown = "none" if s.default is None else "off" if s.default is False else str(s.default)
        help_text = f"{s.help} (default {shown})".replace("%", "%%")
        value = environ.get(s.env)
        if s.type is bool:
            if value is not None:
                on = value.strip().lower() in ("1", "true", "yes", "on")
            else:
                on = config.get(s.name, False)
            parser.add_argument(s.flag, action="store_true", default=on, help=help_text)
        elif s.repeat:
            given = (config.get(s.name) if value is None
                     else [s.type(v.strip()) for v in value.split(",") if v.strip()])
            parser.add_argument(s.flag, type=s.type, action="append", default=given,
                                metavar=s.metavar, help=help_text)
        else:
            # argparse runs a string default through ``type``, so the variable is checked too.
            fallback = config.get(s.name, s.default)
            parser.add_argument(s.flag, type=s.type, default=fallback if value is None else value,
                                choices=s.choices, metavar=s.metavar, help=help_text)
    parser.add_argument("--config", metavar="FILE", default=environ.get(CONFIG_ENV),
                        help="read settings from this TOML file, one key per flag "
                             "(max-clients = 100); flags and CHATROOM_* variables win over it "
                             f"(default none; also {CONFIG_ENV})")
    parser.add_argument("--check-config", action="store_true",
                        help="check the settings (file, environment, flags) and exit: 0 when "
                             "they are good, 1 with the reason when not (default off)")
    return parser


def is_loopback(host):
    """Whether ``host`` (an address or ``localhost``) is reachable only from this machine."""
    import ipaddress

    if host.lower() in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return False  # a name: it may resolve to a public address


def max_per_ip(args):
    """``--max-per-ip`` as given, else :data:`PUBLIC_MAX_PER_IP` on a public ``--host``, else 0."""
    if args.max_per_ip is not None:
        return args.max_per_ip
    return 0 if is_loopback(args.host) else PUBLIC_MAX_PER_IP


# -- the settings file --------------------------------------------------------------------------

#: The environment variable naming a settings file when ``--config`` is not given.
CONFIG_ENV = "CHATROOM_CONFIG"


class ConfigError(Exception):
    """A settings file the server refuses: its path, the key (if any) and the reason."""


def _file_kind(s):
    """What a file value of ``s`` must be: "integer", "number", "string" or "true or false"."""
    if s.type is bool:
        return "true or false"
    if s.type in (int, _port, _line_limit):
        return "an integer"
    if s.type is float:
        return "a number"
    if s.type in (str, _redis_url, _node_name):
        return "a string"
    return None  # a type this table does not know: any scalar, given to it as text


def _file_value(s, value):
    """``value`` (as TOML gave it) checked and converted for ``s``; raises ValueError with why."""
    if s.repeat:  # a list of values (one value is a list of one)
        items = value if isinstance(value, list) else [value]
        return [_file_value(dataclasses.replace(s, repeat=False), item) for item in items]
    kind = _file_kind(s)
    if isinstance(value, (dict, list)):
        raise ValueError(f"expected {kind or 'a value'}, not a {'table' if isinstance(value, dict) else 'list'}")
    if kind == "true or false":
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    ok = {"an integer": (int,), "a number": (int, float), "a string": (str,),
          None: (str, int, float)}[kind]
    if isinstance(value, bool) or not isinstance(value, ok):
        raise ValueError(f"expected {kind or 'a string or a number'}, got {value!r}")
    try:
        converted = s.type(value if isinstance(value, str) else str(value))
    except (ValueError, TypeError, argparse.ArgumentTypeError) as err:
        raise ValueError(str(err) or f"invalid value {value!r}") from None
    if s.choices and converted not in s.choices:
        raise ValueError(f"{converted!r} is not one of {', '.join(s.choices)}")
    return converted


def load_config(path):
    """The settings in the TOML file at ``path`` as ``{name: value}``, every one checked.

    Keys are the flags' names without dashes (``max-clients = 100``); a key no flag has, a value
    of the wrong type or one the flag would refuse raise :class:`ConfigError` naming the file,
    the key and the reason.
    """
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    values = {}
    for key, value in data.items():
        s = BY_NAME.get(key)
        if s is None:
            hint = f" (did you mean {key.replace('_', '-')!r}?)" if key.replace("_", "-") in BY_NAME else ""
            raise ConfigError(f"{path}: {key}: unknown setting{hint}")
        try:
            values[key] = _file_value(s, value)
        except ValueError as err:
            raise ConfigError(f"{path}: {key}: {err}") from None
    return values


def parse_args(argv=None, environ=None, prog="chat-server"):
    """The server's settings: flags (``argv``), then ``CHATROOM_*`` variables, then the
    ``--config`` file, then the embedded defaults, the first that gives a value winning.

    Bad flags and variables exit like any argparse error; a bad file raises :class:`ConfigError`.
    """
    environ = os.environ if environ is None else environ
    args = build_parser(prog, environ).parse_args(argv)
    if args.config:
        args = build_parser(prog, environ, load_config(args.config)).parse_args(argv)
    return args
