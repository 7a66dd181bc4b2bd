"""Reading challenge releases as downloaded: one archive (`.tar.gz` or `.zip`) or its extracted folder, streamed
one member file at a time so a cohort is never held twice."""

import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path


def find_release(root: Path, archive_name: str, folder_name: str) -> Path | None:
    """The archive if present, else the extracted folder, else None."""
    for candidate in (root / archive_name, root / folder_name):
        if candidate.exists():
            return candidate
    return None


def iter_release_files(source: Path, suffix: str) -> Iterator[tuple[str, str]]:
    """(name for messages, text) of each member ending in `suffix`; a damaged archive is an error naming it."""
    if source.is_dir():
        for file in sorted(source.glob(f"*{suffix}")):
            yield f"{source.name}/{file.name}", file.read_text(encoding="utf-8")
        return
    try:
        if source.name.endswith(".zip"):
            with zipfile.ZipFile(source) as archive:
                for info in archive.infolist():
                    if info.filename.endswith(suffix):
                        yield f"{source.name}:{info.filename}", archive.read(info).decode("utf-8")
        else:
            with tarfile.open(source, "r:*") as archive:
                for member in archive:
                    if member.isfile() and member.name.endswith(suffix):
                        yield f"{source.name}:{member.name}", archive.extractfile(member).read().decode("utf-8")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as error:
        raise ValueError(f"{source}: truncated or corrupt archive ({error}); download it again") from error
