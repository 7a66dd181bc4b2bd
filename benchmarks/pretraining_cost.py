"""What pretraining costs (issue 20), measured here, and an estimate of what it would cost at scale.

    python benchmarks/pretraining_cost.py     # ~5 min on 2 cores; run it with nothing else training

1. The sharded path on one process and on two (`accelerate launch`, gloo on the CPU), the same `--max_steps` on the
   real corpus' Parquet shards: both must take the same optimizer steps over the same global batches; their events/s
   say what a second process buys on this machine.
2. An estimate, labelled as one, of a pass over a 1 M-patient corpus on 8 GPUs: the corpus' measured events per
   patient, times the per-event cost of the one GPU run this project had (an H200 fine-tuning P12 in session 8,
   `benchmarks/results/cuda_check/`, sharing the GPU with other jobs, so the cost is if anything overstated), with
   data-parallel efficiency assumed, not measured.

Rows go to `benchmarks/results/pretraining/cost.json` (a finished check is not rerun).
"""

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from protocol import PRETRAIN, ROOT

from medfuse_hf.training.run_info import git_commit
from medfuse_hf.training.runs import ResultRows, run_recipe

RESULTS = ROOT / "benchmarks" / "results" / "pretraining" / "cost.json"
CORPUS = ROOT / "outputs" / "pretraining-corpus"
TWO_PROCESSES = (f"{shlex.quote(sys.executable)} -m accelerate.commands.launch --multi_gpu --num_processes 2 "
                 "--num_machines 1 --mixed_precision no --dynamo_backend no")
# Session 8's H200 run: P12 fine-tuning in fp32, 1,785 optimizer steps of 64 patients in 63.5 s of training
# (benchmarks/RESULTS.md, "On a GPU"); P12 SeFT training stays carry 3,365,519 events over 7,671 stays (corpus.json).
H200_PATIENTS_PER_SECOND = 1785 * 64 / 63.5
P12_EVENTS_PER_PATIENT = 3_365_519 / 7671
DATA_PARALLEL_EFFICIENCY = 0.8  # assumed for 8 GPUs on one machine (DDP, all-reduce of ~1 M parameters)


def sharded_check(processes: int, args: argparse.Namespace) -> dict:
    # gloo ranks on the CPU, as the README launches them, the machine's cores shared out between them
    os.environ.update(ACCELERATE_USE_CPU="1", OMP_NUM_THREADS=str(max(1, os.cpu_count() // processes)))
    run_dir = args.output_dir / f"{processes}-process"
    run_recipe("pretrain.py", ["--parquet_shards", str(CORPUS / "*.parquet"), "--objective", args.objective,
                               "--max_steps", str(args.steps), *PRETRAIN], run_dir,
               TWO_PROCESSES if processes == 2 else shlex.quote(sys.executable))
    cost = json.loads((run_dir / "pretraining_metrics.json").read_text())
    return {"check": f"{processes}-process", **cost, "git": git_commit()["commit"]}


def estimate(corpus: dict, rows: list[dict]) -> dict:
    patients = sum(source["patients"] for source in corpus["sources"].values())
    events_per_patient = sum(source["events"] for source in corpus["sources"].values()) / patients
    one_process = next(row for row in rows if row["check"] == "1-process")
    gpu_events_per_second = H200_PATIENTS_PER_SECOND * P12_EVENTS_PER_PATIENT
    events = 1_000_000 * events_per_patient
    return {"check": "estimate: 1 M patients, one pass", "events_per_patient": round(events_per_patient, 1),
            "events": round(events), "cpu_events_per_second_measured": one_process["events_per_second"],
            "cpu_hours_this_machine": round(events / one_process["events_per_second"] / 3600, 1),
            "h200_events_per_second_from_session_8": round(gpu_events_per_second),
            "assumed_data_parallel_efficiency": DATA_PARALLEL_EFFICIENCY,
            "minutes_on_8_h200": round(events / (8 * DATA_PARALLEL_EFFICIENCY * gpu_events_per_second) / 60, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objective", default="masked_values")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--output_dir", type=Path, default=ROOT / "outputs" / "pretraining-cost")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = ResultRows(args.results, key=("check",))
    results.fill(({"check": f"{processes}-process"} for processes in (1, 2)),
                 lambda cell: sharded_check(int(cell["check"][0]), args))
    steps = {row["check"]: (row["steps"], row["patients_trained"])
             for row in results.rows if "process" in row["check"]}
    if steps["1-process"] != steps["2-process"]:
        raise SystemExit(f"one and two processes trained differently (steps, patients): {steps}")
    corpus = json.loads((CORPUS / "corpus.json").read_text())
    results.rows = [row for row in results.rows if not row["check"].startswith("estimate")]
    results.add(estimate(corpus, results.rows))
    for row in results.rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
