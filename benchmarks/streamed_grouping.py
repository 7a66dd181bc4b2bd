"""What batching a streamed corpus by length buys (`recipes/pretrain.py --group_by_length`): how full batches of the
corpus' stays are, random and grouped (forecasting then cuts each stay at a random time, so the model's inputs are
shorter), and the seconds per optimizer step of the second base's pretraining both ways, on the same shards, with
nothing else training.

    python recipes/make_pretraining_corpus.py --p19_dir ../shared/data/physionet2019 \
        --p12_dir ../shared/data/physionet2012        # once
    python benchmarks/streamed_grouping.py            # ~5 min on 2 cores

Rows go to `benchmarks/results/pretraining/streamed_grouping.json` (a finished arm is not rerun).
"""

import argparse
import glob
import json
import random
import shlex
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
from protocol import ROOT

from medfuse_hf.data import LengthGroupedStream
from medfuse_hf.training.run_info import git_commit
from medfuse_hf.training.runs import ResultRows, run_recipe

RESULTS = ROOT / "benchmarks" / "results" / "pretraining" / "streamed_grouping.json"
CONFIG = ROOT / "recipes" / "configs" / "medfuse-base.yaml"


def batch_fill(lengths: list[int], batch_size: int, grouped: bool, seed: int = 0) -> float:
    """The mean share of a padded batch's positions that hold an event, over the corpus in one random order (the
    stream's shuffle), batched as it comes or re-ordered as `LengthGroupedStream` does."""
    order = [{"feature": range(length)} for length in random.Random(seed).sample(lengths, len(lengths))]
    stream = list(LengthGroupedStream(order, batch_size, seed)) if grouped else order
    batches = [stream[start:start + batch_size] for start in range(0, len(stream) - batch_size + 1, batch_size)]
    return sum(sum(len(p["feature"]) for p in batch) / (len(batch) * max(len(p["feature"]) for p in batch))
               for batch in batches) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "outputs" / "pretraining-corpus")
    parser.add_argument("--max_steps", type=int, default=60)
    parser.add_argument("--output_dir", type=Path, default=ROOT / "outputs" / "streamed-grouping")
    args = parser.parse_args()
    shards = sorted(glob.glob(str(args.corpus / "*.parquet")))
    max_events, batch_size = 1024, 64  # the base's (recipes/configs/medfuse-base.yaml)
    lengths = [min(length, max_events) for shard in shards
               for length in pc.list_value_length(pq.read_table(shard, columns=["feature"])["feature"]).to_pylist()]
    results = ResultRows(RESULTS, key=("grouped",))
    for grouped in (False, True):
        if results.done(grouped=grouped):
            continue
        run_dir = args.output_dir / ("grouped" if grouped else "random")
        flags = ["--config", str(CONFIG), "--parquet_shards", str(args.corpus / "*.parquet"), "--validation_shards",
                 str(args.corpus / "validation" / "*.parquet"), "--max_steps", str(args.max_steps),
                 "--group_by_length", str(grouped).lower()]
        run_recipe("pretrain.py", flags, run_dir, shlex.quote(sys.executable))
        cost = json.loads((run_dir / "pretraining_metrics.json").read_text())
        results.add({"grouped": grouped, "steps": cost["steps"], "train_seconds": cost["train_seconds"],
                     "seconds_per_step": round(cost["train_seconds"] / cost["steps"], 3),
                     "events_per_second": cost["events_per_second"],
                     "stay_batch_fill": round(batch_fill(lengths, batch_size, grouped), 3),
                     "git": git_commit()["commit"]})
    for row in results.rows:
        print(f"{'grouped' if row['grouped'] else 'random '}: batches of stays {row['stay_batch_fill']:.0%} full, "
              f"{row['seconds_per_step']:.3f} s/step over {row['steps']} steps, {row['events_per_second']:,} events/s")


if __name__ == "__main__":
    main()
