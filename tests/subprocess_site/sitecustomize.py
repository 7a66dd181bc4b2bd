"""Run at the start of every Python process a test starts: `conftest.py` puts this folder on `PYTHONPATH`.

`datasets` sleeps 5 s each time a pass over a multi-shard Parquet stream ends, its guard against Arrow's reader
threads crashing an interpreter that exits right after a scan (arrow#39862). A recipe goes on working after every
pass, and a test's recipe makes several passes of a few hundred patients each, so those sleeps were a fifth of the
suite's time. The report that found the crash found 0.1 s enough."""

import datasets.config

datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0.1
