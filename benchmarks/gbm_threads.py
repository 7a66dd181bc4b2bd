"""Seconds to grow one summary-statistics GBM setting (`summary_baseline.grown_until_validation_stalls`) with one
OpenMP thread and with every core, on tables of a pilot's, 10 % of P12's and P12's shape (random values: the cost
depends on the table's shape, not on what it holds), on idle cores and with one core kept busy by another process (a
hospital's shared server, or a training beside it). It decides how many threads `fit_gbm` gives a small cohort.

    python benchmarks/gbm_threads.py --results benchmarks/results/gbm_threads.json

Run it on an otherwise idle machine (pause any background training): busy cores are what it is about.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from medfuse_hf.training.summary_baseline import (
    GBM_SETTINGS,
    growing_gbm,
    grown_until_validation_stalls,
    min_samples_leaf,
)

SHAPES = {"pilot (90 train, 11 validation stays, 136 columns)": (90, 11, 136),
          "10 % of P12 (767 train, 192 validation stays, 328 columns)": (767, 192, 328),
          "P12 (7,671 train, 1,920 validation stays, 328 columns)": (7671, 1920, 328)}


def table(rng: np.random.Generator, stays: int, columns: int) -> tuple[pd.DataFrame, np.ndarray]:
    values = pd.DataFrame(rng.normal(size=(stays, columns)), columns=[f"f{index}:mean" for index in range(columns)])
    return values, (np.arange(stays) % 7 == 0).astype(int)  # 14 % positives, at least one in any split


def seconds_to_grow(train, validation, threads: int) -> tuple[float, int]:
    model = growing_gbm(GBM_SETTINGS[0], min_samples_leaf(len(train[1])), seed=0)
    start = time.perf_counter()
    with threadpool_limits(limits=threads, user_api="openmp"):
        grown_until_validation_stalls(model, train, validation, "auprc")
    return time.perf_counter() - start, model.n_iter_


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    rows = []
    for busy in (False, True):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            for name, (train_stays, validation_stays, columns) in SHAPES.items():
                rng = np.random.default_rng(0)
                train, validation = table(rng, train_stays, columns), table(rng, validation_stays, columns)
                for threads in (1, cores):
                    seconds, iterations = seconds_to_grow(train, validation, threads)
                    rows.append({"table": name, "threads": threads, "one_core_busy": busy,
                                 "seconds": round(seconds, 2), "iterations": iterations})
                    print(f"{name}, {'one core busy' if busy else 'idle'}: {threads} thread(s), {iterations} "
                          f"iterations in {seconds:.2f} s")
        finally:
            if spinner:
                spinner.kill()
    if args.results:
        args.results.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
