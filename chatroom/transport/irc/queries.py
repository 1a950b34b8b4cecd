"""IRC questions about people: WHO, WHOIS, ISON and USERHOST."""

import re

from ...codec import irc
from .channels import irc_nick, member_status
from .isupport import WHO_LIMIT

#: WHOX fields, in the order a ``354`` gives them: token, channel, user, IP, host, server, nick,
#: flags, hop count, idle seconds, account (``0``: none), channel op level, real name.
WHOX_FIELDS = "tcuihsnfdlaor"
_TOKEN_RE = re.compile(r"[0-9]{1,3}")
#: Nicknames one ISON looks up at most (a 512-byte line holds about this many).
ISON_MAX = 64


class QueryCommands:
    """Mixed into :class:`~chatroom.transport.irc.client.IrcClient`."""

    __slots__ = ()

    def cmd_who(self, server, msg):
        mask = msg.params[0] if msg.params else "*"
        registry = server.registry
        line = self._who_line
        if len(msg.params) > 1 and msg.params[1].startswith("%"):  # WHOX: the fields asked for
            fields, _, token = msg.params[1][1:].partition(",")
            wanted = [f for f in WHOX_FIELDS if f in fields]
            if "t" in wanted and not _TOKEN_RE.fullmatch(token):
                wanted.remove("t")

            def line(server, channel, room, m):
                self._whox_line(server, channel, room, m, wanted, token)
        if mask.startswith("#"):
            room = self._room(server, mask)
            if room is not None:
                channel = irc.room_to_channel(room.name)
                members = list(room.members)
                others = registry.others_in(room.name)  # on a cluster's other servers
                if self.closing:
                    return None
                for m in members:
                    line(server, channel, room, m)
                for name, prefix in others:
                    line(server, channel, None, Elsewhere(name, prefix))
        elif mask in ("*", "0") or "*" in mask or "?" in mask:
            match = _glob(mask)
            shared = {m for room in self.channels for m in room.members}
            left = WHO_LIMIT  # a mask matching thousands is answered with the first of them
            for m in list(registry.ids.values()):
                if "i" in getattr(m, "modes", "") and m not in shared and m is not self:
                    continue  # invisible to masks, unless in a room with the asker
                if match(m.ircnick):
                    left -= 1
                    if left < 0:
                        break
                    room = next(iter(m.joined()), None)
                    channel = irc.room_to_channel(room.name) if room is not None else "*"
                    line(server, channel, room, m)
        else:
            m = registry.find_anywhere(mask)  # in a cluster, on any server
            if self.closing:
                return None
            if m is not None:
                joined = getattr(m, "joined", None)  # (a member elsewhere: rooms not known here)
                room = next(iter(joined()), None) if joined is not None else None
                channel = irc.room_to_channel(room.name) if room is not None else "*"
                line(server, channel, room, m)
        self.reply(server, "315", mask, "End of WHO list")
        return None

    def _who_flags(self, room, m):
        flags = ("G" if getattr(m, "away", None) else "H")
        if getattr(m, "oper", False):
            flags += "*"
        if room is not None:
            flags += member_status(room, m, "multi-prefix" in self.caps)
        return flags

    def _who_line(self, server, channel, room, m):
        user, host = m.prefix.split("!", 1)[1].split("@", 1)
        self.reply(server, "352", channel, user, host, server.server_name, m.ircnick,
                   self._who_flags(room, m), "0 " + (getattr(m, "realname", "") or m.ircnick))

    def _whox_line(self, server, channel, room, m, wanted, token):
        """``354``: the fields of ``wanted`` (letters of :data:`WHOX_FIELDS`, in that order)."""
        user, host = m.prefix.split("!", 1)[1].split("@", 1)
        params = []
        for field in wanted:
            if field == "t":
                params.append(token)
            elif field == "c":
                params.append(channel)
            elif field == "u":
                params.append(user)
            elif field in "ih":
                params.append(host)  # the host shown is the address
            elif field == "s":
                params.append(server.server_name)
            elif field == "n":
                params.append(m.ircnick)
            elif field == "f":
                params.append(self._who_flags(room, m))
            elif field == "d":
                params.append("0")
            elif field == "l":
                seen = getattr(m, "last_seen", None)
                params.append(str(max(0, int(server.loop.now() - seen))) if seen else "0")
            elif field == "a":
                params.append(getattr(m, "account", None) or "0")
            elif field == "o":
                params.append("n/a")
            elif field == "r":
                params.append(getattr(m, "realname", "") or m.ircnick)
        self.reply(server, "354", *params)

    def cmd_whois(self, server, msg):
        if not msg.params:
            self.reply(server, "431", "No nickname given")
            return None
        who = msg.params[-1]
        m = server.registry.find_anywhere(who)  # in a cluster, on any server
        if self.closing:
            return None
        if m is None:
            self.reply(server, "401", who, "No such nick/channel")
            self.reply(server, "318", who, "End of /WHOIS list")
            return None
        nick = m.ircnick
        user, host = m.prefix.split("!", 1)[1].split("@", 1)
        self.reply(server, "311", nick, user, host, "*", getattr(m, "realname", "") or nick)
        joined = getattr(m, "joined", None)  # a member elsewhere: its rooms are its server's
        rooms = [member_status(r, m, "multi-prefix" in self.caps) + irc.room_to_channel(r.name)
                 for r in (joined() if joined is not None else ())
                 if "s" not in r.modes or r in self.channels]
        if rooms:
            self.reply(server, "319", nick, " ".join(rooms))
        self.reply(server, "312", nick, server.server_name, "chatroom")
        if getattr(m, "away", None):
            self.reply(server, "301", nick, m.away)
        if getattr(m, "oper", False):
            self.reply(server, "313", nick, "is an IRC operator")
        account = getattr(m, "account", None)
        if account is not None:
            self.reply(server, "330", nick, account, "is logged in as")
        signon = getattr(m, "signon", None)
        if signon is not None:
            idle = max(0, int(server.loop.now() - m.last_seen))
            self.reply(server, "317", nick, str(idle), str(signon), "seconds idle, signon time")
        self.reply(server, "318", nick, "End of /WHOIS list")
        return None

    def cmd_ison(self, server, msg):
        registry = server.registry
        found = []
        for nick in " ".join(msg.params).split()[:ISON_MAX]:
            m = registry.find_anywhere(nick)  # in a cluster, on any server
            if m is not None:
                found.append(m.ircnick)
        if not self.closing:
            self.reply(server, "303", " ".join(found))
        return None

    def cmd_userhost(self, server, msg):
        if not msg.params:
            self.reply(server, "461", "USERHOST", "Not enough parameters")
            return None
        out = []
        for nick in " ".join(msg.params).split()[:5]:
            m = server.registry.find_anywhere(nick)
            if m is not None:
                away = "-" if getattr(m, "away", None) else "+"
                out.append(f"{m.ircnick}={away}{m.prefix.split('!', 1)[1]}")
        self.reply(server, "302", " ".join(out))
        return None


def _glob(mask):
    """A case-insensitive matcher for an IRC mask (``*`` any run, ``?`` one character)."""
    rx = re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                            for c in irc.casefold(mask)) + r"\Z")
    return lambda name: rx.match(irc.casefold(name)) is not None


class Elsewhere:
    """A member of a room on another server of the cluster, as WHO shows it: its nickname and
    address, and no more (its away state, modes and idle time stay on its server)."""

    __slots__ = ("ircnick", "prefix")

    def __init__(self, name, prefix):
        self.ircnick = irc_nick(name)
        self.prefix = prefix if prefix and "!" in prefix and "@" in prefix else f"{self.ircnick}!*@*"
