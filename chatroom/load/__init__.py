"""Load generator: many gevent clients talk in one room and measure delivery, loss and latency.

``bin/chat-load`` connects ``--receivers`` reading clients and ``--senders`` talking clients (plus
optional ``--idle`` silent ones and ``--stalled`` ones that never read) to a chat server, moves
them all into one room, and after a start barrier has every sender say ``--messages`` lines::

    SEND L <sender> <seq> <monotonic_ns> <padding>

Every client in the room (senders too, for the others' lines) receives them. *Checked* receivers
frame each line with :class:`LineFramer` and verify per-sender order, loss and duplicates,
and record latency (``monotonic_ns`` is one clock for every process on the machine). Checking a
line costs the generator more CPU than relaying it costs the server, so in a big room only a
sample (``--check``, evenly spread) checks; the rest count ``MSG`` lines with ``bytes.count`` in C
and so measure throughput and totals. A sender ends with ``SEND E <sender> <count>`` so receivers
know when they have it all.

Senders never run away from the readers: a sender keeps at most ``--window`` lines in flight
beyond the slowest checked receiver in its own process (or, with none, beyond its own
``PING``/``PONG`` round trips), so the server's outboxes stay far below its slow-consumer limit.

The package, one responsibility a module:

- ``config``: what a run does (:class:`Config`), the defaults and the limits the modules share
- ``clients``: the socket clients: connect and join, checked and counting receivers, the talker
- ``irc``: the same clients speaking IRC (``--protocol irc``)
- ``ws``: the client side of a WebSocket (``--transport ws``): the upgrade, and a stand-in for
  the socket that frames the native lines going out and unframes those coming in
- ``worker``: one process's share of the clients, run and drained, and its figures
- ``report``: the workers' figures merged, percentiles, server RSS/CPU watching, the summary
- ``servers``: a server command as a subprocess, this project's server command, a private ngIRCd
- ``cli``: the command line, and running in this process or over worker processes
"""
