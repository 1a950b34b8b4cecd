"""chatroom: a gevent chat server, its terminal client and its load generator."""

from .codec.native import VERSION as __version__  # noqa: F401
