"""IRC connections on the shared registry (docs/irc.md).

``client`` holds :class:`IrcClient`: registration, capabilities and the dispatch of lines;
``channels``, ``messages`` and ``queries`` hold the commands, mixed into it; ``isupport`` the
limits and tokens the listener announces.
"""

from .client import IrcClient  # noqa: F401
