"""``python -m chatroom``: the server, as ``chat-server``."""

import sys

from .server import main

sys.exit(main())
