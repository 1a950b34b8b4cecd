"""The registry's events as IRC lines, one :class:`Encoder` per set of negotiated capabilities.

What an IRC client receives for the same event depends on a few capabilities it asked for
(``server-time`` and ``message-tags`` add tags, ``echo-message`` returns its own messages,
``away-notify`` adds ``AWAY`` lines). Clients that asked for the same ones share one encoder, so
a room holds a handful of groups at most and each event is encoded once per group. Every method
returns the whole line as bytes, or None where that client is not to hear of the event.
"""

from .irc import MAX_BODY, escape_tag_value, fit_line, format_message, format_time, room_to_channel

# Methods that carry a message get ``stamp``: ``(time, msgid)``, from ``Registry.stamp()``.

#: The capabilities that change the bytes of an event; the others (multi-prefix,
#: userhost-in-names, cap-notify) change replies only.
EVENT_CAPS = frozenset({"server-time", "message-tags", "echo-message", "away-notify"})


class Encoder:
    per_room = False  # a change of a member reaches each IRC client once, not once per room
    wrap = None  # lines go on the wire as they are (see native.Encoder.wrap)

    def __init__(self, caps):
        self.caps = caps
        self.echo = "echo-message" in caps
        self.server_time = "server-time" in caps
        self.message_tags = "message-tags" in caps
        self.away_notify = "away-notify" in caps
        self.stamped = self.server_time or self.message_tags

    def __repr__(self):
        return f"<irc.Encoder {' '.join(sorted(self.caps)) or '-'}>"

    def _tags(self, stamp, tags):
        if not (self.server_time or self.message_tags):
            return None
        out = {}
        if self.server_time:
            out["time"] = format_time(stamp[0])
        if self.message_tags:
            out["msgid"] = stamp[1]
            if tags:
                out.update(tags)
        return out

    def msg(self, room, sender, text, stamp, notice, tags):
        return fit_line(format_message("NOTICE" if notice else "PRIVMSG", room_to_channel(room.name),
                                       text, source=sender.prefix, tags=self._tags(stamp, tags)))

    def msg_batch(self, room, sender, texts, stamps):
        """Several PRIVMSGs of one sender (texts checked, no client tags) as one buffer, built
        in one go: the same bytes as :meth:`msg` gives each."""
        head = f":{sender.prefix} PRIVMSG {room_to_channel(room.name)} "
        if 4 * max(map(len, texts)) + len(head.encode("utf-8")) >= MAX_BODY:  # may need cutting
            return b"".join(self.msg(room, sender, text, stamp, False, None)
                            for text, stamp in zip(texts, stamps or [None] * len(texts)))
        # The last parameter takes a ':' only where it needs one, as format_message does.
        texts = [":" + t if " " in t or t[0] == ":" else t for t in texts]
        if not self.stamped:
            return (head + ("\r\n" + head).join(texts) + "\r\n").encode("utf-8")
        lines = []
        for text, (ts, msgid) in zip(texts, stamps):
            if self.server_time and self.message_tags:
                lines.append(f"@time={format_time(ts)};msgid={escape_tag_value(msgid)} {head}{text}")
            elif self.server_time:
                lines.append(f"@time={format_time(ts)} {head}{text}")
            else:
                lines.append(f"@msgid={escape_tag_value(msgid)} {head}{text}")
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")

    def tell(self, sender, target, text, stamp, notice, tags):
        return fit_line(format_message("NOTICE" if notice else "PRIVMSG", target.ircnick, text,
                                       source=sender.prefix, tags=self._tags(stamp, tags)))

    def tagmsg(self, room, sender, target, stamp, tags):
        if not self.message_tags:
            return None
        where = room_to_channel(room.name) if room is not None else target.ircnick
        return format_message("TAGMSG", where, source=sender.prefix, tags=self._tags(stamp, tags))

    def join(self, room, who):
        return format_message("JOIN", room_to_channel(room.name), source=who.prefix)

    def part(self, room, who, reason):
        channel = room_to_channel(room.name)
        if reason:
            return format_message("PART", channel, reason, source=who.prefix)
        return format_message("PART", channel, source=who.prefix)

    def quit(self, room, who, reason):
        if reason.startswith("quit: "):
            reason = "Quit: " + reason[6:]
        elif reason == "quit":
            reason = "Quit"
        return format_message("QUIT", reason, source=who.prefix)

    def nick(self, room, who, old_name, old_prefix):
        return format_message("NICK", who.ircnick, source=old_prefix)

    def kick(self, room, by, target, reason):
        return format_message("KICK", room_to_channel(room.name), target.ircnick,
                              reason or by.ircnick, source=by.prefix)

    def topic(self, room, by, text):
        return format_message("TOPIC", room_to_channel(room.name), text, source=by.prefix)

    def away(self, room, who, text):
        if not self.away_notify:
            return None
        if text:
            return format_message("AWAY", text, source=who.prefix)
        return format_message("AWAY", source=who.prefix)

    def mode(self, room, by, change, arg):
        channel = room_to_channel(room.name)
        if arg is None:
            return format_message("MODE", channel, change, source=by.prefix)
        return format_message("MODE", channel, change, arg, source=by.prefix)


_ENCODERS = {}


def encoder_for(caps):
    """The shared encoder for a client that negotiated ``caps`` (only EVENT_CAPS matter)."""
    key = frozenset(caps) & EVENT_CAPS
    encoder = _ENCODERS.get(key)
    if encoder is None:
        encoder = _ENCODERS[key] = Encoder(key)
    return encoder
