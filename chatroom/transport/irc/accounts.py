"""IRC accounts: SASL PLAIN (``AUTHENTICATE``, numerics 900-908) and IRCv3
``draft/account-registration`` (``REGISTER``), over the same accounts service as the native
protocol. Hashing runs off the loop; this client's reader waits for the answer, nobody else does.
"""

import base64
import binascii
import ipaddress
import logging

from ...codec import irc
from ...codec.native import ProtocolError
from ...codec.text import NAME_RE
from .. import offline

log = logging.getLogger("chatroom.server")

#: The SASL mechanisms offered (``CAP LS 302`` shows ``sasl=PLAIN``).
MECHANISMS = "PLAIN"
#: An AUTHENTICATE line carries at most this many base64 characters; a full one means more follow.
CHUNK = 400
#: Most base64 characters of one SASL response (PLAIN: two names and a password, with room).
SASL_MAX = 2000


class AccountCommands:
    """Mixed into :class:`~chatroom.transport.irc.client.IrcClient`.

    ``sasl`` is None (no exchange), ``""`` (PLAIN chosen, waiting for data) or the base64 received
    so far.
    """

    __slots__ = ()

    def nick_refused(self, server, nick):
        """Whether ``nick`` is an account's this client is not logged in to (433 sent if so)."""
        accounts = server.accounts
        if (accounts is not None and accounts.is_registered(nick)
                and (self.account is None or self.account.casefold() != nick.casefold())):
            self.reply(server, "433", nick, "Nickname is registered; log in with SASL to use it")
            return True
        return False

    def cmd_authenticate(self, server, msg):
        if not msg.params or not msg.params[0]:
            self.reply(server, "461", "AUTHENTICATE", "Not enough parameters")
            return None
        if "sasl" not in self.caps or server.accounts is None:
            self.reply(server, "904", "SASL authentication failed")
            return None
        data = msg.params[0]
        if self.account is not None and self.sasl is None:
            self.reply(server, "907", "You have already authenticated using SASL")
            return None
        if data == "*":
            if self.sasl is not None:
                self.sasl = None
                self.reply(server, "906", "SASL authentication aborted")
            else:
                self.reply(server, "904", "SASL authentication failed")
            return None
        if self.sasl is None:
            if data.upper() != "PLAIN":
                self.reply(server, "908", MECHANISMS, "are available SASL mechanisms")
                self.reply(server, "904", "SASL authentication failed")
                return None
            self.sasl = ""
            server.registry.reply(self, irc.format_message("AUTHENTICATE", "+"))
            return None
        if len(data) > CHUNK:
            self.sasl = None
            self.reply(server, "905", "SASL message too long")
            return None
        if data != "+":
            self.sasl += data
        if len(self.sasl) > SASL_MAX:  # too many lines: one line too long is 905 above
            self.sasl = None
            self.reply(server, "904", "SASL authentication failed")
            return None
        if len(data) == CHUNK:
            return None  # more to come
        response, self.sasl = self.sasl, None
        self._sasl_plain(server, response)
        return None

    def _sasl_plain(self, server, response):
        try:
            fields = base64.b64decode(response, validate=True).decode("utf-8").split("\0")
        except (binascii.Error, UnicodeDecodeError):
            fields = None
        if fields is None or len(fields) != 3 or not fields[1] or not fields[2] or (
                fields[0] and fields[0] != fields[1]):
            self.reply(server, "904", "SASL authentication failed")
            return
        _, name, password = fields
        try:
            account = server.accounts.login(name, password, self.host)
        except ProtocolError:
            if not self.closing:
                self.reply(server, "904", "SASL authentication failed")
            return
        if not self.closing:
            self._logged_in(server, account)
            self.reply(server, "903", "SASL authentication successful")
            if server.ban_reason(self):
                server.enforce_bans()
            elif self.registered:  # else after the welcome (_try_register)
                offline.deliver(server, self)

    def _logged_in(self, server, account):
        self.account = account
        log.info("%s logged in as %s", self.id, account)
        self.reply(server, "900", self.prefix if self.registered else f"{self.ircnick}!*@{self.host}",
                   account, f"You are now logged in as {account}")

    def cmd_oper(self, server, msg):
        """``OPER <account> <password>``: an --oper account's password makes this a server operator."""
        if len(msg.params) < 2:
            self.reply(server, "461", "OPER", "Not enough parameters")
            return None
        name, password = msg.params[:2]
        if server.accounts is None or not server.is_oper_account(name):
            self.reply(server, "491", "No O-lines for your host")
            return None
        try:
            server.accounts.login(name, password, self.host)
        except ProtocolError:
            if not self.closing:
                self.reply(server, "464", "Password incorrect")
            return None
        if self.closing:
            return None
        self.oper = True
        self.modes = "".join(sorted(set(self.modes) | {"o"}))
        log.info("%s is a server operator (%s)", self.ircnick, name)
        self.reply(server, "381", "You are now an IRC operator")
        return None

    def cmd_kill(self, server, msg):
        """``KILL <nick> [reason]`` (server operators): the target is disconnected with ``killed``."""
        if len(msg.params) < 1:
            self.reply(server, "461", "KILL", "Not enough parameters")
            return None
        if not self.oper:
            self.reply(server, "481", "Permission Denied- You're not an IRC operator")
            return None
        target = server.registry.find(msg.params[0])
        if target is None or not hasattr(target, "sock"):
            self.reply(server, "401", msg.params[0], "No such nick/channel")
            return None
        log.info("%s killed %s: %s", self.ircnick, target.name, msg.params[1] if len(msg.params) > 1 else "")
        if target is self:
            return "killed"
        server.kill(target)
        return None

    def ban_mode(self, server, channel, sign, mask):
        """``MODE #room +b/-b mask`` (server operators): a server-wide ban of a nickname
        (``nick`` or ``nick!*@*``), an address (``*!*@1.2.3.4``) or an account (``$a:name``)."""
        if not self.oper:
            self.reply(server, "481", "Permission Denied- You're not an IRC operator")
            return None
        kind, value = _parse_mask(mask)
        if kind is None:
            self.reply(server, "472", "b", "is an unknown mode char to me")
            return None
        accounts = server.accounts
        if sign == "+":
            accounts.ban(kind, value, None, "", self.ircnick)
        elif not accounts.unban(value, self.ircnick):
            return None
        server.registry.reply(self, irc.format_message("MODE", channel, sign + "b", mask,
                                                      source=self.prefix))
        if sign == "+":
            server.enforce_bans()
        return None

    def ban_list(self, server, channel):
        accounts = server.accounts
        for (kind, value) in list(accounts.bans if accounts is not None else ()):
            if accounts.banned(kind, value):
                mask = {"nick": f"{value}!*@*", "address": f"*!*@{value}", "account": f"$a:{value}"}[kind]
                self.reply(server, "367", channel, mask)
        self.reply(server, "368", channel, "End of channel ban list")

    def cmd_register(self, server, msg):
        """IRCv3 draft/account-registration: ``REGISTER <account> <email> <password>``."""
        if len(msg.params) < 3:
            self.reply(server, "461", "REGISTER", "Not enough parameters")
            return None
        name, _, password = msg.params[:3]
        send = server.registry.reply  # framed for a WebSocket client

        def fail(code, text):
            send(self, irc.format_message("FAIL", "REGISTER", code, name, text,
                                          source=server.server_name))

        if server.accounts is None:
            fail("TEMPORARILY_UNAVAILABLE", "This server keeps no accounts")
            return None
        nick = self.nick
        if not self.registered:
            if not server.register_before_connect or not self.admitted:
                fail("COMPLETE_CONNECTION_REQUIRED", "Register your connection first")
                return None
            nick = self.pending_nick
            if nick is None:
                fail("NEED_NICK", "Send NICK first: the account name is your nickname")
                return None
        if name == "*":
            name = nick
        if name.casefold() != nick.casefold():
            fail("ACCOUNT_NAME_MUST_BE_NICK", "The account name must be your nickname")
            return None
        if self.account is not None:
            fail("ALREADY_AUTHENTICATED", "You are already logged in")
            return None
        try:
            account = server.accounts.register(nick, password)
        except ProtocolError as err:
            if err.code == "account-exists":
                fail("ACCOUNT_EXISTS", "Account already exists")
            else:
                fail("UNACCEPTABLE_PASSWORD", err.text)
            return None
        if self.closing:
            return None
        send(self, irc.format_message("REGISTER", "SUCCESS", account, "Account created",
                                      source=server.server_name))
        self._logged_in(server, account)
        return None


def _parse_mask(mask):
    """``(kind, value)`` of a ban mask, or ``(None, None)`` for one that is none of the three."""
    if mask.startswith(("$a:", "~a:")) and NAME_RE.match(mask[3:]):
        return "account", mask[3:]
    nick, _, host = mask.partition("!")
    user, _, address = host.partition("@")
    if not host and NAME_RE.match(nick):
        return "nick", nick
    if nick == "*" and user in ("*", "") and address and "*" not in address:
        try:
            return "address", str(ipaddress.ip_address(address))
        except ValueError:
            return None, None
    if NAME_RE.match(nick) and user in ("*", "") and address in ("*", ""):
        return "nick", nick
    return None, None
