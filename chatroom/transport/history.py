"""Room history on the wire: scrollback on entering a room, and pages further back on request.

Reads of the store block only the greenlet of the client that asked (its reader, or its accept
handler on connect); the loop and every other client go on. Scrollback has to arrive before the
room's live messages that follow the client's ``JOIN``, so while it is read the client is *held*:
an empty placeholder is queued where the history belongs and the flush leaves the client's
outbox alone until the placeholder is filled. Live messages queue behind it meanwhile.
"""

import logging

from ..codec import irc
from ..store.history import conversation, party

log = logging.getLogger("chatroom.history")


class Sender:
    """The sender of a stored message, shaped like the registry's members for the encoders."""

    __slots__ = ("name", "prefix", "plain")

    def __init__(self, name, prefix, plain):
        self.name = name
        self.prefix = prefix
        self.plain = plain


class Where:
    """A room by name, for the encoders (the room itself may be gone)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


def replay(server, client, room_name):
    """Queue the last ``--scrollback`` messages of ``room_name`` to ``client``, right where it is.

    Waits for the store in the calling greenlet. A store that fails gives no history (logged).
    """
    history = server.history
    if history is None or not history.scrollback:
        return
    registry = server.registry
    marker = None
    if client.writer is None:  # a writer would take the placeholder before it is filled
        marker = bytearray()
        registry.send(client, marker)
        client.hold += 1
    try:
        try:
            messages = history.latest(room_name, history.scrollback)
        except Exception as err:
            log.warning("history of %s not read for %s: %s", room_name, client.id, err)
            messages = []
        data = client.history_lines(server, room_name, messages, True)
        wrap = client.encoder.wrap  # a WebSocket client's lines go out as frames
        if wrap is not None and data:
            data = wrap(data)
    finally:
        if marker is not None:
            client.hold -= 1
    if client.closing:
        return
    if marker is not None and any(item is marker for item in client.outbox):
        marker += data
        client.queued += len(data)
        registry.ready.append(client)
        registry.on_ready()
    else:
        registry.send(client, data)


def private_key(server, client, nick):
    """The history key of the private messages between ``client`` (logged in) and ``nick``:
    that person's account if they are online logged in to one or ``nick`` is an account, else
    ``nick`` itself."""
    other = server.registry.find(nick)
    if other is not None:
        them = party(other)
    elif server.accounts is not None and server.accounts.is_registered(nick):
        them = "a:" + nick.casefold()
    else:
        them = "n:" + nick.casefold()
    return conversation(party(client), them)


def message_lines(encoder, room_name, messages):
    """``messages`` as the lines ``encoder`` gives live messages (IRC, with their time and id)."""
    where = Where(room_name)
    out = []
    for m in messages:
        data = encoder.msg(where, Sender(m.sender, m.source, bool(m.plain)), m.text,
                           (m.ts, m.msgid), bool(m.notice), None)
        if data is not None:
            out.append(data)
    return b"".join(out)


def native_lines(room_name, messages, format_hist):
    """``messages`` as native ``HIST`` lines (text from IRC made plain, as for ``MSG``)."""
    out = []
    for m in messages:
        text = m.text if m.plain else irc.plain_text(m.text)
        if text is not None:
            out.append(format_hist(room_name, m.msgid, irc.format_time(m.ts), m.sender, text))
    return b"".join(out)
