"""``python -m chatroom.load``: what ``bin/chat-load`` runs, and how worker processes are started."""

import sys

from .cli import main

sys.exit(main())
