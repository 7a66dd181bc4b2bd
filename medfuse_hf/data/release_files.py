"""Reading challenge releases as downloaded: one archive (`.tar.gz` or `.zip`) or its extracted folder, streamed
one member file at a time so a cohort is never held twice."""

import codecs
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
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
            yield f"{source.name}/{file.name}", utf8_text(file.read_bytes(), f"{source.name}/{file.name}")
        return
    try:
        if source.name.endswith(".zip"):
            with zipfile.ZipFile(source) as archive:
                for info in archive.infolist():
                    if info.filename.endswith(suffix):
                        yield f"{source.name}:{info.filename}", utf8_text(archive.read(info),
                                                                          f"{source.name}:{info.filename}")
        else:
            with tarfile.open(source, "r:*") as archive:
                for member in archive:
                    if member.isfile() and member.name.endswith(suffix):
                        where = f"{source.name}:{member.name}"
                        yield where, utf8_text(archive.extractfile(member).read(), where)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as error:
        raise ValueError(f"{source}: truncated or corrupt archive ({error}); download it again") from error


def utf8_text(raw: bytes, where: str) -> str:
    """The text of a file that must be UTF-8 (a byte-order mark dropped), or an error naming it, the line and the
    byte: a Latin-1 or Windows-1252 export would otherwise fail deep in a decoder, or be misread."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise _not_utf8(where, raw.count(b"\n", 0, error.start) + 1, raw[error.start]) from None


def raise_first_non_utf8_byte(path: Path) -> None:
    """`utf8_text`'s error for a file of any size, read a block at a time."""
    decoder, line = codecs.getincrementaldecoder("utf-8")(), 1
    with Path(path).open("rb") as file:
        while block := file.read(1 << 24):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as error:  # `error.object`: the block, after any bytes held from the last one
                raise _not_utf8(str(path), line + error.object.count(b"\n", 0, error.start),
                                error.object[error.start]) from None
            line += block.count(b"\n")


def _not_utf8(where: str, line: int, byte: int) -> ValueError:
    return ValueError(
        f"{where}, line {line}: byte 0x{byte:02X} is not UTF-8: the file is in another encoding (a Latin-1 or "
        "Windows-1252 export writes '°' as 0xB0). Convert it to UTF-8, e.g. "
        "iconv -f WINDOWS-1252 -t UTF-8 old.csv > new.csv"
    )


@contextmanager
def utf8_errors_named(path: Path) -> Iterator[None]:
    """Around a reader of a UTF-8 file (`pandas.read_csv`, `csv.reader`): a decoding error becomes `utf8_text`'s."""
    try:
        yield
    except UnicodeDecodeError:
        raise_first_non_utf8_byte(path)
        raise
