"""Download the official PhysioNet challenge files, resuming partial downloads and checking SHA-256 sums.

Each PhysioNet release publishes `SHA256SUMS.txt` beside its files; every file is checked against it, and a
mismatch deletes the download and raises. Interrupted downloads continue from a `.part` file (HTTP Range).
Standard library only (urllib), with tqdm progress bars.
"""

import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from ..integrity import sha256_of
from ..progress import progress_bar

PHYSIONET2012_URL = "https://physionet.org/files/challenge-2012/1.0.0/"
PHYSIONET2012_FILES = (
    "set-a.tar.gz", "set-b.tar.gz", "set-c.tar.gz", "Outcomes-a.txt", "Outcomes-b.txt", "Outcomes-c.txt",
)
PHYSIONET2019_URL = "https://physionet.org/files/challenge-2019/1.0.0/"
PHYSIONET2019_FILES = ("training/training_setA.zip", "training/training_setB.zip")
CHECKSUMS_FILE = "SHA256SUMS.txt"
CHUNK_BYTES = 1 << 20


def download_physionet2012(dest: str | Path, base_url: str = PHYSIONET2012_URL) -> list[Path]:
    """The P12 sets and outcome files into `dest`, ready for `load_physionet2012(dest)`."""
    return download_files(base_url, PHYSIONET2012_FILES, dest)


def download_physionet2019(dest: str | Path, base_url: str = PHYSIONET2019_URL) -> list[Path]:
    """The P19 training sets into `dest`, ready for `load_physionet2019(dest)`."""
    return download_files(base_url, PHYSIONET2019_FILES, dest)


def download_files(base_url: str, names: Sequence[str], dest: str | Path) -> list[Path]:
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    checksums = _read_checksums(_fetch_text(base_url + CHECKSUMS_FILE))
    paths = []
    for name in names:
        if name not in checksums:
            raise ValueError(f"{base_url}{CHECKSUMS_FILE} lists no checksum for {name}; refusing an unverifiable file")
        target = dest / Path(name).name
        if not (target.exists() and sha256_of(target) == checksums[name]):
            _download(base_url + name, target, checksums[name])
        paths.append(target)
    return paths


def _download(url: str, target: Path, expected_sha256: str) -> None:
    partial = target.with_name(target.name + ".part")
    offset = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as error:
        if error.code != 416:  # 416: the partial file is already complete
            raise OSError(f"{url}: HTTP {error.code} {error.reason}") from error
        response = None
    if response is not None:
        with response:
            resumed = response.status == 206
            total = int(response.headers.get("Content-Length", 0)) + (offset if resumed else 0)
            with open(partial, "ab" if resumed else "wb") as file, progress_bar(
                total=total or None, initial=offset if resumed else 0, unit="B", unit_scale=True, desc=target.name
            ) as progress:
                while chunk := response.read(CHUNK_BYTES):
                    file.write(chunk)
                    progress.update(len(chunk))
    actual = sha256_of(partial)
    if actual != expected_sha256:
        partial.unlink()
        raise ValueError(f"{url}: SHA-256 {actual} does not match the published {expected_sha256}; file deleted")
    partial.replace(target)


def _fetch_text(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read().decode("utf-8")
    except urllib.error.URLError as error:
        raise OSError(f"{url}: cannot download ({error})") from error


def _read_checksums(text: str) -> dict[str, str]:
    """`sha256  relative/path` lines, as PhysioNet publishes them."""
    checksums = {}
    for line in text.splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            checksums[name.strip().lstrip("*")] = digest.lower()
    return checksums
