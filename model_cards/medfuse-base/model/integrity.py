"""File checksums, one implementation for downloads, training checkpoints and published embeddings."""

import hashlib
from pathlib import Path


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks (archives and checkpoints can be large)."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
