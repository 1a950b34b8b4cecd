"""IRC room history: replay on JOIN, and IRCv3 ``draft/chathistory`` in a ``batch``.

A client that did not ask for ``draft/chathistory`` gets a channel's last ``--scrollback``
messages right after its JOIN's names, as the PRIVMSG/NOTICE lines it would have seen live (with
``time`` and ``msgid`` tags where it asked for them). One that did asks with ``CHATHISTORY``
(LATEST, BEFORE, AFTER, AROUND, BETWEEN, TARGETS); references are ``msgid=...`` or
``timestamp=...``. Only channels the client is in can be read; a nickname's target reads the
private messages between the client, logged in to an account, and that person.
"""

import calendar
import itertools
import re
import time

from ...codec import irc
from ...codec.irc_events import encoder_for
from ...store.history import other_party, party
from ..history import message_lines, private_key

CHATHISTORY_CAP = "draft/chathistory"
#: Capabilities offered only while the server keeps history.
HISTORY_CAPS = ("batch", CHATHISTORY_CAP)
#: Most messages one CHATHISTORY answer holds (the ISUPPORT token CHATHISTORY=).
CHATHISTORY_MAX = 100
_TIME_RE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?Z\Z")
_batches = itertools.count(1)


def history_tokens(server):
    return [f"CHATHISTORY={CHATHISTORY_MAX}", "MSGREFTYPES=msgid,timestamp"] if server.history else []


def parse_ref(text):
    """``msgid=ID`` as the id, ``timestamp=T`` as seconds (float), ``*`` as None; else ValueError."""
    if text == "*":
        return None
    kind, sep, value = text.partition("=")
    if sep and kind == "msgid" and value:
        return value
    if sep and kind == "timestamp":
        m = _TIME_RE.match(value)
        if m:
            whole = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
            return whole + float("0." + (m.group(2) or "0"))
    raise ValueError(text)


class HistoryCommands:
    """Mixed into :class:`~chatroom.transport.irc.client.IrcClient`."""

    __slots__ = ()

    def history_lines(self, server, room_name, messages, replay):
        if replay and CHATHISTORY_CAP in self.caps:
            return b""  # it asks for what it wants
        return message_lines(encoder_for(self.caps), room_name, messages)  # framed as a whole if on WebSocket

    def _fail(self, server, code, *params):
        server.registry.reply(self, irc.format_message("FAIL", "CHATHISTORY", code, *params,
                                                      source=server.server_name))

    def cmd_chathistory(self, server, msg):
        history = server.history
        params = msg.params
        sub = params[0].upper() if params else ""
        if history is None:
            self._fail(server, "MESSAGE_ERROR", sub or "*", "No history is kept on this server")
            return None
        if sub == "TARGETS":
            return self._targets(server, params[1:])
        need = 5 if sub == "BETWEEN" else 4
        if sub not in ("LATEST", "BEFORE", "AFTER", "AROUND", "BETWEEN"):
            self._fail(server, "INVALID_PARAMS", sub or "*", "Unknown subcommand")
            return None
        if len(params) < need or not params[-1].isdigit():
            self._fail(server, "INVALID_PARAMS", sub, "Not enough parameters or bad limit")
            return None
        target = params[1]
        if target.startswith("#"):
            room = self._room(server, target)
            key = room.name if room is not None and room in self.channels else None
        else:
            key = self._conversation(server, target)
        if key is None:
            self._fail(server, "INVALID_TARGET", sub, target, "You cannot read that history")
            return None
        limit = min(int(params[-1]), CHATHISTORY_MAX)
        try:
            refs = [parse_ref(p) for p in params[2:need - 1]]
        except ValueError:
            self._fail(server, "INVALID_PARAMS", sub, "Bad message reference")
            return None
        if None in refs and sub != "LATEST":
            self._fail(server, "INVALID_PARAMS", sub, "Bad message reference")
            return None
        try:
            messages = self._select(history, key, sub, refs, limit)
        except Exception:
            self._fail(server, "MESSAGE_ERROR", sub, "History cannot be read now")
            return None
        if not self.closing:
            server.registry.reply(self, self._batch(server, "chathistory", target,
                                                   self._lines(key, target, messages)))
        return None

    def _conversation(self, server, nick):
        """The history key of this client's private messages with ``nick``, or None when it is
        not logged in (private history belongs to accounts)."""
        return private_key(server, self, nick) if self.account else None

    def _select(self, history, room, sub, refs, limit):
        if not limit:
            return []
        end = 1 << 62
        if sub == "LATEST" and refs[0] is None:
            return history.latest(room, limit)
        history.settle()
        bounds = []
        for ref in refs:
            b = history.bounds(room, ref)
            if b is None:
                return []  # a message id this channel never had (or no longer has)
            bounds.append(b)
        after, before = bounds[0]
        if sub == "LATEST":
            return history.span(room, after, end, limit, True)
        if sub == "BEFORE":
            return history.span(room, 0, before, limit, True)
        if sub == "AFTER":
            return history.span(room, after, end, limit, False)
        if sub == "AROUND":
            older = history.span(room, 0, after + 1, limit - limit // 2, True)
            return older + history.span(room, after, end, limit // 2, False)
        other_after, other_before = bounds[1]  # BETWEEN
        if after <= other_after:
            return history.span(room, after, other_before, limit, False)
        return history.span(room, other_after, before, limit, True)

    def _lines(self, room_name, target, messages):
        """Messages as PRIVMSG/NOTICE with their time and id (and the batch tag, added after)."""
        out = []
        for m in messages:
            tags = {}
            if "server-time" in self.caps:
                tags["time"] = irc.format_time(m.ts)
            if "message-tags" in self.caps:
                tags["msgid"] = m.msgid
            out.append((tags, m.source, "NOTICE" if m.notice else "PRIVMSG", m.target or target,
                        m.text))
        return out

    def _batch(self, server, kind, target, lines):
        batched = "batch" in self.caps
        ref = f"h{next(_batches)}"
        out = []
        if batched:
            out.append(irc.format_message("BATCH", "+" + ref, kind, *((target,) if target else ()),
                                          source=server.server_name))
        for tags, source, command, *params in lines:
            if batched:
                tags = {"batch": ref, **tags}
            out.append(irc.format_message(command, *params, source=source, tags=tags or None))
        if batched:
            out.append(irc.format_message("BATCH", "-" + ref, source=server.server_name))
        return b"".join(out)

    def _targets(self, server, params):
        if len(params) < 3 or not params[2].isdigit():
            self._fail(server, "INVALID_PARAMS", "TARGETS", "Not enough parameters or bad limit")
            return None
        try:
            first, second = parse_ref(params[0]), parse_ref(params[1])
        except ValueError:
            first = second = None
        if not isinstance(first, float) or not isinstance(second, float):
            self._fail(server, "INVALID_PARAMS", "TARGETS", "Timestamps expected")
            return None
        limit = min(int(params[2]), CHATHISTORY_MAX)
        since, until = min(first, second), max(first, second)
        mine = {room.name for room in self.channels}
        me = party(self) if self.account else None
        try:
            server.history.settle()  # what was said so far, on disk
            found = server.history.rooms(since, until, 1 << 20)
        except Exception:
            self._fail(server, "MESSAGE_ERROR", "TARGETS", "History cannot be read now")
            return None
        lines = []
        for name, last in found:
            if name in mine:
                shown = irc.room_to_channel(name)
            else:
                them = other_party(name, me) if me else None
                if them is None:
                    continue
                shown = them[2:]  # the account or nickname, as kept (case-folded)
            lines.append(({}, server.server_name, "CHATHISTORY", "TARGETS", shown,
                          irc.format_time(last)))
            if len(lines) == limit:
                break
        server.registry.reply(self, self._batch(server, "draft/chathistory-targets", None, lines))
        return None
