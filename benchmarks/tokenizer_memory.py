"""Peak memory of fitting a tokenizer's value statistics on a streamed cohort's sample of long stays (what
`pretrain.py --parquet_shards` does with its first `--statistics_patients`), for names in the clinical catalogue and
names outside it (an unmapped export).

    python benchmarks/tokenizer_memory.py                       # 5,000 stays of 2,500 events, 12.5 M events

Each case runs in a fresh process, on a synthetic Parquet sample memory-mapped through `datasets`, and reports the
peak resident memory above the loaded sample (Linux `VmHWM`, reset after loading). To measure an older commit, run
this file with that commit's package first on `PYTHONPATH`. Figures go to `benchmarks/results/tokenizer_memory.json`.
"""

import argparse
import gc
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

RESULTS = Path(__file__).parent / "results" / "tokenizer_memory.json"
NAMES = {  # eight features a stay charts over and over, by the catalogue's names or by an export's own
    "catalogued": ["heart_rate", "sodium", "creatinine", "lactate", "glucose", "systolic_bp", "diastolic_bp",
                   "temperature"],
    "uncatalogued": ["hr", "na", "crea", "lac", "glu", "sbp", "dbp", "temp"],
}


def write_sample(path: Path, names: list[str], patients: int, events: int, chunks: int = 10) -> None:
    """`patients` stays of `events` events each, written a tenth at a time so the writer stays small."""
    rng = np.random.default_rng(0)
    per_chunk, writer = patients // chunks, None
    for _ in range(chunks):
        offsets = pa.array(np.arange(per_chunk + 1, dtype=np.int32) * events)
        columns = {
            "feature": pa.array(names).take(pa.array(rng.integers(0, len(names), per_chunk * events))),
            "value": pa.array(rng.normal(100, 10, per_chunk * events)),
            "time": pa.array(np.tile(np.linspace(0, 47, events), per_chunk)),
        }
        table = pa.table({name: pa.ListArray.from_arrays(offsets, values) for name, values in columns.items()})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def memory_kib(field: str) -> int:
    return next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith(field + ":"))


def measure(path: Path, cache_dir: Path) -> dict:
    """In this process: load the sample, then fit a tokenizer on it as `pretrain.py` does."""
    import datasets

    from medfuse_hf.training.cohorts import fit_tokenizer

    sample = datasets.Dataset.from_parquet(str(path), cache_dir=str(cache_dir))
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
    loaded = memory_kib("VmRSS")
    fit_tokenizer(sample, max_events=1024)
    return {"loaded_mib": loaded / 1024, "peak_above_loaded_mib": (memory_kib("VmHWM") - loaded) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument("--events", type=int, default=2500)
    parser.add_argument("--work_dir", type=Path, default=Path("/tmp/tokenizer-memory"))
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--measure", nargs=2, metavar=("PARQUET", "CACHE_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:  # the child process
        print(json.dumps(measure(Path(args.measure[0]), Path(args.measure[1]))))
        return
    args.work_dir.mkdir(parents=True, exist_ok=True)
    results = {"patients": args.patients, "events_per_patient": args.events, "cases": {}}
    for case, names in NAMES.items():
        path = args.work_dir / f"{case}.parquet"
        if not path.exists():
            write_sample(path, names, args.patients, args.events)
        cache = args.work_dir / f"cache-{case}"
        for _ in range(2):  # the first run builds `datasets`' Arrow cache, whose memory would count as the sample's
            completed = subprocess.run([sys.executable, __file__, "--measure", str(path), str(cache)],
                                       capture_output=True, text=True, check=True)
        results["cases"][case] = json.loads(completed.stdout.strip().splitlines()[-1])
        print(f"{case:>13} names: fit_tokenizer peaks {results['cases'][case]['peak_above_loaded_mib']:,.0f} MiB "
              f"above the loaded sample ({args.patients:,} stays of {args.events:,} events)", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
