"""Native protocol v1 connections (docs/protocol.md): each line is one command for the registry."""

import re

from ..codec import native
from ..codec.text import BAD_TEXT_RE
from ..codec.lines import NO_LINE_END_LIMIT, LineFramer
from .connection import Client
from .history import native_lines, replay


#: What no message text may contain, ``\n`` aside: a batch of messages is checked as one text
#: joined by ``\n`` (see :meth:`NativeClient.run_batch`).
_BATCH_BAD_RE = re.compile(BAD_TEXT_RE.pattern.replace("\x00-\x1f", "\x00-\x09\x0b-\x1f"))


class NativeClient(Client):
    __slots__ = ("batch",)

    def __init__(self, member_id, sock, addr, watcher, server):
        super().__init__(member_id, sock, addr, watcher, server)
        self.batch = None  #: the texts of this read's SEND lines, said at its end as one fan-out

    @classmethod
    def refusal(cls, server, reason):
        return native.format_bye(reason)

    def make_framer(self, server):
        return LineFramer(server.max_line)

    def start(self, server):
        server.registry.add(self, native.format_hello(self.id))
        replay(server, self, self.room.name)

    def run_line(self, server, line):
        if line.startswith(b"SEND "):  # the common line: batched until the read is done
            batch = self.batch
            if batch is None:
                self.batch = [line[5:]]
            else:
                batch.append(line[5:])
            return None
        if self.batch:
            self.run_batch(server)
        registry = server.registry
        try:
            cmd = native.parse_command(line)
            name = cmd.name
            if name == "SEND":
                registry.say(self, cmd.args[0])
            elif name == "TELL":
                registry.tell(self, *cmd.args)
            elif name == "NICK":
                registry.set_nick(self, cmd.args[0])
            elif name == "JOIN":
                registry.join(self, cmd.args[0])
                replay(server, self, cmd.args[0])
            elif name == "HISTORY":
                self.page(server, *cmd.args)
            elif name == "WHO":
                registry.who(self)
            elif name == "ROOMS":
                registry.list_rooms(self)
            elif name == "PING":
                registry.reply(self, native.format_pong(*cmd.args))
            elif name == "QUIT":
                return "quit: " + cmd.args[0] if cmd.args else "quit"
            # PONG: any line proves liveness; nothing more to do.
        except native.ProtocolError as err:
            registry.reply(self, err.to_bytes())
        return None

    def run_batch(self, server):
        """Say this read's messages: checked once as one text, fanned out once as one buffer.

        A batch with a line that is not UTF-8, is empty or holds a control character is run line
        by line instead, so each such line gets its own ``ERR`` in its place and the rest go out.
        """
        batch = self.batch
        if not batch:
            return
        self.batch = None
        if self.closing or self.room is None:
            return
        registry = server.registry
        try:
            text = b"\n".join(batch).decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is None or b"" in batch or _BATCH_BAD_RE.search(text):
            for raw in batch:
                try:
                    if not raw:
                        raise native.ProtocolError("missing-argument", "usage: SEND <text>")
                    registry.say(self, native.check_text(native.decode(raw)))
                except native.ProtocolError as err:
                    registry.reply(self, err.to_bytes())
            return
        registry.say_batch(self, text.split("\n"))

    def page(self, server, count, before):
        """``HISTORY``: up to ``count`` messages of this room before ``before`` (or the latest).

        Blocks this client's reader greenlet while the store is read; nobody else waits.
        """
        history = server.history
        if history is None:
            raise native.ProtocolError("history-off", "this server keeps no history")
        room = self.room.name
        count = min(count or history.scrollback or 1, history.page_max)
        try:
            messages = history.latest(room, count, before)
        except LookupError:
            raise native.ProtocolError("no-such-message", f"no message {before} in {room}") from None
        except Exception:
            raise native.ProtocolError("history-down", "history cannot be read now") from None
        if not self.closing:
            server.registry.reply(self, self.history_lines(server, room, messages, False))

    def history_lines(self, server, room_name, messages, replay):
        return native_lines(room_name, messages, native.format_hist) + native.format_histend(room_name)

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
