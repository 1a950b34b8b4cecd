"""Wire formats without I/O: bytes in, events out; events to bytes.

``lines`` frames a byte stream into lines (shared by the line protocols), ``text`` holds the rules
for text shown to other people, ``native`` is protocol v1 (docs/protocol.md) and ``irc`` the IRC
client protocol (docs/irc.md). Nothing here touches a socket or gevent.
"""
