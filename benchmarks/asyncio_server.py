#!/usr/bin/env python3
"""Baseline: a sensible stdlib asyncio chat server speaking the load tool's protocol subset.

One task per client reads lines with ``StreamReader.readline``; a ``SEND`` is encoded once and
handed to each peer's ``StreamWriter.write`` (no per-peer ``drain`` in the fan-out, so a slow
reader never holds up the room); a peer whose transport buffer passes ``OUTBOX_LIMIT`` is dropped
as a slow consumer, and a reader drains its own writer so it cannot flood itself. Commands:
``JOIN room`` (confirmed to the joiner only, no presence announcements), ``SEND text``,
``PING [token]`` and ``QUIT``. It exists to be measured against.
"""

import argparse
import asyncio
import os
import signal
import sys

#: Listen backlog, as the real server's.
BACKLOG = 1024
#: Longest line, as the real server's default.
MAX_LINE = 4096
#: Bytes buffered to one peer before it is dropped as a slow consumer (the real server's limit).
OUTBOX_LIMIT = 1024 * 1024


class ChatServer:
    def __init__(self):
        self.rooms = {}  # room name -> {writer: None}

    async def handle(self, reader, writer):
        host, port = writer.get_extra_info("peername")[:2]
        me = f"{host}:{port}"
        room = "lobby"
        members = self.rooms.setdefault(room, {})
        members[writer] = None
        writer.write(f"HELLO {me} asyncio/1.0\nJOIN lobby {me}\n".encode())
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                command, _, rest = line.rstrip(b"\r\n").decode("utf-8", "replace").partition(" ")
                if command == "SEND":
                    message = f"MSG {room} {me} {rest}\n".encode()
                    for peer in list(self.rooms[room]):
                        if peer is not writer:
                            transport = peer.transport
                            if transport.is_closing():
                                continue
                            if transport.get_write_buffer_size() > OUTBOX_LIMIT:
                                self.rooms[room].pop(peer, None)
                                transport.abort()
                                continue
                            peer.write(message)
                elif command == "JOIN":
                    self.rooms[room].pop(writer, None)
                    room = rest
                    self.rooms.setdefault(room, {})[writer] = None
                    writer.write(f"JOIN {room} {me}\n".encode())
                elif command == "PING":
                    writer.write(f"PONG {rest}\n".encode() if rest else b"PONG\n")
                elif command == "QUIT":
                    writer.write(b"BYE quit\n")
                    break
                if writer.transport.get_write_buffer_size() > OUTBOX_LIMIT:
                    await writer.drain()
        except (OSError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self.rooms.get(room, {}).pop(writer, None)
            writer.close()


async def serve(host, port):
    chat = ChatServer()
    server = await asyncio.start_server(chat.handle, host, port, backlog=BACKLOG, limit=MAX_LINE * 2)
    bound = server.sockets[0].getsockname()
    print(f"Listening on {host}:{bound[1]} (pid {os.getpid()})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7777)
    args = p.parse_args(argv)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
