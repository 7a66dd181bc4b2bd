"""PhysioNet 2012 mortality: MedFuse (MuFuse) against its fusion ablations, a STraTS-style baseline and
summary-statistics baselines (gradient-boosted trees, logistic regression), several seeds.

    nohup python benchmarks/p12_table.py --data_dir ../shared/data/physionet2012 > outputs/p12-table.log 2>&1 &
    python benchmarks/p12_table.py --summary_only        # print the table from the JSON so far

Every cell (model, protocol, seed) is one `recipes/finetune.py` run with the same training budget; its test figures
are appended to `benchmarks/results/p12_table.json` as soon as it finishes, and cells already there are skipped,
so the table fills in across sessions. A killed run resumes from its last epoch checkpoint. Cells run seed by seed,
so a partial table compares every model on the same seeds. The baselines (`BASELINES`) are fitted in this process
on the same split, tuned and early-stopped on validation only, and write their test predictions where a MedFuse
run does, so that every MedFuse row is compared with the GBM on the same test patients.
"""

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from protocol import BUDGET, MODELS, ROOT, refuse_other_extra_args, refuse_rows_of_another_base

from medfuse_hf.data.clinical_features import CATEGORICAL_FEATURES
from medfuse_hf.training import binary_metrics, load_cohort
from medfuse_hf.training.evaluation import PROBABILITY_COLUMN, read_test_predictions
from medfuse_hf.training.metrics import accuracy_threshold, format_gap, mean_std_of, paired_bootstrap_difference
from medfuse_hf.training.run_info import git_commit
from medfuse_hf.training.runs import ResultRows, run_finetune
from medfuse_hf.training.summary_baseline import SUMMARY_BASELINES, BaselineFit, SummaryTable, fit_at_the_choice

RESULTS = ROOT / "benchmarks" / "results" / "p12_table.json"

BASELINES = tuple(SUMMARY_BASELINES)  # gbm_summary, logreg_summary: scikit-learn on per-stay summary statistics
# The GBM every MedFuse row is measured against: the 54-setting grid's, which scored higher on the mean of three
# seeds than the 16-setting one (RESULTS, "An audit of the GBM's choices"); a stronger baseline is the honest one.
GBM = "gbm_summary_wide"
# set-a-test confirms on another split what the SeFT split chose: round two's scratch leader against the GBM (the
# released base read 2,557 of set-a's 4,000 stays as pretraining data, so its LP-FT row cannot be confirmed there).
PROTOCOL_MODELS = {"seft-split": (*MODELS, *BASELINES),
                   "set-a-test": ("medfuse", "strats_cve", "medfuse_round_two", GBM)}
# Paired on the same test patients: MuFuse against every other model; MuFuse with the CVE of time against
# strats_cve, the additive fusion with that same time embedding, so that only the fusion differs; every MedFuse
# model against the GBM, the model a clinical data scientist fits first; and that GBM against the 16-setting one.
# (Gaps recorded against the 16-setting GBM before the move stay in the results while their rows stand.)
COMPARISONS = ([("medfuse", other) for other in MODELS if other != "medfuse"] + [("medfuse_cve_time", "strats_cve")]
               + [(model, GBM) for model in MODELS] + [(GBM, "gbm_summary")])
METRICS = ("auroc", "auprc", "accuracy")


def run_folder(output_dir: Path, protocol: str, model: str, seed: int) -> Path:
    """Where a cell's run (or a baseline's test predictions) is kept."""
    return output_dir / f"{protocol}-{model}-seed{seed}"


def run_cell(model: str, protocol: str, seed: int, args: argparse.Namespace) -> dict:
    if model in BASELINES:
        return run_baseline(model, protocol, seed, args)
    flags = [*BUDGET, *MODELS[model], *shlex.split(args.extra_args)]
    return {"model": model,
            **finetune_row(flags, protocol, seed, run_folder(args.output_dir, protocol, model, seed), args),
            **({"extra_args": args.extra_args} if args.extra_args else {})}


PLATEAU = 5  # validations averaged up to the kept epoch, in `plateau_auprc`


def kept_validations(run_dir: Path) -> list[dict]:
    """The validations of the run whose weights `run_dir` kept, up to the kept one (last). LP-FT's fine-tuning
    counts its probe as epoch 0 and keeps it (`best_validation` epoch 0) unless an epoch beats it on validation:
    the kept validation is then the probe run's, in `probe/`."""
    best_epoch = json.loads((run_dir / "test_metrics.json").read_text())["best_validation"]["epoch"]
    if best_epoch == 0:
        return kept_validations(run_dir / "probe")
    rows = [json.loads(line) for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "validation_auprc" in row and row["epoch"] < best_epoch]


def plateau_auprc(run_dir: Path) -> float:
    """The mean validation AUPRC of a run's kept epoch and the `PLATEAU - 1` validations before it: its level near
    its best rather than its single best draw. Epoch to epoch, validation AUPRC moves by about ±0.01, so the best of
    30 validations beats the best of 15 by chance alone; a ranking by the kept epoch's figure favours longer runs,
    and this is the check on it."""
    return float(np.mean([row["validation_auprc"] for row in kept_validations(run_dir)[-PLATEAU:]]))


def started_from(run_dir: Path) -> dict:
    """The weights a run started from (`--init_from`), as it recorded them when it began (`run_info.json`; a
    resumption under others is refused): `init_weights`, their hash's first 12 digits. LP-FT's first stage, its probe,
    read the base; its second read the probe. Empty for a run from scratch."""
    first_stage = run_dir / "probe" if (run_dir / "probe" / "run_info.json").exists() else run_dir
    recorded = json.loads((first_stage / "run_info.json").read_text())["config"].get("init_from_weights") or {}
    return {"init_weights": recorded["model.safetensors"][:12]} if "model.safetensors" in recorded else {}


def probe_seconds(run_dir: Path) -> float:
    """The training time of LP-FT's first stage (`probe/`), which the fine-tuning stage's report leaves out; 0 for
    any other run."""
    probe = run_dir / "probe" / "test_metrics.json"
    return json.loads(probe.read_text())["train_seconds"] if probe.exists() else 0.0


def finetune_row(flags: list[str], protocol: str, seed: int, output_dir: Path, args: argparse.Namespace) -> dict:
    """One P12 `recipes/finetune.py` run (resumed if it was killed) as a result row: its test figures, and the
    validation figures of the epoch it kept (the best by validation AUPRC), and the weights it started from."""
    flags = ["--dataset", "p12", "--data_dir", str(args.data_dir), "--protocol", protocol, "--seed", str(seed), *flags]
    report = run_finetune(flags, output_dir, args.launcher)
    distributed = json.loads((output_dir / "run_info.json").read_text())["distributed"]
    device = (f"{distributed['device_name']} x{distributed['num_processes']}, "
              f"precision {distributed['mixed_precision']}")
    kept = kept_validations(output_dir)[-1]
    return {"protocol": protocol, "seed": seed, **started_from(output_dir),
            **{metric: report["test"][metric]["value"] for metric in METRICS},
            "validation_auroc": kept["validation_auroc"], "validation_auprc": kept["validation_auprc"],
            "validation_auprc_plateau": plateau_auprc(output_dir),
            **({"accuracy_at_validation_threshold": report["accuracy_at_validation_threshold"]}
               if "accuracy_at_validation_threshold" in report else {}),
            "epochs": report["epochs"], "best_epoch": report["best_validation"]["epoch"],  # 0: LP-FT's probe
            "train_seconds": report["train_seconds"] + probe_seconds(output_dir), "device": device,
            "test_patients": report["test_patients"], "git": report["git"]["commit"],
            # the code its training began under, where the run recorded it (a finished run tested again, or one
            # resumed after a change, holds weights of older code than `git`)
            **({"git_at_start": report["git_at_start"]["commit"]} if "git_at_start" in report else {})}


@cache
def summary_tables(data_dir: Path, protocol: str, seed: int) -> tuple[dict, dict, pd.Series]:
    """The split's per-stay summary tables and labels (the columns fixed by its training split), and test ids."""
    cohort = load_cohort("p12", data_dir, protocol, seed=seed)
    parts = {name: cohort.labelled(name) for name in cohort.splits}  # as fine-tuning reads them (`training_splits`)
    table = SummaryTable(parts["train"], categorical=CATEGORICAL_FEATURES)
    tables = {name: table(part) for name, part in parts.items()}
    labels = {name: np.asarray(part[cohort.label_column]) for name, part in parts.items()}
    return tables, labels, pd.Series(parts["test"][cohort.id_column])


def run_baseline(model: str, protocol: str, seed: int, args: argparse.Namespace,
                 fit: Callable[..., BaselineFit] | None = None) -> dict:
    """A summary-statistics baseline fitted on train, chosen on validation, scored once on test (by `fit`, default
    the model's own over its whole grid); its test predictions go where a MedFuse run's do, for the paired gaps."""
    tables, labels, test_ids = summary_tables(args.data_dir, protocol, seed if protocol != "seft-split" else 0)
    started = time.perf_counter()
    fitted = (fit or SUMMARY_BASELINES[model])(
        (tables["train"], labels["train"]), (tables["validation"], labels["validation"]), tables["test"], seed)
    seconds = time.perf_counter() - started
    output_dir = run_folder(args.output_dir, protocol, model, seed)
    output_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"record_id": test_ids, "label": labels["test"], PROBABILITY_COLUMN: fitted.test_scores}).to_csv(
        output_dir / "test_predictions.csv", index=False)
    test = binary_metrics(labels["test"], fitted.test_scores)
    validation = binary_metrics(labels["validation"], fitted.validation_scores)
    at_threshold = binary_metrics(labels["test"], fitted.test_scores,
                                  accuracy_threshold(labels["validation"], fitted.validation_scores))
    return {"model": model, "protocol": protocol, "seed": seed, **{metric: test[metric] for metric in METRICS},
            "accuracy_at_validation_threshold": at_threshold["accuracy"],
            "validation_auroc": validation["auroc"], "validation_auprc": validation["auprc"],
            "settings": fitted.settings, "features": tables["train"].shape[1], "train_seconds": round(seconds, 1),
            "device": "CPU, scikit-learn", "test_patients": len(test_ids), "git": git_commit()["commit"]}


def restore_baseline_predictions(rows: list[dict], cells: list[dict], args: argparse.Namespace) -> None:
    """Fit again each finished baseline cell among `cells` whose test predictions are not on this machine (a fresh
    clone, a wiped machine), at the setting its row chose (a few minutes each), so that the paired gaps can be
    computed. The fit is seeded, so it must reproduce the recorded figures; if it does not, the code or data changed
    since the row, and it is an error rather than a gap computed against other predictions."""
    for row in rows:
        cell = {"model": row["model"], "protocol": row["protocol"], "seed": row["seed"]}
        run_dir = run_folder(args.output_dir, row["protocol"], row["model"], row["seed"])
        if cell not in cells or row["model"] not in BASELINES or (run_dir / "test_predictions.csv").exists():
            continue
        refitted = run_baseline(row["model"], row["protocol"], row["seed"], args,
                                fit_at_the_choice(row["model"], row["settings"]))
        differ = [metric for metric in METRICS if not np.isclose(refitted[metric], row[metric], rtol=0, atol=1e-12)]
        differ += ["settings"] * (refitted["settings"] != row["settings"])
        if differ:
            (run_dir / "test_predictions.csv").unlink()
            raise SystemExit(f"{run_dir.name}: fitted again, its test {differ} are "
                             f"{[refitted[metric] for metric in differ]}, recorded {[row[m] for m in differ]} "
                             f"(at {row['git'][:8]}): the code or data changed since; rerun the cell")
        print(f"{run_dir.name}: fitted again for its test predictions, figures as recorded", flush=True)


def summarise(rows: list[dict]) -> str:
    """Mean ± sample std of each metric per (protocol, model), as a Markdown table."""
    lines = ["| protocol | model | seeds | AUROC | AUPRC | accuracy | epochs | train s/run |",
             "|---|---|---:|---|---|---|---:|---:|"]
    for protocol, models in PROTOCOL_MODELS.items():
        for model in models:
            cell = [row for row in rows if row["protocol"] == protocol and row["model"] == model]
            if not cell:
                continue
            figures = [mean_std_of([row[metric] for row in cell]) for metric in METRICS]
            epochs = [row["epochs"] for row in cell if "epochs" in row]  # the baselines have none
            lines.append(f"| {protocol} | {model} | {len(cell)} | {' | '.join(figures)} | "
                         f"{f'{np.mean(epochs):.1f}' if epochs else '–'} | "
                         f"{np.mean([row['train_seconds'] for row in cell]):.0f} |")
    return "\n".join(lines)


def read_p12_test_predictions(run_dir: Path) -> pd.DataFrame:
    """A run's test risks indexed by record id (files written before ids were kept as ids have them as floats)."""
    frame = read_test_predictions(run_dir, "record_id")
    return frame.set_axis(frame.index.str.removesuffix(".0"))


def paired_predictions(first_run: Path, second_run: Path) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Two runs' test labels and risks, aligned by record id, for a paired comparison: refused where the runs scored
    other patients or read other labels, which an alignment would silently drop or mix."""
    first, second = (read_p12_test_predictions(run) for run in (first_run, second_run))
    if set(first.index) != set(second.index):
        only = sorted(set(first.index) ^ set(second.index))
        raise SystemExit(f"{first_run} and {second_run} scored other test patients ({len(only)} in one only, e.g. "
                         f"{only[:5]}): no paired gap between them")
    second = second.loc[first.index]
    if not np.array_equal(first["label"].to_numpy(dtype=float), second["label"].to_numpy(dtype=float)):
        raise SystemExit(f"{first_run} and {second_run} read other labels for the same test patients")
    return first["label"], first[PROBABILITY_COLUMN], second[PROBABILITY_COLUMN]


def paired_gaps(rows: list[dict], output_dir: Path) -> list[dict]:
    """Each of COMPARISONS per protocol and seed where both runs are done: the first model minus the second on the
    same test patients, with a paired bootstrap 95% interval: whether a gap within one seed is larger than the test
    set's sampling noise."""
    gaps = []
    finished = {(row["protocol"], row["model"], row["seed"]) for row in rows}  # not a run still going
    for protocol, seed in sorted({(row["protocol"], row["seed"]) for row in rows}):
        for model, versus in COMPARISONS:
            if not {(protocol, model, seed), (protocol, versus, seed)} <= finished:
                continue
            runs = [run_folder(output_dir, protocol, name, seed) for name in (model, versus)]
            if not all((run / "test_predictions.csv").exists() for run in runs):  # rows older than saved predictions
                continue
            labels, first, second = paired_predictions(*runs)
            gaps.append({"protocol": protocol, "seed": seed, "model": model, "versus": versus,
                         **{metric: paired_bootstrap_difference(labels, first, second, metric)
                            for metric in ("auprc", "auroc")}})
    return gaps


def merged_gaps(recorded: list[dict], computed: list[dict], rows: list[dict]) -> list[dict]:
    """The recorded gaps with the ones computed now: a gap whose runs' predictions are not on this machine (a fresh
    clone, another session's outputs) is kept as recorded while its two rows still give its point value (their
    difference); one whose rows were run again since is dropped, and said, rather than printed beside the new rows."""
    figures = {(row["protocol"], row["model"], row["seed"]): row for row in rows}

    def current(gap: dict) -> bool:
        pair = [figures.get((gap["protocol"], name, gap["seed"])) for name in (gap["model"], gap["versus"])]
        return None not in pair and all(
            abs(pair[0][metric] - pair[1][metric] - gap[metric]["value"]) < 1e-9 for metric in ("auprc", "auroc"))

    stale = [gap for gap in recorded if not current(gap)]
    for gap in stale:
        print(f"recorded gap {gap['model']} − {gap['versus']} ({gap['protocol']}, seed {gap['seed']}) dropped: its "
              "rows were run again or removed since, and their predictions are not here to pair again")
    kept = [gap for gap in recorded if gap not in stale]
    return list({**{gap_key(gap): gap for gap in kept}, **{gap_key(gap): gap for gap in computed}}.values())


def gap_key(gap: dict) -> tuple:
    return gap["protocol"], gap["seed"], gap["model"], gap["versus"]


def format_gaps(gaps: list[dict]) -> str:
    lines = ["| protocol | seed | model | minus | AUPRC gap [95% CI] | AUROC gap [95% CI] |",
             "|---|---:|---|---|---|---|"]
    for gap in sorted(gaps, key=lambda gap: (gap["protocol"], gap["model"], gap["versus"], gap["seed"])):
        figures = [format_gap(gap[m]) for m in ("auprc", "auroc")]
        lines.append(f"| {gap['protocol']} | {gap['seed']} | {gap['model']} | {gap['versus']} | "
                     f"{' | '.join(figures)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, default=ROOT.parent / "shared" / "data" / "physionet2012")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--protocols", nargs="+", choices=tuple(PROTOCOL_MODELS), default=list(PROTOCOL_MODELS))
    parser.add_argument("--models", nargs="+", choices=(*MODELS, *BASELINES), default=[*MODELS, *BASELINES])
    parser.add_argument("--output_dir", type=Path, default=ROOT / "outputs" / "p12-table")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--launcher", default=shlex.quote(sys.executable), help='e.g. "accelerate launch"')
    parser.add_argument("--extra_args", default="",
                        help="flags added to every run (e.g. --mixed_precision bf16 on a GPU)")
    parser.add_argument("--summary_only", action="store_true")
    args = parser.parse_args()

    results = ResultRows(args.results, key=("model", "protocol", "seed"))
    refuse_rows_of_another_base(results.rows, lambda row: row["model"])
    if not args.summary_only:
        refuse_other_extra_args(results.rows, args.extra_args, args.results)
        cells = [{"model": model, "protocol": protocol, "seed": seed} for seed in args.seeds
                 for protocol in args.protocols for model in PROTOCOL_MODELS[protocol] if model in args.models]
        restore_baseline_predictions(results.rows, cells, args)
        results.fill(cells, lambda cell: run_cell(cell["model"], cell["protocol"], cell["seed"], args),
                     lambda row: f"{row['protocol']} {row['model']} seed {row['seed']}: "
                     + ", ".join(f"{m} {row[m]:.4f}" for m in METRICS)
                     + f" ({row.get('epochs', '–')} epochs, {row['train_seconds']:.0f} s)")
    print(summarise(results.rows))
    gaps_path = args.results.with_name("p12_paired_gaps.json")
    gaps = merged_gaps(json.loads(gaps_path.read_text()) if gaps_path.exists() else [],
                       paired_gaps(results.rows, args.output_dir), results.rows)
    gaps_path.write_text(json.dumps(gaps, indent=1) + "\n")
    print(format_gaps(gaps))


if __name__ == "__main__":
    main()
