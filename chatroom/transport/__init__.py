"""Transports: the listening sockets, each client's socket, limits and timeouts.

``server`` moves bytes between sockets and the registry for every listener; ``connection`` is a
client's per-socket state; ``native`` and ``irc`` run each protocol's lines; ``sockets`` holds the
socket set-up they share.
"""
