"""Run at the start of every Python process a test starts: `conftest.py` puts this folder on `PYTHONPATH`.

`datasets` sleeps 5 s each time a pass over a multi-shard Parquet stream ends, its guard against Arrow's reader
threads crashing an interpreter that exits right after a scan (arrow#39862). A recipe goes on working after every
pass, and a test's recipe makes several passes of a few hundred patients each, so those sleeps were a fifth of the
suite's time. The report that found the crash found 0.1 s enough. Any other `sitecustomize` (a distribution's, a
coverage hook) runs after this one, as it would have without it."""

import importlib
import os
import sys

try:
    import datasets.config
except ImportError:  # a process that could not have streamed anyway
    pass
else:
    if hasattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN"):
        datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0.1

if __name__ == "sitecustomize":  # not when conftest.py runs this file for its own process
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != here]
    this = sys.modules.pop(__name__)
    try:
        importlib.import_module(__name__)
    except ImportError:  # none: the import that is running this one must still find a module under its name
        sys.modules[__name__] = this
