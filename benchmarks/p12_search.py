"""PhysioNet 2012: the search for a MedFuse that beats the summary-statistics GBM, one lever at a time (the ledger).

    nohup python benchmarks/p12_search.py > outputs/p12-search.log 2>&1 &       # screen every lever, seed 0
    python benchmarks/p12_search.py --levers attention_pooling --seeds 1 2       # confirm a winner
    python benchmarks/p12_search.py --summary_only                               # the ledger from the JSON so far

The search is greedy, in the order of `LEVERS`: it starts from the reference, the P12 table's best row (MuFuse with
the CVE of time) at the table's budget, and each lever is tried on top of every lever kept so far; a lever is kept
when it raises validation AUPRC above the best so far. So each row of the ledger says what one change did, given
the ones before it. Every finished run appends its validation and test figures to `benchmarks/results/p12_search.json`;
levers already there are skipped and a killed run resumes from its last epoch, so the search fills in across
sessions. Levers are chosen on validation only; the test figures are reported, never used to choose. One seed's
validation AUPRC moves by about ±0.02 between seeds, so a kept lever is a candidate for the 3-seed confirmation,
not a proven gain.
"""

import argparse
import shlex
import sys
from pathlib import Path

from p12_table import BUDGET, MODELS, ROOT, finetune_row, read_test_predictions

from medfuse_hf.training.metrics import format_mean_std, mean_and_std, paired_bootstrap_difference
from medfuse_hf.training.runs import ResultRows

RESULTS = ROOT / "benchmarks" / "results" / "p12_search.json"
REFERENCE = MODELS["medfuse_cve_time"]
LEVERS = {  # name: flags added to the reference and the levers kept before it (later flags win over BUDGET's)
    "reference": [],
    "attention_pooling": ["--pooling", "attention"],
    "wide_value_projector": ["--value_projector_hidden_size", "64"],
    "quantile_values": ["--value_normalization", "quantile"],
    "periodic_value_projector": ["--value_projector", "periodic"],
    "statics_embedding": ["--static_features", "age", "gender", "height", "icu_type", "weight"],
    "focal_loss": ["--classification_loss", "focal", "--focal_alpha", "0.5", "--class_weighting", "none"],
    "event_dropout": ["--event_dropout", "0.1"],
    "two_layers_four_heads_pre_ln": ["--num_hidden_layers", "2", "--num_attention_heads", "4", "--norm_first", "true"],
    "cosine_30_epochs": ["--num_epochs", "30", "--lr_scheduler", "cosine", "--patience", "8"],
}
COLUMNS = ("validation_auroc", "validation_auprc", "auroc", "auprc")


def greedy_path(rows: list[dict], seed: int = 0) -> tuple[list[str], list[str]]:
    """From the screening seed's finished rows: the levers kept so far and the flags they add up to."""
    kept, flags, best = [], [], -1.0
    for lever in LEVERS:
        row = next((row for row in rows if row["lever"] == lever and row["seed"] == seed), None)
        if row is None:
            break
        if row["validation_auprc"] > best:
            best = row["validation_auprc"]
            kept.append(lever)
            flags += LEVERS[lever]
    return kept, flags


def run_of(rows: list[dict], lever: str) -> tuple[list[str], list[str]]:
    """The levers under `lever` and its flags: as its screening run (seed 0) had them, so that a confirmation seed
    repeats that run even after later levers were kept; for a lever not screened yet, the greedy path so far."""
    screened = next((row for row in rows if row["lever"] == lever and row["seed"] == 0), None)
    if screened is not None:
        return screened["on_top_of"], shlex.split(screened["flags"])
    if lever == "reference":
        return [], []
    kept, flags = greedy_path(rows)
    return [name for name in kept if name != "reference"], [*flags, *LEVERS[lever]]


def gaps_to_gbm(rows: list[dict], output_dir: Path, table_dir: Path) -> str:
    """Each finished lever run minus the GBM of the same seed on the same test patients, with a paired bootstrap 95%
    interval: where both runs' predictions are on this machine."""
    lines = ["| lever | seed | AUROC gap to the GBM [95% CI] | AUPRC gap to the GBM [95% CI] |", "|---|---:|---|---|"]
    for row in rows:
        runs = [
            output_dir / f"{row['lever']}-seed{row['seed']}",
            table_dir / f"seft-split-gbm_summary-seed{row['seed']}",
        ]
        if not all((run / "test_predictions.csv").exists() for run in runs):
            continue
        lever, gbm = (read_test_predictions(run) for run in runs)
        gbm = gbm.loc[lever.index]
        figures = [
            paired_bootstrap_difference(lever["label"], lever["score"], gbm["score"], metric)
            for metric in ("auroc", "auprc")
        ]
        lines.append(
            f"| {row['lever']} | {row['seed']} | "
            + " | ".join(f"{gap['value']:+.4f} [{gap['low']:+.4f}, {gap['high']:+.4f}]" for gap in figures)
            + " |"
        )
    return "\n".join(lines)


def summarise(rows: list[dict]) -> str:
    """The ledger: one line per lever in search order, mean ± std over the seeds run, whether it was kept, its cost."""
    kept, _ = greedy_path(rows)
    lines = [
        "| lever | on top of | kept | seeds | validation AUROC | validation AUPRC | test AUROC | test AUPRC "
        "| epochs (best) | train s/run |",
        "|---|---|---|---:|---|---|---|---|---|---:|",
    ]
    for lever in LEVERS:
        cell = [row for row in rows if row["lever"] == lever]
        if not cell:
            continue
        figures = [format_mean_std(*mean_and_std([row[column] for row in cell])) for column in COLUMNS]
        epochs = "/".join(f"{row['epochs']} ({row['best_epoch']})" for row in cell)
        seconds = sum(row["train_seconds"] for row in cell) / len(cell)
        base = ", ".join(cell[0]["on_top_of"]) or "–"
        lines.append(
            f"| {lever} | {base} | {'yes' if lever in kept else 'no'} | {len(cell)} | {' | '.join(figures)} "
            f"| {epochs} | {seconds:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, default=ROOT.parent / "shared" / "data" / "physionet2012")
    parser.add_argument("--levers", nargs="+", choices=tuple(LEVERS), default=list(LEVERS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--output_dir", type=Path, default=ROOT / "outputs" / "p12-search")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--table_dir",
        type=Path,
        default=ROOT / "outputs" / "p12-table",
        help="where benchmarks/p12_table.py left the GBM's test predictions",
    )
    parser.add_argument("--launcher", default=shlex.quote(sys.executable), help='e.g. "accelerate launch"')
    parser.add_argument("--extra_args", default="", help="flags added to every run")
    parser.add_argument("--summary_only", action="store_true")
    args = parser.parse_args()

    results = ResultRows(args.results, key=("lever", "seed"))
    if not args.summary_only:
        for seed in args.seeds:
            for lever in args.levers:
                if results.done(lever=lever, seed=seed):
                    continue
                on_top_of, lever_flags = run_of(results.rows, lever)
                flags = [*BUDGET, *REFERENCE, *lever_flags, *shlex.split(args.extra_args)]
                row = finetune_row(flags, "seft-split", seed, args.output_dir / f"{lever}-seed{seed}", args)
                results.add({"lever": lever, "on_top_of": on_top_of, "flags": shlex.join(lever_flags), **row})
                print(
                    f"{lever} seed {seed}: "
                    + ", ".join(f"{c} {row[c]:.4f}" for c in COLUMNS)
                    + f" ({row['epochs']} epochs, {row['train_seconds']:.0f} s)",
                    flush=True,
                )
    print(summarise(results.rows))
    print(gaps_to_gbm(results.rows, args.output_dir, args.table_dir))


if __name__ == "__main__":
    main()
