"""The core: who is where (rooms, members, nicknames) and fan-out into outboxes. Never does I/O."""
