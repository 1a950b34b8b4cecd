"""IRC messages and presence: PRIVMSG, NOTICE, TAGMSG and AWAY."""

import time

from ...codec import irc
from ...codec.native import ProtocolError
from .. import offline
from .isupport import AWAYLEN, MAX_TARGETS


class MessageCommands:
    """Mixed into :class:`~chatroom.transport.irc.client.IrcClient`."""

    __slots__ = ()

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
                except ProtocolError as err:
                    if not notice:  # a NOTICE is never kept: nothing may answer it
                        self._offline(server, err, target, text)
                    continue
                away = getattr(other, "away", None)
                if away and not notice:
                    self.reply(server, "301", other.ircnick, away)
        return None

    def _offline(self, server, err, target, text):
        """A PRIVMSG to nobody online: kept if ``target`` is an account (a NOTICE from the server
        says so), else 401 as before. A CTCP request (not ``/me``) is never kept: nobody could
        answer it later."""
        ctcp = text.startswith("\x01") and not text.startswith("\x01ACTION")
        try:
            kept = err.code == "no-such-nick" and not ctcp and offline.keep(server, self, target, text)
        except ProtocolError as failure:  # mailbox-full, accounts-unavailable
            self.reply(server, "400", "PRIVMSG", failure.text)
            return
        if not kept:
            self.reply(server, "401", target, "No such nick/channel")
        elif not self.closing:
            server.registry.reply(self, irc.format_message(
                "NOTICE", self.ircnick, f"{target} is offline; they get your message when they log in",
                source=server.server_name))

    def kept_lines(self, server, messages):
        """Messages kept while this account was offline, as the PRIVMSGs they were, from their
        senders: times in a ``time`` tag with server-time, else in brackets before the text."""
        out = []
        for m in messages:
            tags = {}
            text = m.text
            if "server-time" in self.caps:
                tags["time"] = irc.format_time(m.ts)
            else:
                when = time.strftime("[%Y-%m-%d %H:%M UTC]", time.gmtime(m.ts))
                if text.startswith("\x01ACTION "):
                    text = f"\x01ACTION {when} {text[8:]}"
                else:
                    text = f"{when} {text}"
            if "message-tags" in self.caps:
                tags["msgid"] = m.msgid
            out.append(irc.fit_line(irc.format_message("NOTICE" if m.notice else "PRIVMSG",
                                                       self.ircnick, text, source=m.source,
                                                       tags=tags or None)))
        return b"".join(out)

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


def _client_tags(tags):
    """The client-only tags (``+name``) of a message, which are relayed; None when there are none."""
    if not tags:
        return None
    kept = {k: v for k, v in tags.items() if k.startswith("+")}
    return kept or None
