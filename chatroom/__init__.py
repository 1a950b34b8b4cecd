"""chatroom: a gevent chat server, its terminal client and its load generator."""

from .protocol import VERSION as __version__  # noqa: F401
