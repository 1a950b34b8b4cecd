"""IRC channel commands: JOIN, PART, NAMES, TOPIC, LIST, KICK and MODE."""

from ...codec import irc
from ...codec.text import NAME_RE
from ..history import replay
from .isupport import CHANLIMIT, KICKLEN, TOPICLEN

#: Mode changes reported in one MODE line, as ISUPPORT's MODES says.
MODES_PER_LINE = 4


class ChannelCommands:
    """Mixed into :class:`~chatroom.transport.irc.client.IrcClient`."""

    __slots__ = ()

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
            if len(self.channels) >= CHANLIMIT and (existing is None or existing not in self.channels):
                self.reply(server, "405", channel, "You have joined too many channels")
                continue
            room = registry.enter(self, existing.name if existing is not None else name)
            if room is None:
                continue
            if room.topic is not None:
                self._topic_reply(server, room)
            self._names(server, room)
            replay(server, self, room.name)
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
        kind = "@" if "s" in room.modes else "="  # secret, or public
        full = "userhost-in-names" in self.caps
        every = "multi-prefix" in self.caps
        names = []
        for m in room.members:
            names.append(member_status(room, m, every) + (m.prefix if full else m.ircnick))
        for name, prefix in server.registry.others_in(room.name):  # a cluster's other servers
            if self.closing:
                return
            nick = irc_nick(name)
            names.append(prefix if full and prefix else nick)
        line = []
        size = 0
        for name in names:
            if size + len(name) > 400 and line:
                self.reply(server, "353", kind, channel, " ".join(line))
                line, size = [], 0
            line.append(name)
            size += len(name) + 1
        if line:
            self.reply(server, "353", kind, channel, " ".join(line))
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
        # Members on a cluster's other servers count; rooms only they have are not listed (this
        # server cannot know whether such a room is secret).
        others = registry.others_count() if rooms else {}
        if self.closing:
            return None
        self.reply(server, "321", "Channel", "Users  Name")
        for room in rooms:
            if "s" in room.modes and room not in self.channels:
                continue  # secret: only its members see it listed
            topic = room.topic[0] if room.topic else ""
            size = len(room.members) + others.get(room.name, 0)
            self.reply(server, "322", irc.room_to_channel(room.name), str(size), topic)
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
        if changes in ("+b", "-b", "b") and args:  # server-wide bans (docs/irc.md)
            return self.ban_mode(server, channel, "-" if changes == "-b" else "+", args[0])
        if changes.lstrip("+-") == "b" and not args:
            self.ban_list(server, channel)
            return None
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
            elif ch in "mnst":
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
                server.registry.reply(self, irc.format_message(
                    "MODE", self.nick, "".join(changed), source=self.prefix))
            return None
        self.reply(server, "221", "+" + self.modes)
        return None


def irc_nick(name):
    """How IRC shows a member known only by its name (its nickname, or a guest's id)."""
    return name if NAME_RE.match(name) else irc.id_to_nick(name) or name


def member_status(room, m, every):
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
