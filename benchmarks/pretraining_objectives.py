"""Which self-supervised objective to pretrain the base model with (issue 20): each objective pretrains MedFuse on the
same corpus with the same budget, and is judged by what a hospital gets from it, the fine-tuned P12 validation AUPRC
at 1 % and 10 % of the training labels, next to the same fine-tuning from scratch.

    python recipes/make_pretraining_corpus.py --p19_dir ../shared/data/physionet2019 \
        --p12_dir ../shared/data/physionet2012 --validation_fraction 0   # once, ~30 s; as these runs, none held out
    nohup python benchmarks/pretraining_objectives.py > outputs/pretraining-objectives.log 2>&1 &
    python benchmarks/pretraining_objectives.py --arms "forecasting@lr=1e-4" "forecasting:embeddings"   # other starts

Pretraining streams the corpus' Parquet shards (`recipes/pretrain.py --parquet_shards`, the path that scales past
memory) for `--max_steps` optimizer steps; each finished pretraining keeps its `model/`, and each fine-tuning appends
its row to `benchmarks/results/pretraining/objectives.json`, so a killed run resumes. Validation chooses; the test
figures are reported beside it, never used to choose. The pretraining cost (events/s, wall time) of each objective
goes in the same file.
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

from protocol import FINETUNE, PRETRAIN, ROOT

from medfuse_hf.training.run_info import git_commit
from medfuse_hf.training.runs import ResultRows, run_finetune, run_recipe

RESULTS = ROOT / "benchmarks" / "results" / "pretraining" / "objectives.json"
OBJECTIVES = ("forecasting", "masked_values")


def pretrain(objective: str, args: argparse.Namespace) -> Path:
    """The pretraining run folder of `objective`, pretrained (or resumed) unless its model is already there."""
    run_dir = args.output_dir / objective
    if not (run_dir / "model").is_dir():
        run_recipe("pretrain.py", ["--parquet_shards", args.parquet_shards, "--objective", objective,
                                   "--max_steps", str(args.max_steps), *PRETRAIN], run_dir, args.launcher)
    return run_dir


def start_flags(arm: str, args: argparse.Namespace) -> list[str]:
    """How a fine-tuning arm starts: `scratch`, `<objective>` (the whole pretrained model), or
    `<objective>:embeddings` (its published feature embeddings only); `@lr=<x>` sets the fine-tuning learning rate."""
    start, _, learning_rate = arm.partition("@lr=")
    objective, _, part = start.partition(":")
    flags = ([] if objective == "scratch" else
             ["--init_embeddings_from", str(args.output_dir / objective / "feature_embeddings")]
             if part == "embeddings" else
             ["--init_from", str(args.output_dir / objective / "model")])
    return flags + (["--learning_rate", learning_rate] if learning_rate else [])  # later flags win over FINETUNE's


def finetune(arm: str, fraction: float, args: argparse.Namespace) -> dict:
    flags = ["--dataset", "p12", "--data_dir", str(args.data_dir), "--protocol", "seft-split", *FINETUNE,
             "--train_fraction", str(fraction), "--seed", "0", *start_flags(arm, args)]
    report = run_finetune(flags, args.output_dir / "finetune" / f"{arm.replace('@lr=', '-lr')}-f{fraction}",
                          args.launcher)
    return {"arm": arm, "fraction": fraction, "validation_auprc": report["best_validation"]["auprc"],
            "auroc": report["test"]["auroc"]["value"], "auprc": report["test"]["auprc"]["value"],
            "train_seconds": report["train_seconds"], "git": git_commit()["commit"]}


def summarise(rows: list[dict]) -> str:
    lines = ["| start | fraction | validation AUPRC | test AUROC | test AUPRC |", "|---|---:|---:|---|---|"]
    for row in sorted((row for row in rows if row["fraction"] is not None),
                      key=lambda row: (row["fraction"], row["arm"])):
        lines.append(f"| {row['arm']} | {row['fraction']:g} | {row['validation_auprc']:.4f} | {row['auroc']:.4f} | "
                     f"{row['auprc']:.4f} |")
    for row in (row for row in rows if "objective" in row):
        lines.append(f"\n{row['objective']}: {row['steps']} steps, {row['events_trained']:,} events in "
                     f"{row['train_seconds']:.0f} s ({row['events_per_second']:,} events/s)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parquet_shards", default=str(ROOT / "outputs" / "pretraining-corpus" / "*.parquet"))
    parser.add_argument("--data_dir", type=Path, default=ROOT.parent / "shared" / "data" / "physionet2012")
    parser.add_argument("--max_steps", type=int, default=1500)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--arms", nargs="+", default=["scratch", *OBJECTIVES],
                        help="scratch, <objective>, <objective>:embeddings, each optionally @lr=<learning rate>")
    parser.add_argument("--output_dir", type=Path, default=ROOT / "outputs" / "pretraining")
    parser.add_argument("--launcher", default=shlex.quote(sys.executable))
    parser.add_argument("--summary_only", action="store_true")
    args = parser.parse_args()
    results = ResultRows(RESULTS, key=("arm", "fraction"))
    if not args.summary_only:
        for objective in OBJECTIVES:
            run_dir = pretrain(objective, args)
            if not results.done(arm=f"pretraining:{objective}", fraction=None):
                cost = json.loads((run_dir / "pretraining_metrics.json").read_text())
                results.add({"arm": f"pretraining:{objective}", "fraction": None, **cost,
                             "git": git_commit()["commit"]})
        results.fill(({"arm": arm, "fraction": fraction} for fraction in args.fractions for arm in args.arms),
                     lambda cell: finetune(cell["arm"], cell["fraction"], args),
                     lambda row: f"{row['arm']}, {row['fraction']:g}: {row}")
    print(summarise(results.rows))


if __name__ == "__main__":
    main()
