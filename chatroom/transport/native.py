"""Native protocol v1 connections (docs/protocol.md): each line is one command for the registry."""

from ..codec import native
from ..codec.lines import NO_LINE_END_LIMIT, LineFramer
from .connection import Client


class NativeClient(Client):
    __slots__ = ()

    @classmethod
    def refusal(cls, server, reason):
        return native.format_bye(reason)

    def make_framer(self, server):
        return LineFramer(server.max_line)

    def start(self, server):
        server.registry.add(self, native.format_hello(self.id))

    def run_line(self, server, line):
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
