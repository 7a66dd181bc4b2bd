"""A hospital-scale long-format export, loaded: rows per second and peak memory of `load_long_format`, the
in-memory loader it replaced (`--old_revision`, run from that commit's code) against today's, on synthetic exports
of 1, 10 and 100 million rows.

    python benchmarks/ingest.py --rows 1000000 10000000 100000000 --work_dir /tmp/ingest

Each export is written once (seeded) and kept in `--work_dir`; each measurement runs in a fresh process, so that its
peak resident memory (`ru_maxrss`) is its own. The old loader is measured up to `--old_max_rows` (it holds the whole
table in pandas: 3 GiB at 10 million rows). Results: `benchmarks/results/ingest.json`, one row per (loader, rows).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from protocol import ROOT

PATIENTS = 40_000
FEATURES = ["heart_rate", "respiratory_rate", "sbp", "dbp", "temperature", "spo2", "glucose", "sodium",
            "potassium", "creatinine"]
WRITE_ROWS = 2_000_000  # rows generated and written at a time


def write_export(path: Path, rows: int, seed: int = 0) -> None:
    """A long-format CSV as an ICU exports it: patient id, hours since admission, feature name, value; patients'
    rows interleaved, as a chart-events table orders them by time of charting, not by patient."""
    rng = np.random.default_rng(seed)
    partial = path.with_suffix(".partial")
    with partial.open("w") as file:
        file.write("patient_id,time,feature,value\n")
        for start in range(0, rows, WRITE_ROWS):
            count = min(WRITE_ROWS, rows - start)
            patients = rng.integers(0, PATIENTS, count)
            hours = np.round(rng.uniform(0, 48, count), 2)
            features = np.array(FEATURES)[rng.integers(0, len(FEATURES), count)]
            values = np.round(rng.normal(100, 15, count), 1)
            lines = [f"p{p},{h},{f},{v}\n" for p, h, f, v in zip(patients, hours, features, values)]
            file.writelines(lines)
    partial.rename(path)


def measure(export: Path) -> dict:
    """In the child process: load the export once; time, sizes, and this process's peak memory."""
    from medfuse_hf.data import load_long_format

    start = time.perf_counter()
    dataset, summary = load_long_format(export, return_summary=True)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "rows_per_second": round(summary.events_read / seconds),
            "patients": len(dataset), "events_kept": summary.events_kept,
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}


def run_child(export: Path, code_root: Path) -> dict:
    output = subprocess.run([sys.executable, __file__, "--child", str(export)], check=True, capture_output=True,
                            text=True, cwd=code_root, env=dict(os.environ, PYTHONPATH=str(code_root)))
    return json.loads(output.stdout.strip().splitlines()[-1])


def old_code(revision: str, folder: Path) -> Path:
    """The package as it was at `revision`, unpacked beside the exports."""
    target = folder / f"code-{revision}"
    if not target.exists():
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "medfuse_hf"], check=True,
                                 capture_output=True).stdout
        target.mkdir(parents=True)
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000, 100_000_000])
    parser.add_argument("--work_dir", type=Path, default=Path(tempfile.gettempdir()) / "medfuse-ingest")
    parser.add_argument("--old_revision", default="2dd4aac", help="the last commit with the in-memory loader")
    parser.add_argument("--old_max_rows", type=int, default=10_000_000)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "ingest.json")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)))
        return
    from medfuse_hf.training.runs import ResultRows

    args.work_dir.mkdir(parents=True, exist_ok=True)
    loaders = {"duckdb_streamed": ROOT, "pandas_in_memory": old_code(args.old_revision, args.work_dir)}
    results = ResultRows(args.results, key=("loader", "rows"))

    def run(cell: dict) -> dict:
        export = args.work_dir / f"export-{cell['rows']}.csv"
        if not export.exists():
            write_export(export, cell["rows"])
        measured = run_child(export, loaders[cell["loader"]])
        return {**cell, "csv_mib": round(export.stat().st_size / 2**20), **measured,
                "revision": args.old_revision if cell["loader"] == "pandas_in_memory" else "this commit"}

    cells = [{"loader": loader, "rows": rows} for rows in args.rows for loader in loaders
             if loader != "pandas_in_memory" or rows <= args.old_max_rows]
    results.fill(cells, run, say=lambda row: (
        f"{row['loader']:>17} {row['rows']:>11,} rows ({row['csv_mib']:,} MiB CSV): {row['seconds']:7.1f} s, "
        f"{row['rows_per_second']:>9,} rows/s, peak {row['peak_rss_gib']:.2f} GiB, {row['patients']:,} patients"))


if __name__ == "__main__":
    main()
