"""Loaded cohorts kept as Arrow files, so that repeated runs skip parsing the release archives.

Parsing PhysioNet 2019's 40,336 text files takes ~30 s and PhysioNet 2012's ~20 s; an experiment that fine-tunes
dozens of times (the transfer fractions, the benchmark table) would spend most of its small runs there. The cached
copy is memory-mapped by `datasets`, so loading it takes about a second and little memory.
"""

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import datasets

logger = logging.getLogger(__name__)
LOADER_SOURCES = Path(__file__).parent
SOURCE_FILE = "medfuse_cache_source.json"  # which release folder and options a cached copy was built from


def cache_root() -> Path:
    """`$HF_DATASETS_CACHE/medfuse_hf` (the `datasets` cache, read when called so that it can be redirected)."""
    return Path(os.environ.get("HF_DATASETS_CACHE", datasets.config.HF_DATASETS_CACHE)) / "medfuse_hf"


def cache_key(release_dir: Path, options: str) -> str:
    """Changes whenever a release file (name, size, modification time), the loader code or `options` change. Files
    in symlinked folders count, as the loaders read through them (`rglob` would not enter them before Python 3.13)."""
    digest = hashlib.sha256(options.encode())
    files, seen = [], set()
    for folder, subfolders, names in os.walk(release_dir, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree: walked once
            subfolders.clear()
            continue
        seen.add(real)
        files += [Path(folder, name) for name in names]
    for path in sorted(files):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(release_dir)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    for source in sorted(LOADER_SOURCES.glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:20]


def cached_load(
    name: str, release_dir: str | Path, options: str, build: Callable[[], datasets.Dataset]
) -> datasets.Dataset:
    """`build()`'s dataset, from the cache when this release and loader were loaded before, else built and saved.
    The copy is written to a temporary folder and renamed, so an interrupted save never leaves a half cache."""
    folder = cache_root() / f"{name}-{cache_key(Path(release_dir), options)}"
    if folder.exists():
        logger.info("%s: loaded from the cache %s", name, folder)
        return datasets.load_from_disk(str(folder))
    dataset = build()
    partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    dataset.save_to_disk(str(partial))
    source = {"release_dir": str(Path(release_dir).resolve()), "options": options}
    (partial / SOURCE_FILE).write_text(json.dumps(source))
    try:
        partial.rename(folder)
    except OSError:  # another process saved the same cache first: theirs is as good as ours
        shutil.rmtree(partial, ignore_errors=True)
    _remove_superseded(folder, source)
    return datasets.load_from_disk(str(folder))


def _remove_superseded(folder: Path, source: dict) -> None:
    """Delete older copies of the same release and options (made before the release files or the loader changed):
    each is hundreds of MB. A process still reading one keeps its memory map; Linux frees the files after it."""
    for sibling in folder.parent.glob(f"{folder.name.rsplit('-', 1)[0]}-*"):
        marker = sibling / SOURCE_FILE
        if sibling != folder and marker.exists() and json.loads(marker.read_text()) == source:
            logger.info("removing the superseded cache %s", sibling)
            shutil.rmtree(sibling, ignore_errors=True)
