"""Native protocol v1 connections (docs/protocol.md): each line is one command for the registry."""

import ipaddress
import logging
import re

from ..codec import irc, native
from ..codec.text import BAD_TEXT_RE
from ..codec.lines import NO_LINE_END_LIMIT, LineFramer
from .connection import Client
from .history import native_lines, private_key, replay
from . import offline


#: What no message text may contain, ``\n`` aside: a batch of messages is checked as one text
#: joined by ``\n`` (see :meth:`NativeClient.run_batch`).
_BATCH_BAD_RE = re.compile(BAD_TEXT_RE.pattern.replace("\x00-\x1f", "\x00-\x09\x0b-\x1f"))

log = logging.getLogger("chatroom.server")


def _is_address(text):
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class NativeClient(Client):
    __slots__ = ("batch",)

    def __init__(self, member_id, sock, addr, watcher, server):
        super().__init__(member_id, sock, addr, watcher, server)
        self.batch = None  #: the texts of this read's SEND lines, said at its end as one fan-out

    @classmethod
    def refusal(cls, server, reason):
        return native.format_bye(reason)

    def make_framer(self, server):
        return LineFramer(server.max_line)

    def start(self, server):
        if self.admitted:
            server.registry.add(self, native.format_hello(self.id))
            replay(server, self, self.room.name)
        else:  # in no room until it gives the server password
            server.registry.reply(self, native.format_hello(self.id))

    def admit(self, server, line):
        """The first line on a server with a password: ``PASS <password>`` admits the client to
        ``lobby``; anything else returns a disconnect reason."""
        try:
            cmd = native.parse_command(line)
        except native.ProtocolError:
            return "password-required"
        if cmd.name != "PASS":
            return "password-required"
        if not self.password_matches(server, cmd.args[0]):
            log.info("%s gave a wrong server password", self.id)
            return "wrong-password"
        self.admitted = True
        server.registry.add(self)
        replay(server, self, self.room.name)
        return None

    def run_line(self, server, line):
        if not self.admitted:
            return self.admit(server, line)
        if line.startswith(b"SEND "):  # the common line: batched until the read is done
            batch = self.batch
            if batch is None:
                self.batch = [line[5:]]
            else:
                batch.append(line[5:])
            return None
        if self.batch:
            self.run_batch(server)
        registry = server.registry
        try:
            cmd = native.parse_command(line)
            name = cmd.name
            if name == "SEND":
                registry.say(self, cmd.args[0])
            elif name == "TELL":
                self.tell(server, *cmd.args)
            elif name == "NICK":
                self.check_nick_free(server, cmd.args[0])
                if server.accounts is not None and server.accounts.banned("nick", cmd.args[0]):
                    return "banned"
                registry.set_nick(self, cmd.args[0])
            elif name == "JOIN":
                registry.join(self, cmd.args[0])
                replay(server, self, cmd.args[0])
            elif name == "HISTORY":
                self.page(server, *cmd.args)
            elif name == "WHO":
                registry.who(self)
            elif name == "ROOMS":
                registry.list_rooms(self)
            elif name == "PING":
                registry.reply(self, native.format_pong(*cmd.args))
            elif name == "QUIT":
                return "quit: " + cmd.args[0] if cmd.args else "quit"
            elif name == "PASS":
                pass  # the server password was given already (or none is needed)
            elif name in ("REGISTER", "LOGIN", "LOGOUT"):
                self.account_command(server, name, *cmd.args)
                if server.ban_reason(self):
                    return "banned"
            elif name in ("KICK", "BAN", "UNBAN", "TOPIC"):
                return getattr(self, "cmd_" + name.lower())(server, *cmd.args)
            # PONG: any line proves liveness; nothing more to do.
        except native.ProtocolError as err:
            registry.reply(self, err.to_bytes())
        return None

    def run_batch(self, server):
        """Say this read's messages: checked once as one text, fanned out once as one buffer.

        A batch with a line that is not UTF-8, is empty or holds a control character is run line
        by line instead, so each such line gets its own ``ERR`` in its place and the rest go out.
        """
        batch = self.batch
        if not batch:
            return
        self.batch = None
        if self.closing or self.room is None:
            return
        registry = server.registry
        try:
            text = b"\n".join(batch).decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is None or b"" in batch or _BATCH_BAD_RE.search(text):
            for raw in batch:
                try:
                    if not raw:
                        raise native.ProtocolError("missing-argument", "usage: SEND <text>")
                    registry.say(self, native.check_text(native.decode(raw)))
                except native.ProtocolError as err:
                    registry.reply(self, err.to_bytes())
            return
        registry.say_batch(self, text.split("\n"))

    def tell(self, server, who, text):
        """TELL: to whoever has the name; to an offline account, kept until it logs in."""
        try:
            server.registry.tell(self, who, text)
        except native.ProtocolError as err:
            if err.code != "no-such-nick" or not offline.keep(server, self, who, text):
                raise
            if not self.closing:
                server.registry.reply(self, native.format_notice(
                    "kept", f"{who} is offline; they get your message when they log in"))

    def kept_lines(self, server, messages):
        """Messages kept while this account was offline: ``TELLHIST`` lines and ``TELLHISTEND``."""
        out = []
        for m in messages:
            text = m.text if m.plain else irc.plain_text(m.text)
            if text:
                out.append(native.format_tellhist(m.msgid, irc.format_time(m.ts), m.sender, text))
        return b"".join(out) + native.format_tellhistend() if out else b""

    def page(self, server, count, before, with_nick=None):
        """``HISTORY``: up to ``count`` messages of this room before ``before`` (or the latest);
        with ``@nick``, of this account's private messages with ``nick``.

        Blocks this client's reader greenlet while the store is read; nobody else waits.
        """
        history = server.history
        if history is None:
            raise native.ProtocolError("history-off", "this server keeps no history")
        if with_nick is None:
            key = shown = self.room.name
        else:
            if self.account is None:
                raise native.ProtocolError("not-logged-in",
                                           "private history is an account's: LOGIN first")
            key, shown = private_key(server, self, with_nick), "@" + with_nick
        count = min(count or history.scrollback or 1, history.page_max)
        try:
            messages = history.latest(key, count, before)
        except LookupError:
            raise native.ProtocolError("no-such-message", f"no message {before} in {shown}") from None
        except Exception:
            raise native.ProtocolError("history-down", "history cannot be read now") from None
        if not self.closing:
            server.registry.reply(self, self.history_lines(server, shown, messages, False))

    def history_lines(self, server, room_name, messages, replay):
        return native_lines(room_name, messages, native.format_hist) + native.format_histend(room_name)
    def account_command(self, server, name, *args):
        """REGISTER, LOGIN, LOGOUT. Hashing and the store run off the loop; this reader waits."""
        accounts = server.accounts
        registry = server.registry
        if accounts is None:
            raise native.ProtocolError("no-accounts", "this server keeps no accounts")
        if name == "LOGOUT":
            if self.account is None:
                raise native.ProtocolError("not-logged-in", "you are not logged in")
            self.account = None
            self.oper = False
            registry.reply(self, native.format_account("*"))
            return
        if name == "REGISTER":
            if self.nick is None:
                raise native.ProtocolError("nick-required", "set a nickname (NICK) to register it")
            account = accounts.register(self.nick, args[0])
        else:
            nick, password = args
            holder = registry.find_nick(nick)
            if holder is not None and holder is not self:
                raise native.ProtocolError("nick-taken", f"nickname '{nick}' is in use")
            account = accounts.login(nick, password, self.host)
        if self.closing:
            return  # left while the workers were busy
        self.account = account
        self.oper = server.is_oper_account(account)
        log.info("%s logged in as %s%s", self.id, account, " (server operator)" if self.oper else "")
        if self.nick != account:
            holder = registry.find_nick(account)
            if holder is not None and holder is not self:  # took it while we waited
                raise native.ProtocolError("nick-taken", f"nickname '{account}' is in use")
            registry.set_nick(self, account)
        registry.reply(self, native.format_account(account))
        if name == "LOGIN":  # (a new account has nothing waiting)
            offline.deliver(server, self)

    # -- moderation ------------------------------------------------------------------------------

    def _need_oper(self):
        if not self.oper:
            raise native.ProtocolError("not-operator", "only server operators may do that")

    def cmd_kick(self, server, who, reason):
        """KICK: room operators and server operators put someone out of their room."""
        registry = server.registry
        room = self.room
        if self not in room.ops and not self.oper:
            raise native.ProtocolError("not-operator", f"you are not an operator of {room.name}")
        target = registry.find(who)
        if target is None or target not in room.members:
            raise native.ProtocolError("no-such-nick", f"no '{who}' in {room.name}")
        log.info("%s kicked %s from %s", self.name, target.name, room.name)
        registry.kick(self, room, target, reason)
        return None

    def cmd_topic(self, server, text=None):
        """TOPIC: show your room's topic, or set it (room or server operators)."""
        registry = server.registry
        room = self.room
        if text is None:
            if room.topic is None:
                registry.reply(self, native.format_topic(room.name, "*"))
            else:
                registry.reply(self, native.format_topic(room.name, room.topic[1], room.topic[0]))
            return None
        if "t" in room.modes and self not in room.ops and not self.oper:
            raise native.ProtocolError("not-operator", f"you are not an operator of {room.name}")
        registry.set_topic(self, room, text)
        return None

    def cmd_ban(self, server, who, minutes, reason):
        """BAN: server operators ban an address, an account or a nickname, on every listener."""
        self._need_oper()
        accounts = server.accounts
        kind = ("address" if _is_address(who) else
                "account" if accounts.is_registered(who) else "nick")
        if kind == "nick":
            native.check_name(who, "nickname")
        elif kind == "address":
            who = str(ipaddress.ip_address(who))  # one spelling: "0:0::1" is "::1"
        accounts.ban(kind, who, minutes, reason, self.name)
        server.registry.reply(self, native.format_banned(kind, who, minutes))
        server.enforce_bans()
        return None

    def cmd_unban(self, server, who):
        self._need_oper()
        if _is_address(who):
            who = str(ipaddress.ip_address(who))
        lifted = server.accounts.unban(who, self.name)
        if not lifted:
            raise native.ProtocolError("no-such-ban", f"'{who}' is not banned")
        for kind in lifted:
            server.registry.reply(self, native.format_unbanned(kind, who))
        return None

    def line_too_long(self, server, size):
        return native.format_err("line-too-long", f"line over {server.max_line} bytes was discarded")

    def no_line_end(self, server):
        return native.format_err("no-line-end", f"{NO_LINE_END_LIMIT} bytes without a line end")

    def rate_limited(self, server, rate):
        return native.format_err("rate-limited", f"over {rate:g} lines/s; line dropped")

    def ping(self, server, token):
        return native.format_ping(token)

    def bye(self, server, reason):
        return native.format_bye("quit" if reason.startswith("quit") else reason)
