"""What the server keeps on disk under ``--data-dir``."""
