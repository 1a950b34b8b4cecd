"""chatroom: a gevent chat server, its terminal client and its load generator."""

#: The one place the version is written: pyproject.toml reads it (setuptools' ``attr:``), the native
#: protocol's ``HELLO`` announces ``chatroom/<version>`` and IRC's 002/004 ``chatroom-<version>``.
__version__ = "1.0"
