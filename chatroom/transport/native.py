"""Native protocol v1 connections (docs/protocol.md): each line is one command for the registry."""

import ipaddress
import logging

from ..codec import native
from ..codec.lines import NO_LINE_END_LIMIT, LineFramer
from .connection import Client

log = logging.getLogger("chatroom.server")


def _is_address(text):
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class NativeClient(Client):
    __slots__ = ()

    @classmethod
    def refusal(cls, server, reason):
        return native.format_bye(reason)

    def make_framer(self, server):
        return LineFramer(server.max_line)

    def start(self, server):
        if self.admitted:
            server.registry.add(self, native.format_hello(self.id))
        else:  # in no room until it gives the server password
            server.registry.send(self, native.format_hello(self.id))

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
        return None

    def run_line(self, server, line):
        if not self.admitted:
            return self.admit(server, line)
        registry = server.registry
        try:
            cmd = native.parse_command(line)
            name = cmd.name
            if name == "SEND":
                registry.say(self, cmd.args[0])
            elif name == "TELL":
                registry.tell(self, *cmd.args)
            elif name == "NICK":
                self.check_nick_free(server, cmd.args[0])
                if server.accounts is not None and server.accounts.banned("nick", cmd.args[0]):
                    return "banned"
                registry.set_nick(self, cmd.args[0])
            elif name == "JOIN":
                registry.join(self, cmd.args[0])
            elif name == "WHO":
                registry.who(self)
            elif name == "ROOMS":
                registry.list_rooms(self)
            elif name == "PING":
                registry.send(self, native.format_pong(*cmd.args))
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
            registry.send(self, err.to_bytes())
        return None

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
            registry.send(self, native.format_account("*"))
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
        registry.send(self, native.format_account(account))

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
                registry.send(self, native.format_topic(room.name, "*"))
            else:
                registry.send(self, native.format_topic(room.name, room.topic[1], room.topic[0]))
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
        server.registry.send(self, native.format_banned(kind, who, minutes))
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
            server.registry.send(self, native.format_unbanned(kind, who))
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
