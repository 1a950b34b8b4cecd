#!/usr/bin/env python3
"""Baseline: the chat server a tutorial writes, on gevent, speaking the load tool's protocol subset.

One greenlet per client reads lines with ``makefile().readline()``; a ``SEND`` is relayed by the
sender's own greenlet with one blocking ``sendall`` per peer, so the room moves at the pace of its
slowest reader, and when two senders' greenlets both block writing to one full socket, gevent
refuses the second (``ConcurrentObjectUseError``) and that sender's connection dies. Global dict
of rooms, no limits, no outboxes. Commands: ``JOIN room`` (confirmed to the joiner only, no
presence announcements), ``SEND text`` (``MSG room from text`` to the others), ``PING [token]``
(``PONG``) and ``QUIT``. Not for use: it exists to be measured against.
"""

import argparse
import os
import signal
import sys

import gevent
from gevent.server import StreamServer

#: Listen backlog, as the real server's, so connect storms are judged on equal terms.
BACKLOG = 1024
#: Longest line read; a tutorial server would have none, but unbounded readline is a DoS.
MAX_LINE = 4096

rooms = {}  # room name -> list of sockets


def handle(sock, address):
    me = f"{address[0]}:{address[1]}"
    room = "lobby"
    rooms.setdefault(room, []).append(sock)
    sock.sendall(f"HELLO {me} naive/1.0\nJOIN lobby {me}\n".encode())
    reader = sock.makefile("rb")
    try:
        while True:
            line = reader.readline(MAX_LINE)
            if not line:
                break
            command, _, rest = line.rstrip(b"\r\n").decode("utf-8", "replace").partition(" ")
            if command == "SEND":
                message = f"MSG {room} {me} {rest}\n".encode()
                for peer in list(rooms[room]):
                    if peer is not sock:
                        try:
                            peer.sendall(message)
                        except OSError:
                            pass
            elif command == "JOIN":
                rooms[room].remove(sock)
                room = rest
                rooms.setdefault(room, []).append(sock)
                sock.sendall(f"JOIN {room} {me}\n".encode())
            elif command == "PING":
                sock.sendall(f"PONG {rest}\n".encode() if rest else b"PONG\n")
            elif command == "QUIT":
                sock.sendall(b"BYE quit\n")
                break
    except OSError:
        pass
    finally:
        rooms[room].remove(sock)
        sock.close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7777)
    args = p.parse_args(argv)
    server = StreamServer((args.host, args.port), handle, backlog=BACKLOG)
    server.start()
    print(f"Listening on {args.host}:{server.server_port} (pid {os.getpid()})", flush=True)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    gevent.signal_handler(signal.SIGINT, server.stop)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
