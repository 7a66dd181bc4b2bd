"""Progress bars that suit where their output goes: live on a terminal; in a log (CI, `nohup`, a scheduler), where
every redraw becomes a line of its own, one line every `LOG_INTERVAL_SECONDS` and one at the end."""

import sys
from typing import Any

import datasets
import transformers
from tqdm.auto import tqdm

LOG_INTERVAL_SECONDS = 60.0


def progress_bar(iterable: Any = None, **kwargs) -> tqdm:
    """`tqdm`, redrawn at most once a minute when standard error is not a terminal."""
    if not sys.stderr.isatty():
        kwargs = {"mininterval": LOG_INTERVAL_SECONDS, "maxinterval": LOG_INTERVAL_SECONDS, **kwargs}
    return tqdm(iterable, **kwargs)


def quiet_library_progress_bars() -> None:
    """A recipe's own bars are the ones to watch: none from `datasets.map` or transformers' shard writing."""
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
