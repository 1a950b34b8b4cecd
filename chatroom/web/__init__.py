"""The web client's files (``static/``), served by the web listener (docs/web.md)."""
