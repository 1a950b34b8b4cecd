"""An IRC connection: registration, capabilities, and the dispatch of its lines to the commands.

An :class:`IrcClient` is a registry member like a native one, with the differences IRC needs: it
may be in several rooms at once (channel ``#dev`` is room ``dev``), it always has a nickname, and
its :attr:`encoder` follows the capabilities it negotiated. Replies to the client itself
(numerics) are built here; events that others hear go through the registry, encoded once per
group (``codec.irc_events``). See docs/irc.md for what is supported.
"""

import logging
import time

from ...codec import irc
from ...codec.irc_events import encoder_for
from ...codec.native import ProtocolError
from ...codec.text import NAME_RE, check_printable
from .. import offline
from ..connection import Client
from .accounts import MECHANISMS, AccountCommands
from .channels import ChannelCommands
from .history import HISTORY_CAPS, HistoryCommands, history_tokens
from .isupport import (CAPS, CLIENT_TAGS_LIMIT, PRE_REGISTRATION, TOPICLEN, USERLEN, VERSION,
                       isupport_tokens)
from .labels import CAP, run_labeled
from .messages import MessageCommands
from .queries import QueryCommands

log = logging.getLogger("chatroom.server")

class IrcClient(AccountCommands, ChannelCommands, MessageCommands, QueryCommands, HistoryCommands,
                Client):
    """One IRC connection. Until registration completes it is not in the registry."""

    __slots__ = ("encoder", "channels", "user", "realname", "caps", "registered", "negotiating",
                 "pending_nick", "away", "modes", "signon", "sasl", "cap_version", "batch",
                 "batch_room", "batch_channel")

    multi = True
    plain = False  # its text may carry IRC formatting, stripped for terminal users
    protocol_name = "IRC"

    def __init__(self, member_id, sock, addr, watcher, server):
        super().__init__(member_id, sock, addr, watcher, server)
        self.encoder = self.encoder_for(())
        self.channels = {}  # Room -> None
        self.user = None
        self.realname = ""
        self.caps = set()
        self.registered = False
        self.negotiating = False
        self.pending_nick = None
        self.away = None
        self.modes = ""
        self.signon = int(time.time())
        self.sasl = None  #: a SASL exchange under way: the base64 so far ("" at its start)
        self.cap_version = 0  #: the version of CAP LS (302: capabilities show their values)
        self.batch = None  #: texts of this read's PRIVMSGs to ``batch_room``, said at its end
        self.batch_room = None
        self.batch_channel = None  #: ``batch_room``'s channel as this client wrote it

    def joined(self):
        return self.channels

    #: The shared encoder for a set of negotiated capabilities (a WebSocket client's frames them).
    encoder_for = staticmethod(encoder_for)

    # -- the transport's words, in IRC ---------------------------------------------------------

    @classmethod
    def refusal(cls, server, reason):
        return irc.format_message("ERROR", f"Closing link: {reason}")

    def make_framer(self, server):
        return irc.IrcFramer(max_tags=CLIENT_TAGS_LIMIT)

    def start(self, server):
        pass  # IRC clients speak first

    def line_too_long(self, server, size):
        return self.numeric(server, "417", "Input line was too long")

    def no_line_end(self, server):
        return None  # the ERROR that closes the link says it

    def rate_limited(self, server, rate):
        return irc.format_message("NOTICE", self.nick or "*",
                                  f"*** Flood: over {rate:g} lines/s; line dropped",
                                  source=server.server_name)

    def ping(self, server, token):
        return irc.format_message("PING", token)

    def bye(self, server, reason):
        if reason == "banned":
            return self.numeric(server, "465", "You are banned from this server") + irc.format_message(
                "ERROR", f"Closing link: {self.host} (banned)")
        if reason.startswith("quit"):
            text = "Quit: " + reason[6:] if reason.startswith("quit: ") else "Quit"
        else:
            text = reason
        return irc.format_message("ERROR", f"Closing link: {self.host} ({text})")

    # -- replies -------------------------------------------------------------------------------

    @property
    def ircnick(self):
        return self.nick or "*"  # replies before registration name no one yet

    def numeric(self, server, code, *params):
        return irc.format_message(code, self.ircnick, *params, source=server.server_name)

    def reply(self, server, code, *params):
        server.registry.reply(self, self.numeric(server, code, *params))

    # -- lines -----------------------------------------------------------------------------------

    def run_line(self, server, line):
        if line[:9] == b"PRIVMSG #" and b"\0" not in line:  # the common line, parsed in place
            target, sep, rest = line[8:].partition(b" ")
            if sep and rest[:1] == b":" and len(rest) > 1:
                try:
                    params = [target.decode("utf-8"), rest[1:].decode("utf-8")]
                except UnicodeDecodeError:
                    params = None
                if params is not None and self._batched(server, params):
                    return None
        try:
            msg = irc.parse(line)
        except irc.IrcError as err:
            if err.command is None:
                server.registry.reply(self, irc.format_message(
                    "FAIL", "*", err.code, err.text, source=server.server_name))
                return None
            # A word no command could be (PRIV-MSG, NO_SUCH): answered as an unknown command.
            msg = irc.Message(err.tags, None, err.command, [])
        if msg.command == "PRIVMSG" and not msg.tags and self._batched(server, msg.params):
            return None
        if self.batch:
            self.run_batch(server)
        if CAP in self.caps and "label" in msg.tags:
            to_self = (msg.command in ("PRIVMSG", "NOTICE", "TAGMSG") and msg.params
                       and self.nick and irc.casefold(msg.params[0]) == irc.casefold(self.nick))
            return run_labeled(self, server, msg.tags["label"], lambda: self._run(server, msg),
                               bool(to_self))
        return self._run(server, msg)

    def _batched(self, server, params):
        """Collect a plain ``PRIVMSG #channel :text`` that may be said: this read's run of them
        to one channel goes out as one fan-out (:meth:`run_batch`). False: run it as any line."""
        if len(params) != 2 or not params[1] or not self.registered:
            return False
        target = params[0]
        batch = self.batch
        if batch and target == self.batch_channel:  # the channel of the lines before: as they were
            try:
                batch.append(irc.check_text(params[1]))
            except irc.IrcError:
                return False  # run as a line, it gets its FAIL in its place
            return True
        if not target.startswith("#") or "," in target:
            return False
        room = self._room(server, target)
        if room is None or room not in self.channels or not self._may_speak(room):
            return False
        try:
            text = irc.check_text(params[1])
        except irc.IrcError:
            return False
        if batch:
            if self.batch_room is room:
                batch.append(text)
                return True
            self.run_batch(server)
        self.batch = [text]
        self.batch_room = room
        self.batch_channel = target
        return True

    def run_batch(self, server):
        """Say this read's run of messages to one channel as one fan-out (in order, before
        anything else the client says or hears from here)."""
        texts = self.batch
        if not texts:
            return
        room = self.batch_room
        self.batch = self.batch_room = self.batch_channel = None
        if self.closing or room not in self.channels:
            return
        if len(texts) == 1:
            server.registry.say(self, texts[0], room)
        else:
            server.registry.say_batch(self, texts, room)

    def _run(self, server, msg):
        command = msg.command
        if not self.registered and command not in PRE_REGISTRATION:
            if command.isdigit():
                return None
            self.reply(server, "451", "You have not registered")
            return None
        handler = COMMANDS.get(command)
        if handler is None:
            self.reply(server, "421", command, "Unknown command")
            return None
        try:
            return handler(self, server, msg)
        except ProtocolError as err:
            self._protocol_error(server, command, msg, err)
        except irc.IrcError as err:
            server.registry.reply(self, irc.format_message(
                "FAIL", command, err.code, err.text, source=server.server_name))
        return None

    def _protocol_error(self, server, command, msg, err):
        """A refusal from the registry, as the numeric an IRC client expects."""
        arg = msg.params[0] if msg.params else "*"
        if err.code == "nick-taken":
            self.reply(server, "433", arg, "Nickname is already in use")
        elif err.code == "nick-invalid":
            self.reply(server, "432", arg, "Erroneous nickname")
        elif err.code == "no-such-nick":
            self.reply(server, "401", arg, "No such nick/channel")
        elif err.code == "room-invalid":
            self.reply(server, "479", arg, "Illegal channel name")
        else:
            self.reply(server, "400", command, err.text)

    # -- registration ----------------------------------------------------------------------------

    def cmd_cap(self, server, msg):
        if not msg.params:
            self.reply(server, "461", "CAP", "Not enough parameters")
            return None
        sub = msg.params[0].upper()
        send = server.registry.reply
        if sub == "LS":
            if not self.registered:
                self.negotiating = True
            if len(msg.params) > 1 and msg.params[1].isdigit() and int(msg.params[1]) >= 302:
                self.caps.add("cap-notify")
                self.cap_version = 302
            send(self, self._cap(server, "LS", " ".join(self._offered(server))))
        elif sub == "LIST":
            send(self, self._cap(server, "LIST", " ".join(sorted(self.caps))))
        elif sub == "REQ":
            if not self.registered:
                self.negotiating = True
            wanted = msg.params[1].split() if len(msg.params) > 1 else []
            names = [w[1:] if w.startswith("-") else w for w in wanted]
            offered = {c.partition("=")[0] for c in self._offered(server)}
            if not wanted or any(n not in offered for n in names):
                send(self, self._cap(server, "NAK", " ".join(wanted)))
                return None
            caps = set(self.caps)
            for w in wanted:
                if w.startswith("-"):
                    caps.discard(w[1:])
                else:
                    caps.add(w)
            self._set_caps(server, caps)
            send(self, self._cap(server, "ACK", " ".join(wanted)))
        elif sub == "END":
            if not self.registered:
                self.negotiating = False
                return self._try_register(server)
        else:
            self.reply(server, "410", sub, "Invalid CAP command")
        return None

    def _offered(self, server):
        """CAP LS: the capabilities, with the history ones and the account ones where the server
        keeps them."""
        caps = list(CAPS)
        if server.history is not None:
            caps += HISTORY_CAPS
        if self.encoder.wrap is None:  # (a WebSocket client's lines are frames by the time
            if "batch" not in caps:    # they could be labeled)
                caps.append("batch")
            caps.append(CAP)
        if server.accounts is not None:
            registration = "draft/account-registration"
            if self.cap_version >= 302 and server.register_before_connect:
                registration += "=before-connect"
            caps += ["sasl=" + MECHANISMS if self.cap_version >= 302 else "sasl", registration]
        return caps

    def _cap(self, server, sub, text):
        return irc.format_message("CAP", self.ircnick, sub, text, source=server.server_name)

    def _set_caps(self, server, caps):
        self.caps = caps
        server.registry.set_encoder(self, self.encoder_for(caps))

    def cmd_pass(self, server, msg):
        if self.registered:
            self.reply(server, "462", "You may not reregister")
        elif not msg.params:
            self.reply(server, "461", "PASS", "Not enough parameters")
        elif server.password is not None:
            self.admitted = self.password_matches(server, msg.params[0])
        return None

    def cmd_nick(self, server, msg):
        if not msg.params or not msg.params[0]:
            self.reply(server, "431", "No nickname given")
            return None
        nick = msg.params[0]
        registry = server.registry
        if not self.registered:
            if not NAME_RE.match(nick) or irc.GUEST_NICK_RE.match(nick):
                self.reply(server, "432", nick, "Erroneous nickname")
                return None
            holder = registry.find_nick(nick)
            if holder is not None:
                self.reply(server, "433", nick, "Nickname is already in use")
                return None
            self.pending_nick = nick
            return self._try_register(server)
        if nick == self.nick:
            return None
        if not NAME_RE.match(nick):
            self.reply(server, "432", nick, "Erroneous nickname")
            return None
        if self.nick_refused(server, nick):
            return None
        if server.accounts is not None and server.accounts.banned("nick", nick):
            return "banned"
        registry.set_nick(self, nick)
        return None

    def cmd_user(self, server, msg):
        if self.registered:
            self.reply(server, "462", "You may not reregister")
            return None
        if len(msg.params) < 4 or not msg.params[0] or not msg.params[3]:
            self.reply(server, "461", "USER", "Not enough parameters")
            return None
        realname = irc.check_text(msg.params[3])[:TOPICLEN]
        user = "".join(c for c in msg.params[0] if c.isalnum() or c in "-_.")[:USERLEN - 1]
        self.user = "~" + (user or "user")
        self.realname = realname
        return self._try_register(server)

    def _try_register(self, server):
        """Complete registration if NICK, USER and CAP END are in; returns a disconnect reason
        when the server password was not given (464)."""
        if self.registered or self.negotiating or self.pending_nick is None or self.user is None:
            return None
        if not self.admitted:
            log.info("%s gave no or a wrong server password", self.id)
            self.reply(server, "464", "Password incorrect")
            return "wrong-password"
        registry = server.registry
        if self.nick_refused(server, self.pending_nick):  # checked here: SASL may come after NICK
            self.pending_nick = None
            return None
        accounts = server.accounts
        if accounts is not None and accounts.banned("nick", self.pending_nick):
            return "banned"
        try:
            registry.add(self, room=None, nick=self.pending_nick)
        except ProtocolError:
            self.reply(server, "433", self.pending_nick, "Nickname is already in use")
            self.pending_nick = None
            return None
        self.pending_nick = None
        self.registered = True
        self._prefix = None
        name = server.server_name
        created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(server.started or time.time()))
        self.reply(server, "001", f"Welcome to the chatroom IRC network, {self.prefix}")
        self.reply(server, "002", f"Your host is {name}, running version {VERSION}")
        self.reply(server, "003", f"This server was created {created}")
        self.reply(server, "004", name, VERSION, "i", "mnost", "ov")
        tokens = sorted(isupport_tokens(server) + history_tokens(server))
        for start in range(0, len(tokens), 12):
            self.reply(server, "005", *tokens[start:start + 12], "are supported by this server")
        self._lusers(server)
        self._motd(server)
        if self.account is not None:  # logged in with SASL before registering
            offline.deliver(server, self)

    # -- information -----------------------------------------------------------------------------

    def _lusers(self, server):
        """LUSERS; in a cluster the users and servers of every node (their invisible ones count
        as visible: other nodes' user modes are not in Redis) and this node's own."""
        registry = server.registry
        servers, elsewhere = registry.cluster_size()  # in a cluster, lookups that may wait:
        remote_rooms = registry.others_count()  # first, so the local counts below are current
        if self.closing:
            return
        users = len(registry.ids)
        invisible = sum(1 for m in registry.ids.values() if "i" in getattr(m, "modes", ""))
        unknown = len(server.clients) - sum(1 for c in server.clients if c.id in registry.ids)
        everyone = users + elsewhere
        server.peak_users = peak = max(server.peak_users, users)
        server.peak_global = top = max(server.peak_global, everyone)
        self.reply(server, "251", f"There are {everyone - invisible} users and {invisible} "
                   f"invisible on {servers} servers")
        self.reply(server, "252", "0", "operator(s) online")
        if unknown > 0:
            self.reply(server, "253", str(unknown), "unknown connection(s)")
        channels = len(registry.rooms.keys() | remote_rooms.keys())
        self.reply(server, "254", str(channels), "channels formed")
        self.reply(server, "255", f"I have {users} clients and {servers - 1} servers")
        self.reply(server, "265", str(users), str(peak), f"Current local users {users}, max {peak}")
        self.reply(server, "266", str(everyone), str(top), f"Current global users {everyone}, max {top}")

    def _motd(self, server):
        if not server.motd:
            self.reply(server, "422", "MOTD File is missing")
            return
        self.reply(server, "375", f"- {server.server_name} Message of the day - ")
        for line in server.motd:
            self.reply(server, "372", "- " + check_printable(line))
        self.reply(server, "376", "End of /MOTD command.")

    def cmd_lusers(self, server, msg):
        self._lusers(server)

    def cmd_motd(self, server, msg):
        self._motd(server)

    def cmd_ping(self, server, msg):
        if not msg.params:
            self.reply(server, "409", "No origin specified")
            return None
        server.registry.reply(self, irc.format_message(
            "PONG", server.server_name, msg.params[0], source=server.server_name))
        return None

    def cmd_pong(self, server, msg):
        return None  # any line proves liveness

    def cmd_quit(self, server, msg):
        text = msg.params[0][:TOPICLEN] if msg.params else ""
        try:
            text = irc.check_text(text)  # formatting stays for IRC; native users get it stripped
        except irc.IrcError:
            text = check_printable(text)
        return "quit: " + text if text else "quit"


COMMANDS = {
    name[4:].upper(): func
    for klass in reversed(IrcClient.__mro__)
    for name, func in vars(klass).items() if name.startswith("cmd_")
}
