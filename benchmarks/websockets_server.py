#!/usr/bin/env python3
"""The baseline of the WebSocket benchmark: a broadcast chat server on the ``websockets`` library.

What its documentation recommends for fan-out: every message a client sends goes to every other
client with ``websockets.asyncio.server.broadcast()`` (one frame built, written to each
connection without waiting for it to drain). No rooms, no names, no limits: a floor, not a
server. Prints ``Listening on HOST:PORT``.
"""

import argparse
import asyncio

from websockets.asyncio.server import broadcast, serve

CLIENTS = set()


async def handler(ws):
    CLIENTS.add(ws)
    try:
        async for message in ws:
            broadcast([c for c in CLIENTS if c is not ws], message)
    finally:
        CLIENTS.discard(ws)


async def main(host, port):
    async with serve(handler, host, port, max_size=65536, compression=None) as server:
        addr = server.sockets[0].getsockname()
        print(f"Listening on {addr[0]}:{addr[1]}", flush=True)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    try:
        asyncio.run(main(args.host, args.port))
    except KeyboardInterrupt:
        pass
