"""A hospital-scale long-format export, end to end: rows per second and peak memory of the loader
(`load_long_format`), the shard writer (`make_pretraining_corpus.py --dataset long-format`) and `predict.py`, the
in-memory code they replaced (`--old_revision`, run from that commit) against today's, on synthetic exports of 1, 10
and 100 million rows.

    python benchmarks/ingest.py --rows 1000000 10000000 100000000 --work_dir /tmp/ingest

Each export is written once (seeded) and kept in `--work_dir`. Each measurement is a fresh process. Its peak memory
is given twice: `peak_rss_gib` counts the pages of memory-mapped Arrow files it has read, which the
kernel may drop at any time; `peak_anonymous_gib` (the most `RssAnon` of /proc, sampled every 0.2 s) is the memory
the process itself holds. The old code is measured up to `--old_max_rows` (it holds the whole table in pandas:
3 GiB at 10 million rows); it had no shard writer for a long-format export. The loader's rows/s are of the load
itself; the shard writer's and predict.py's of their whole process, imports included. Results:
`benchmarks/results/ingest.json`, one row per (stage, code, rows).
"""

import argparse
import json
import os
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
STAGES = ("loader", "shards", "predict")


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
            file.writelines(f"p{p},{h},{f},{v}\n" for p, h, f, v in zip(patients, hours, features, values))
    partial.rename(path)


def write_model(export: Path, model_dir: Path) -> None:
    """A small untrained classifier with a tokenizer fitted on the export's first patients: what `predict.py` needs;
    its speed, not its risks, is measured."""
    from medfuse_hf import MedFuseConfig, MedFuseForSequenceClassification
    from medfuse_hf.data import load_long_format
    from medfuse_hf.training.cohorts import fit_tokenizer

    # units={}: the export gives none, so the model claims none, as a model trained on it by finetune.py would
    tokenizer = fit_tokenizer(load_long_format(export).select(range(1000)), max_events=256, units={})
    config = MedFuseConfig(**tokenizer.feature_vocabulary.config_kwargs(), hidden_size=32, value_embedding_size=32,
                           intermediate_size=64, num_labels=2)
    MedFuseForSequenceClassification(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)


def stage_command(stage: str, export: Path, model_dir: Path, output: Path) -> list[str]:
    if stage == "loader":
        return [sys.executable, __file__, "--child", str(export)]
    if stage == "shards":
        return [sys.executable, "recipes/make_pretraining_corpus.py", "--dataset", "long-format", "--events",
                str(export), "--data_description", "synthetic export", "--output_dir", str(output)]
    return [sys.executable, "recipes/predict.py", "--model_dir", str(model_dir), "--events", str(export),
            "--output", str(output / "predictions.csv"), "--batch_size", "256"]


def measured_run(command: list[str], code_root: Path, env: dict) -> dict:
    """Wall time and peak memory of one command, from its process's /proc status, sampled every 0.2 s."""
    start, anonymous, total = time.perf_counter(), 0, 0
    process = subprocess.Popen(command, cwd=code_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except FileNotFoundError:
            break
        fields = {line.split(":")[0]: line.split()[1] for line in status.splitlines() if line.startswith("Rss")}
        anonymous = max(anonymous, int(fields.get("RssAnon", 0)))
        total = max(total, int(fields.get("RssAnon", 0)) + int(fields.get("RssFile", 0)))
        time.sleep(0.2)
    stdout, stderr = process.communicate()
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed: {stderr[-3000:]}")
    return {"seconds": round(time.perf_counter() - start, 1), "peak_anonymous_gib": round(anonymous / 2**20, 3),
            "peak_rss_gib": round(total / 2**20, 3), "stdout": stdout}


def measure_loader(export: Path) -> dict:
    """In the child process: load the export once; how long the load itself took, and what it read."""
    from medfuse_hf.data import load_long_format

    start = time.perf_counter()
    dataset, summary = load_long_format(export, return_summary=True)
    return {"load_seconds": round(time.perf_counter() - start, 2), "rows_read": summary.events_read,
            "patients": len(dataset), "events_kept": summary.events_kept}


def old_code(revision: str, folder: Path) -> Path:
    """The package and recipes as they were at `revision`, unpacked beside the exports."""
    target = folder / f"code-{revision}"
    if not (target / "recipes").exists():
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "medfuse_hf", "recipes"], check=True,
                                 capture_output=True).stdout
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000, 100_000_000])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--work_dir", type=Path, default=Path(tempfile.gettempdir()) / "medfuse-ingest")
    parser.add_argument("--old_revision", default="2dd4aac", help="the last commit with the in-memory loader")
    parser.add_argument("--old_max_rows", type=int, default=10_000_000)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "ingest.json")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_loader(args.child)))
        return
    from medfuse_hf.training.runs import ResultRows

    args.work_dir.mkdir(parents=True, exist_ok=True)
    code = {"streamed": ROOT, "in_memory": old_code(args.old_revision, args.work_dir)}
    results = ResultRows(args.results, key=("stage", "code", "rows"))
    model_dir = args.work_dir / "model"

    def run(cell: dict) -> dict:
        export = args.work_dir / f"export-{cell['rows']}.csv"
        if not export.exists():
            write_export(export, cell["rows"])
        if cell["stage"] == "predict" and not model_dir.exists():
            write_model(args.work_dir / f"export-{min(args.rows)}.csv", model_dir)
        output = Path(tempfile.mkdtemp(dir=args.work_dir, prefix=f"{cell['stage']}-"))
        code_root = code[cell["code"]]
        env = dict(os.environ, PYTHONPATH=str(code_root), HF_DATASETS_CACHE=str(output / "cache"))
        measured = measured_run(stage_command(cell["stage"], export, model_dir, output), code_root, env)
        subprocess.run(["rm", "-rf", str(output)], check=True)
        loaded = json.loads(measured.pop("stdout").strip().splitlines()[-1]) if cell["stage"] == "loader" else {}
        seconds = loaded.get("load_seconds", measured["seconds"])  # the loader's own time; else the process's
        return {**cell, "csv_mib": round(export.stat().st_size / 2**20), **measured, **loaded,
                "rows_per_second": round(cell["rows"] / seconds),
                "revision": args.old_revision if cell["code"] == "in_memory" else "this commit"}

    cells = [{"stage": stage, "code": name, "rows": rows} for rows in args.rows for stage in args.stages
             for name in code  # the old code had no shard writer for a long-format export
             if name == "streamed" or (rows <= args.old_max_rows and stage != "shards")]
    results.fill(cells, run, say=lambda row: (
        f"{row['stage']:>7} {row['code']:>9} {row['rows']:>11,} rows ({row['csv_mib']:,} MiB CSV): "
        f"{row['seconds']:7.1f} s, {row['rows_per_second']:>9,} rows/s, peak {row['peak_anonymous_gib']:.2f} GiB "
        f"held ({row['peak_rss_gib']:.2f} GiB with mapped files)"))


if __name__ == "__main__":
    main()
