"""Accounts: registered nicknames with passwords, kept in a store off the event loop (docs/protocol.md)."""
