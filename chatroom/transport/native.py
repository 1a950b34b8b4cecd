"""Native protocol v1 connections (docs/protocol.md): each line is one command for the registry."""

import logging

from ..codec import native
from ..codec.lines import NO_LINE_END_LIMIT, LineFramer
from .connection import Client

log = logging.getLogger("chatroom.server")


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
        log.info("%s logged in as %s", self.id, account)
        if self.nick != account:
            holder = registry.find_nick(account)
            if holder is not None and holder is not self:  # took it while we waited
                raise native.ProtocolError("nick-taken", f"nickname '{account}' is in use")
            registry.set_nick(self, account)
        registry.send(self, native.format_account(account))

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
