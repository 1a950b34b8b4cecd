"""IRC client connections: registration, capabilities and the IRC commands, on the shared registry.

An :class:`IrcClient` is a registry member like a native one, with the differences IRC needs: it
may be in several rooms at once (channel ``#dev`` is room ``dev``), it always has a nickname, and
its :attr:`encoder` follows the capabilities it negotiated. Replies to the client itself
(numerics) are built here; events that others hear go through the registry, encoded once per
group (``codec.irc_events``). See docs/irc.md for what is supported.
"""

import time

from .. import __version__
from ..codec import irc
from ..codec.irc_events import encoder_for
from ..codec.native import ProtocolError
from ..codec.text import NAME_RE, check_printable
from .connection import Client

VERSION = "chatroom-" + __version__

#: Capabilities offered (``CAP LS``).
CAPS = ("away-notify", "echo-message", "message-tags", "multi-prefix", "server-time",
        "userhost-in-names", "cap-notify")
#: Commands allowed before registration completes.
PRE_REGISTRATION = frozenset({"CAP", "PASS", "NICK", "USER", "PING", "PONG", "QUIT"})
NICKLEN = 32
CHANNELLEN = 33  # '#' and a room name
TOPICLEN = 390
AWAYLEN = 390
KICKLEN = 390
#: Targets one PRIVMSG/NOTICE may name.
MAX_TARGETS = 4
USERLEN = 16


def _isupport(server):
    return [
        f"AWAYLEN={AWAYLEN}", "CASEMAPPING=ascii", "CHANLIMIT=#:", "CHANMODES=,,,mnt",
        f"CHANNELLEN={CHANNELLEN}", "CHANTYPES=#", "ELIST=", f"KICKLEN={KICKLEN}", "MODES=4",
        "NETWORK=chatroom", f"NICKLEN={NICKLEN}", "PREFIX=(ov)@+", "SAFELIST",
        f"TARGMAX=PRIVMSG:{MAX_TARGETS},NOTICE:{MAX_TARGETS},JOIN:,PART:,KICK:1,NAMES:1,WHOIS:1",
        f"TOPICLEN={TOPICLEN}", f"USERLEN={USERLEN}", "UTF8ONLY",
    ]


class IrcClient(Client):
    """One IRC connection. Until registration completes it is not in the registry."""

    __slots__ = ("encoder", "channels", "user", "realname", "caps", "registered", "negotiating",
                 "pending_nick", "away", "modes", "signon")

    multi = True
    plain = False  # its text may carry IRC formatting, stripped for terminal users
    protocol_name = "IRC"

    def __init__(self, member_id, sock, addr, watcher, server):
        super().__init__(member_id, sock, addr, watcher, server)
        self.encoder = encoder_for(())
        self.channels = {}  # Room -> None
        self.user = None
        self.realname = ""
        self.caps = set()
        self.registered = False
        self.negotiating = False
        self.pending_nick = None
        self.away = None
        self.modes = "i"
        self.signon = int(time.time())

    def joined(self):
        return self.channels

    # -- the transport's words, in IRC ---------------------------------------------------------

    @classmethod
    def refusal(cls, server, reason):
        return irc.format_message("ERROR", f"Closing link: {reason}")

    def make_framer(self, server):
        return irc.IrcFramer()

    def start(self, server):
        pass  # IRC clients speak first

    def line_too_long(self, server, size):
        return self.numeric(server, "417", "Input line was too long")

    def no_line_end(self, server):
        return irc.format_message("ERROR", "Closing link: no line end")

    def rate_limited(self, server, rate):
        return irc.format_message("NOTICE", self.nick or "*",
                                  f"*** Flood: over {rate:g} lines/s; line dropped",
                                  source=server.server_name)

    def ping(self, server, token):
        return irc.format_message("PING", token)

    def bye(self, server, reason):
        if reason.startswith("quit"):
            text = "Quit: " + reason[6:] if reason.startswith("quit: ") else "Quit"
        else:
            text = reason
        return irc.format_message("ERROR", f"Closing link: {self.host} ({text})")

    # -- replies -------------------------------------------------------------------------------

    @property
    def ircnick(self):
        return self.nick or self.pending_nick or "*"

    def numeric(self, server, code, *params):
        return irc.format_message(code, self.ircnick, *params, source=server.server_name)

    def reply(self, server, code, *params):
        server.registry.send(self, self.numeric(server, code, *params))

    # -- lines -----------------------------------------------------------------------------------

    def run_line(self, server, line):
        try:
            msg = irc.parse(line)
        except irc.IrcError as err:
            server.registry.send(self, irc.format_message(
                "FAIL", "*", err.code, err.text, source=server.server_name))
            return None
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
            server.registry.send(self, irc.format_message(
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
        send = server.registry.send
        if sub == "LS":
            if not self.registered:
                self.negotiating = True
            if len(msg.params) > 1 and msg.params[1].isdigit() and int(msg.params[1]) >= 302:
                self.caps.add("cap-notify")
            send(self, self._cap(server, "LS", " ".join(CAPS)))
        elif sub == "LIST":
            send(self, self._cap(server, "LIST", " ".join(sorted(self.caps))))
        elif sub == "REQ":
            if not self.registered:
                self.negotiating = True
            wanted = msg.params[1].split() if len(msg.params) > 1 else []
            names = [w[1:] if w.startswith("-") else w for w in wanted]
            if not wanted or any(n not in CAPS for n in names):
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
                self._try_register(server)
        else:
            self.reply(server, "410", sub, "Invalid CAP command")
        return None

    def _cap(self, server, sub, text):
        return irc.format_message("CAP", self.ircnick, sub, text, source=server.server_name)

    def _set_caps(self, server, caps):
        """Switch encoders: a registered member moves to the group of its new encoder."""
        self.caps = caps
        encoder = encoder_for(caps)
        if encoder is self.encoder:
            return
        for room in list(self.channels):
            group = room.groups[self.encoder]
            del group[self]
            if not group:
                del room.groups[self.encoder]
            room.groups.setdefault(encoder, {})[self] = None
        self.encoder = encoder

    def cmd_pass(self, server, msg):
        if self.registered:
            self.reply(server, "462", "You may not reregister")
        elif not msg.params:
            self.reply(server, "461", "PASS", "Not enough parameters")
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
            self._try_register(server)
            return None
        if nick == self.nick:
            return None
        if not NAME_RE.match(nick):
            self.reply(server, "432", nick, "Erroneous nickname")
            return None
        registry.set_nick(self, nick)
        return None

    def cmd_user(self, server, msg):
        if self.registered:
            self.reply(server, "462", "You may not reregister")
            return None
        if len(msg.params) < 4 or not msg.params[0]:
            self.reply(server, "461", "USER", "Not enough parameters")
            return None
        user = "".join(c for c in msg.params[0] if c.isalnum() or c in "-_.")[:USERLEN - 1]
        self.user = "~" + (user or "user")
        self.realname = irc.check_text(msg.params[3])[:TOPICLEN]
        self._try_register(server)
        return None

    def _try_register(self, server):
        if self.registered or self.negotiating or self.pending_nick is None or self.user is None:
            return
        registry = server.registry
        try:
            registry.add(self, room=None, nick=self.pending_nick)
        except ProtocolError:
            self.reply(server, "433", self.pending_nick, "Nickname is already in use")
            self.pending_nick = None
            return
        self.pending_nick = None
        self.registered = True
        self._prefix = None
        name = server.server_name
        created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(server.started or time.time()))
        self.reply(server, "001", f"Welcome to the chatroom IRC network, {self.prefix}")
        self.reply(server, "002", f"Your host is {name}, running version {VERSION}")
        self.reply(server, "003", f"This server was created {created}")
        self.reply(server, "004", name, VERSION, "i", "mnt", "ov")
        tokens = _isupport(server)
        for start in range(0, len(tokens), 12):
            self.reply(server, "005", *tokens[start:start + 12], "are supported by this server")
        self._lusers(server)
        self._motd(server)

    # -- information -----------------------------------------------------------------------------

    def _lusers(self, server):
        registry = server.registry
        users = len(registry.ids)
        self.reply(server, "251", f"There are {users} users and 0 invisible on 1 servers")
        self.reply(server, "252", "0", "operator(s) online")
        self.reply(server, "254", str(len(registry.rooms)), "channels formed")
        self.reply(server, "255", f"I have {users} clients and 0 servers")
        self.reply(server, "265", str(users), str(users), f"Current local users {users}, max {users}")
        self.reply(server, "266", str(users), str(users), f"Current global users {users}, max {users}")

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
        server.registry.send(self, irc.format_message(
            "PONG", server.server_name, msg.params[0], source=server.server_name))
        return None

    def cmd_pong(self, server, msg):
        return None  # any line proves liveness

    def cmd_quit(self, server, msg):
        text = msg.params[0] if msg.params else ""
        text = check_printable(text)[:TOPICLEN]
        return "quit: " + text if text else "quit"

    # -- channels --------------------------------------------------------------------------------

    def _room(self, server, channel):
        """The existing room of ``channel``, or None."""
        name = irc.channel_to_room(channel)
        return server.registry.find_room(name) if name is not None else None

    def cmd_join(self, server, msg):
        if not msg.params:
            self.reply(server, "461", "JOIN", "Not enough parameters")
            return None
        registry = server.registry
        if msg.params[0] == "0":
            for room in list(self.channels):
                registry.part(self, room, "Left all channels")
            return None
        for channel in msg.params[0].split(","):
            if not channel:
                continue
            name = irc.channel_to_room(channel)
            if name is None:
                self.reply(server, "403", channel, "No such channel")
                continue
            existing = registry.find_room(name)
            room = registry.enter(self, existing.name if existing is not None else name)
            if room is None:
                continue
            if room.topic is not None:
                self._topic_reply(server, room)
            self._names(server, room)
        return None

    def cmd_part(self, server, msg):
        if not msg.params:
            self.reply(server, "461", "PART", "Not enough parameters")
            return None
        reason = irc.check_text(msg.params[1])[:TOPICLEN] if len(msg.params) > 1 else ""
        for channel in msg.params[0].split(","):
            room = self._room(server, channel)
            if room is None:
                self.reply(server, "403", channel, "No such channel")
            elif room not in self.channels:
                self.reply(server, "442", channel, "You're not on that channel")
            else:
                server.registry.part(self, room, reason)
        return None

    def _names(self, server, room):
        channel = irc.room_to_channel(room.name)
        full = "userhost-in-names" in self.caps
        every = "multi-prefix" in self.caps
        names = []
        for m in room.members:
            names.append(_status(room, m, every) + (m.prefix if full else m.ircnick))
        line = []
        size = 0
        for name in names:
            if size + len(name) > 400 and line:
                self.reply(server, "353", "=", channel, " ".join(line))
                line, size = [], 0
            line.append(name)
            size += len(name) + 1
        if line:
            self.reply(server, "353", "=", channel, " ".join(line))
        self.reply(server, "366", channel, "End of /NAMES list")

    def cmd_names(self, server, msg):
        if not msg.params:
            self.reply(server, "366", "*", "End of /NAMES list")
            return None
        for channel in msg.params[0].split(","):
            room = self._room(server, channel)
            if room is None:
                self.reply(server, "366", channel, "End of /NAMES list")
            else:
                self._names(server, room)
        return None

    def cmd_topic(self, server, msg):
        if not msg.params:
            self.reply(server, "461", "TOPIC", "Not enough parameters")
            return None
        channel = msg.params[0]
        room = self._room(server, channel)
        if room is None:
            self.reply(server, "403", channel, "No such channel")
            return None
        if len(msg.params) == 1:
            if room.topic is None:
                self.reply(server, "331", irc.room_to_channel(room.name), "No topic is set")
            else:
                self._topic_reply(server, room)
            return None
        if room not in self.channels:
            self.reply(server, "442", channel, "You're not on that channel")
            return None
        if "t" in room.modes and self not in room.ops:
            self.reply(server, "482", channel, "You're not channel operator")
            return None
        server.registry.set_topic(self, room, irc.check_text(msg.params[1])[:TOPICLEN])
        return None

    def _topic_reply(self, server, room):
        text, setter, when = room.topic
        channel = irc.room_to_channel(room.name)
        self.reply(server, "332", channel, text)
        self.reply(server, "333", channel, setter, str(when))

    def cmd_list(self, server, msg):
        registry = server.registry
        if msg.params and msg.params[0]:
            rooms = [r for r in (self._room(server, c) for c in msg.params[0].split(",")) if r]
        else:
            rooms = list(registry.rooms.values())
        self.reply(server, "321", "Channel", "Users  Name")
        for room in rooms:
            topic = room.topic[0] if room.topic else ""
            self.reply(server, "322", irc.room_to_channel(room.name), str(len(room.members)), topic)
        self.reply(server, "323", "End of /LIST")
        return None

    def cmd_kick(self, server, msg):
        if len(msg.params) < 2:
            self.reply(server, "461", "KICK", "Not enough parameters")
            return None
        channel = msg.params[0]
        room = self._room(server, channel)
        if room is None:
            self.reply(server, "403", channel, "No such channel")
            return None
        if room not in self.channels:
            self.reply(server, "442", channel, "You're not on that channel")
            return None
        if self not in room.ops:
            self.reply(server, "482", channel, "You're not channel operator")
            return None
        reason = irc.check_text(msg.params[2])[:KICKLEN] if len(msg.params) > 2 else ""
        for who in msg.params[1].split(","):
            target = server.registry.find(who)
            if target is None:
                self.reply(server, "401", who, "No such nick/channel")
            elif target not in room.members:
                self.reply(server, "441", who, channel, "They aren't on that channel")
            else:
                server.registry.kick(self, room, target, reason)
        return None

    def cmd_mode(self, server, msg):
        if not msg.params:
            self.reply(server, "461", "MODE", "Not enough parameters")
            return None
        target = msg.params[0]
        if not target.startswith("#"):
            return self._user_mode(server, msg)
        room = self._room(server, target)
        if room is None:
            self.reply(server, "403", target, "No such channel")
            return None
        channel = irc.room_to_channel(room.name)
        if len(msg.params) == 1:
            self.reply(server, "324", channel, "+" + room.modes)
            self.reply(server, "329", channel, str(room.created))
            return None
        changes, args = msg.params[1], list(msg.params[2:])
        if changes.lstrip("+-") in ("b", "e", "I") and not args:
            end = {"b": ("368", "End of channel ban list"), "e": ("349", "End of channel exception list"),
                   "I": ("347", "End of channel invite list")}[changes.lstrip("+-")]
            self.reply(server, end[0], channel, end[1])
            return None
        if self not in room.ops:
            self.reply(server, "482", channel, "You're not channel operator")
            return None
        self._channel_modes(server, room, channel, changes, args)
        return None

    def _channel_modes(self, server, room, channel, changes, args):
        registry = server.registry
        sign = "+"
        modes = room.modes
        flags = []
        for ch in changes[:MODES_PER_LINE * 4]:
            if ch in "+-":
                sign = ch
            elif ch in "ov":
                if not args:
                    self.reply(server, "461", "MODE", "Not enough parameters")
                    continue
                who = args.pop(0)
                target = registry.find(who)
                if target is None:
                    self.reply(server, "401", who, "No such nick/channel")
                elif target not in room.members:
                    self.reply(server, "441", who, channel, "They aren't on that channel")
                elif ch == "o":
                    registry.set_op(self, room, target, sign == "+")
                else:
                    registry.set_voice(self, room, target, sign == "+")
            elif ch in "mnt":
                if (sign == "+") != (ch in modes):
                    modes = modes + ch if sign == "+" else modes.replace(ch, "")
                    flags.append(sign + ch)
            else:
                self.reply(server, "472", ch, "is an unknown mode char to me")
        if flags:
            registry.set_modes(self, room, _join_flags(flags), "".join(sorted(modes)))

    def _user_mode(self, server, msg):
        target = msg.params[0]
        other = server.registry.find_nick(target)
        if other is None:
            self.reply(server, "401", target, "No such nick/channel")
            return None
        if other is not self:
            self.reply(server, "502", "Can't change mode for other users")
            return None
        if len(msg.params) > 1:
            sign, changed = "+", []
            for ch in msg.params[1]:
                if ch in "+-":
                    sign = ch
                elif ch == "i":
                    if (sign == "+") != ("i" in self.modes):
                        self.modes = "i" if sign == "+" else ""
                        changed.append(sign + "i")
                else:
                    self.reply(server, "501", "Unknown MODE flag")
            if changed:
                server.registry.send(self, irc.format_message(
                    "MODE", self.nick, "".join(changed), source=self.prefix))
            return None
        self.reply(server, "221", "+" + self.modes)
        return None

    # -- talking ---------------------------------------------------------------------------------

    def cmd_privmsg(self, server, msg):
        return self._message(server, msg, notice=False)

    def cmd_notice(self, server, msg):
        return self._message(server, msg, notice=True)

    def _message(self, server, msg, notice):
        command = msg.command
        if not msg.params or not msg.params[0]:
            if not notice:
                self.reply(server, "411", f"No recipient given ({command})")
            return None
        if len(msg.params) < 2 or not msg.params[1]:
            if not notice:
                self.reply(server, "412", "No text to send")
            return None
        text = irc.check_text(msg.params[1])
        tags = _client_tags(msg.tags)
        registry = server.registry
        for target in msg.params[0].split(",")[:MAX_TARGETS]:
            if target.startswith("#"):
                room = self._room(server, target)
                if room is None:
                    if not notice:
                        self.reply(server, "403", target, "No such channel")
                elif not self._may_speak(room):
                    if not notice:
                        self.reply(server, "404", target, "Cannot send to channel")
                else:
                    registry.say(self, text, room, notice, tags)
            else:
                try:  # the registry finds the nick (in a cluster, on any server)
                    other = registry.tell(self, target, text, notice, tags)
                except ProtocolError:
                    if not notice:
                        self.reply(server, "401", target, "No such nick/channel")
                    continue
                away = getattr(other, "away", None)
                if away and not notice:
                    self.reply(server, "301", other.ircnick, away)
        return None

    def _may_speak(self, room):
        if room not in self.channels:
            return "n" not in room.modes
        if "m" in room.modes:
            return self in room.ops or self in room.voices
        return True

    def cmd_tagmsg(self, server, msg):
        if not msg.params:
            return None
        tags = _client_tags(msg.tags)
        if not tags:
            return None
        registry = server.registry
        for target in msg.params[0].split(",")[:MAX_TARGETS]:
            if target.startswith("#"):
                room = self._room(server, target)
                if room is not None and self._may_speak(room):
                    registry.tagmsg(self, room, None, tags)
            else:
                other = registry.find(target)
                if other is not None:
                    registry.tagmsg(self, None, other, tags)
        return None

    def cmd_away(self, server, msg):
        text = irc.check_text(msg.params[0])[:AWAYLEN] if msg.params and msg.params[0] else None
        self.away = text
        if text:
            self.reply(server, "306", "You have been marked as being away")
        else:
            self.reply(server, "305", "You are no longer marked as being away")
        server.registry.set_away(self, text)
        return None

    # -- who is who ------------------------------------------------------------------------------

    def cmd_who(self, server, msg):
        mask = msg.params[0] if msg.params else "*"
        registry = server.registry
        if mask.startswith("#"):
            room = self._room(server, mask)
            if room is not None:
                channel = irc.room_to_channel(room.name)
                for m in room.members:
                    self._who_line(server, channel, room, m)
        else:
            m = registry.find(mask)
            if m is not None:
                room = next(iter(m.joined()), None)
                channel = irc.room_to_channel(room.name) if room is not None else "*"
                self._who_line(server, channel, room, m)
        self.reply(server, "315", mask, "End of WHO list")
        return None

    def _who_line(self, server, channel, room, m):
        flags = ("G" if getattr(m, "away", None) else "H")
        if room is not None:
            flags += _status(room, m, "multi-prefix" in self.caps)
        user, host = m.prefix.split("!", 1)[1].split("@", 1)
        self.reply(server, "352", channel, user, host, server.server_name, m.ircnick, flags,
                   "0 " + (getattr(m, "realname", "") or m.ircnick))

    def cmd_whois(self, server, msg):
        if not msg.params:
            self.reply(server, "431", "No nickname given")
            return None
        who = msg.params[-1]
        m = server.registry.find(who)
        if m is None:
            self.reply(server, "401", who, "No such nick/channel")
            self.reply(server, "318", who, "End of /WHOIS list")
            return None
        nick = m.ircnick
        user, host = m.prefix.split("!", 1)[1].split("@", 1)
        self.reply(server, "311", nick, user, host, "*", getattr(m, "realname", "") or nick)
        rooms = [_status(r, m, "multi-prefix" in self.caps) + irc.room_to_channel(r.name)
                 for r in m.joined()]
        if rooms:
            self.reply(server, "319", nick, " ".join(rooms))
        self.reply(server, "312", nick, server.server_name, "chatroom")
        if getattr(m, "away", None):
            self.reply(server, "301", nick, m.away)
        signon = getattr(m, "signon", None)
        if signon is not None:
            idle = max(0, int(server.loop.now() - m.last_seen))
            self.reply(server, "317", nick, str(idle), str(signon), "seconds idle, signon time")
        self.reply(server, "318", nick, "End of /WHOIS list")
        return None

    def cmd_ison(self, server, msg):
        registry = server.registry
        found = []
        for param in msg.params:
            for nick in param.split():
                m = registry.find_nick(nick)
                if m is not None:
                    found.append(m.ircnick)
        self.reply(server, "303", " ".join(found))
        return None

    def cmd_userhost(self, server, msg):
        if not msg.params:
            self.reply(server, "461", "USERHOST", "Not enough parameters")
            return None
        out = []
        for nick in " ".join(msg.params).split()[:5]:
            m = server.registry.find_nick(nick)
            if m is not None:
                away = "-" if getattr(m, "away", None) else "+"
                out.append(f"{m.ircnick}={away}{m.prefix.split('!', 1)[1]}")
        self.reply(server, "302", " ".join(out))
        return None


#: Mode changes reported in one MODE line, as ISUPPORT's MODES says.
MODES_PER_LINE = 4


def _status(room, m, every):
    """The membership prefix of ``m`` in ``room``: ``@``, ``+``, both with multi-prefix, or none."""
    op = m in room.ops
    voice = m in room.voices
    if every:
        return ("@" if op else "") + ("+" if voice else "")
    return "@" if op else "+" if voice else ""


def _join_flags(flags):
    out, sign = "", None
    for flag in flags:
        if flag[0] != sign:
            sign = flag[0]
            out += sign
        out += flag[1:]
    return out


def _client_tags(tags):
    """The client-only tags (``+name``) of a message, which are relayed; None when there are none."""
    if not tags:
        return None
    kept = {k: v for k, v in tags.items() if k.startswith("+")}
    return kept or None


COMMANDS = {
    name[4:].upper(): func for name, func in vars(IrcClient).items() if name.startswith("cmd_")
}
