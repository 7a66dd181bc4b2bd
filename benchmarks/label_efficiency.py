"""Label efficiency of pretraining (issue 20): on P12's SeFT split, with 1 %…100 % of the training stays, does a
model started from the pretrained base need fewer labelled patients than one trained from scratch, or than the
summary-statistics GBM a hospital would otherwise use?

    nohup python benchmarks/label_efficiency.py --base outputs/pretraining/forecasting \
        > outputs/label-efficiency.log 2>&1 &
    python benchmarks/label_efficiency.py --summary_only     # table, gains, goal, labels and plot of the cells so far
    python benchmarks/label_efficiency.py --base model_cards/medfuse-base --model medfuse_round_two

The last line is the second (released) base's experiment, fine-tuned as the accuracy search's leader is
(`--model`, from `protocol.MODELS`), with results and runs of its own.

Arms, each on the same nested, stratified, seeded training subset (`nested_subset`, as `--train_fraction` draws it):
- `scratch`: a model of the P12 table and its budget (`--model`: round one's best, MuFuse with the CVE of time,
  by default), trained on the subset;
- `pretrained`: the same, started from the base model (`--init_from <base>/model`);
- `pretrained_lpft`: the same start, fine-tuned by LP-FT (`--strategy lp-ft`): the head first on the frozen base,
  then everything from there at a tenth of the learning rate, so that few labels cannot distort the base at once;
- `pretrained_head`: the base frozen, a linear head trained through the model (`--strategy probe`): the probe a
  hospital gets as a MedFuse checkpoint that `predict.py` scores. It is LP-FT's first stage run alone, so where this
  experiment's LP-FT cell has run, that stage's figures are taken rather than trained again (`lpft_first_stage`);
- `pretrained_lpft_new_features`: LP-FT whose probe also learns the rows of P12's features that the base lacks, the
  rest of the base frozen (`--new_features learn`), where `pretrained_lpft`'s probe leaves them out. It differs only
  for a base that lacks some of P12's features (one pretrained elsewhere), so it is not run by default;
- `pretrained_embeddings`: the same, started from the base's feature embeddings only (`--init_embeddings_from`);
- `pretrained_probe`: the base left frozen, a logistic regression on its pooled representation of each stay (linear
  probing: whether what the base learnt without labels carries the outcome, with nothing for 77 stays to overfit);
- `gbm`: the summary-statistics GBM of the accuracy issue, fitted on the subset; which statistics it reads and how
  strongly it is regularised are chosen on validation, for 77 stays as for 7,671 (`GBM_SETTINGS`);
- `gbm_with_base`: that GBM with the frozen base's representation as extra columns (the tool a hospital trusts,
  given what the base learnt);
- `gbm_min_iterations`: the GBM kept at no fewer than 50 boosting iterations, as MedFuse's small cells train a floor
  of steps before an epoch is kept (an audit found the GBM's argmax keeping as few as 2 trees on a cut validation);
  not run by default, and paired with `gbm` on the same subsets.

Seeds are subsets: 10 at 1 % and 5 at 5 %, where one subset of 77 or 384 stays moves a result more than most arms
differ, and 3 elsewhere (`--seeds` sets one list for every fraction). Validation is the full split for every arm
(`validation: full`), for comparability; for the smallest fractions every arm is also run with validation cut to the
same fraction, at least 10 stays of each class (`validation: cut`), which is what a small hospital has. Rows go to
`benchmarks/results/pretraining/p12_label_efficiency.json` as cells finish (finished cells are skipped, a killed
fine-tuning resumes); `table.md`, `gains.md`, `goal.md`, `labels.md` (how many labelled stays the GBM needs to
reach each arm from the base) and `label_efficiency.png` beside. Scratch on every stay
with full validation is the P12 table's own run of the same model: its figures are taken from `p12_table.json`,
with a `source` saying so, rather than trained again (`table_run`).
"""

import argparse
import importlib.util
import json
import math
import shlex
import sys
import time
from collections.abc import Iterator
from itertools import product
from pathlib import Path
from types import ModuleType

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from p12_search import LEADER
from p12_table import probe_seconds, summary_tables
from protocol import BUDGET, MODELS, ROOT, file_digest, finetune_flags, weights_digest

from medfuse_hf import MedFuseModel, MedFuseTokenizer
from medfuse_hf.data import nested_subset, validation_subset
from medfuse_hf.training import binary_metrics
from medfuse_hf.training.checkpointing import changed_settings
from medfuse_hf.training.cohorts import load_cohort
from medfuse_hf.training.evaluation import per_patient_outputs
from medfuse_hf.training.metrics import format_mean_std, mean_and_std, mean_std_of
from medfuse_hf.training.run_info import git_commit, read_run_settings
from medfuse_hf.training.runs import ResultRows, run_finetune
from medfuse_hf.training.summary_baseline import fit_gbm, fit_gbm_with_a_floor, fit_logistic_regression

RESULTS = ROOT / "benchmarks" / "results" / "pretraining"
P12_TABLE = ROOT / "benchmarks" / "results" / "p12_table.json"
P12_SEARCH = ROOT / "benchmarks" / "results" / "p12_search.json"
ARMS = ("scratch", "pretrained", "pretrained_lpft", "pretrained_head", "pretrained_lpft_new_features",
        "pretrained_embeddings", "pretrained_probe", "gbm", "gbm_with_base", "gbm_min_iterations")  # cells' order
DEFAULT_ARMS = tuple(arm for arm in ARMS if arm not in ("pretrained_lpft_new_features", "gbm_min_iterations"))
FROM_THE_BASE = tuple(arm for arm in ARMS if arm.startswith("pretrained")) + ("gbm_with_base",)  # paired gains
BASE_FREE = tuple(arm for arm in ARMS if arm not in FROM_THE_BASE)  # scratch and the GBM: the same with any base
# Each arm from the base against scratch, the GBM and the GBM with a floor of iterations; LP-FT also against the
# frozen base's probes (scikit-learn's, and its own first stage), since what fine-tuning after probing adds is LP-FT's
# question, and its probe that learns new features against its own; the recipe's probe against scikit-learn's; the
# GBM with the floor against the GBM.
COMPARISONS = (*product(FROM_THE_BASE, ("scratch", "gbm", "gbm_min_iterations")),
               ("pretrained_lpft", "pretrained_probe"), ("pretrained_lpft", "pretrained_head"),
               ("pretrained_head", "pretrained_probe"), ("pretrained_lpft_new_features", "pretrained_lpft"),
               ("gbm_min_iterations", "gbm"))
SEEDS_BY_FRACTION = {0.01: 10, 0.05: 5}  # how many subsets a fraction gets; 3 for any other
MAX_EVENTS = int(BUDGET[BUDGET.index("--max_events") + 1])  # the probe reads each stay as the fine-tunings do
FIRST_BASE_MODEL = "medfuse_cve_time"  # the fine-tuned arms of the first base's experiment
FIRST_BASE_WEIGHTS = "918841b9fea1"  # its base's weights (`weights_digest`), which its rows did not record
# The arms from the base that the accuracy search ran on every stay, by model: its leader fine-tuned from the second
# base, fully and by LP-FT (lever 5, `benchmarks/p12_search.py`).
SEARCH_RUNS = {"medfuse_round_two": {"pretrained": f"{LEADER}+in_domain_pretraining",
                                     "pretrained_lpft": f"{LEADER}+in_domain_lpft"}}


# The arms scikit-learn fits on per-stay tables: which tables, side by side (the summary statistics of the accuracy
# issue; the frozen base's pooled representation of the stay), and the model, its settings chosen on validation.
TABLE_ARMS = {
    "gbm": (("summaries",), fit_gbm),
    "gbm_min_iterations": (("summaries",), fit_gbm_with_a_floor),
    "pretrained_probe": (("base",), fit_logistic_regression),
    "gbm_with_base": (("summaries", "base"), fit_gbm),
}


def arm_flags(arm: str, base: Path) -> list[str]:
    lp_ft = ["--init_from", str(base / "model"), "--strategy", "lp-ft"]
    return {"scratch": [], "pretrained": ["--init_from", str(base / "model")], "pretrained_lpft": lp_ft,
            "pretrained_head": ["--init_from", str(base / "model"), "--strategy", "probe"],
            "pretrained_lpft_new_features": [*lp_ft, "--new_features", "learn"],
            "pretrained_embeddings": ["--init_embeddings_from", str(base / "feature_embeddings")]}[arm]


def base_representations(base: Path, data_dir: Path, cache_dir: Path) -> dict[str, np.ndarray]:
    """Each labelled P12 stay's pooled representation from the frozen base, per split in the cohort's order (the
    stays and order `summary_tables` reads), computed once per base weights and tokenizer (its statistics read the
    values) and cached beside the runs."""
    tokenizer_digest = file_digest(base / "model" / "preprocessor_config.json")
    cache = cache_dir / f"pretrained_probe-representations-{weights_digest(base / 'model')}-{tokenizer_digest}.npz"
    if cache.exists():
        return dict(np.load(cache))
    tokenizer = MedFuseTokenizer.from_pretrained(base / "model", max_events=MAX_EVENTS, unknown_features="drop")
    model, started = MedFuseModel.from_pretrained(base / "model").eval(), time.perf_counter()
    cohort = load_cohort("p12", data_dir, "seft-split")
    representations = {name: per_patient_outputs(cohort.labelled(name), tokenizer,
                                                 lambda batch: model(**batch).pooler_output)
                       for name in cohort.splits}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **representations)
    print(f"the base's representations of {sum(map(len, representations.values())):,} stays in "
          f"{time.perf_counter() - started:.0f} s, cached in {cache}", flush=True)
    return representations


def run_table_arm(arm: str, fraction: float, seed: int, validation: str, args: argparse.Namespace) -> dict:
    """A scikit-learn arm (`TABLE_ARMS`) on the training subset a fine-tuning of this fraction and seed gets, its
    settings chosen on the same validation stays, scored once on test."""
    summaries, labels, _ = summary_tables(args.data_dir, "seft-split", 0)
    sources, fit_model = TABLE_ARMS[arm]
    by_source = {"summaries": summaries}
    if "base" in sources:
        representations = base_representations(args.base, args.data_dir, args.output_dir)
        by_source["base"] = {split: pd.DataFrame(pooled, index=summaries[split].index).add_prefix("base_")
                             for split, pooled in representations.items()}
    tables = {split: pd.concat([by_source[source][split] for source in sources], axis=1) for split in labels}
    train = nested_subset(labels["train"], fraction, seed)
    kept = validation_subset(labels["validation"], fraction, seed) if validation == "cut" else slice(None)
    started = time.perf_counter()
    fit = fit_model((tables["train"].iloc[train], labels["train"][train]),
                    (tables["validation"].iloc[kept], labels["validation"][kept]), tables["test"], seed)
    test = binary_metrics(labels["test"], fit.test_scores)
    return {"auroc": test["auroc"], "auprc": test["auprc"], "settings": fit.settings,
            "train_seconds": round(time.perf_counter() - started, 1)}


def table_run(arm: str, fraction: float, seed: int, validation: str, model: str, table: Path = P12_TABLE) -> dict:
    """The P12 table's run that is this cell, if there is one: scratch on every stay with full validation is the
    table's own command for `model` (`--train_fraction 1` selects every stay, and `--min_steps 300` is far below a
    full run's steps), so its figures are taken rather than trained again. Empty if the cell is no such run."""
    rows = json.loads(table.read_text()) if table.exists() else []
    if (arm, fraction, validation) != ("scratch", 1.0, "full"):
        return {}
    row = next((row for row in rows if (row["model"], row["protocol"], row["seed"]) == (model, "seft-split", seed)),
               None)
    return {} if row is None else {
        "auroc": row["auroc"], "auprc": row["auprc"], "train_seconds": row["train_seconds"], "git": row["git"],
        "source": f"benchmarks/results/p12_table.json, model {model}: the same recipes/finetune.py command"}


def search_run(arm: str, fraction: float, seed: int, validation: str, model: str, base: Path,
               ledger: Path = P12_SEARCH) -> dict:
    """The accuracy search's run that is this cell, if there is one (`SEARCH_RUNS`): on every stay with full
    validation, the arm's fine-tuning of `model` from this base is the search's lever 5 (`--min_steps 300` and
    `--train_fraction 1` change nothing there), so its figures are taken rather than trained again. Only a row that
    started from this base's weights (`init_weights`, wherever they lay) is taken. Empty if the cell is no such run."""
    configuration = SEARCH_RUNS.get(model, {}).get(arm)
    if configuration is None or (fraction, validation) != (1.0, "full") or not ledger.exists():
        return {}
    digest = weights_digest(base / "model")
    for row in json.loads(ledger.read_text()):
        if ((row["configuration"], row["protocol"], row["seed"], row.get("init_weights"))
                == (configuration, "seft-split", seed, digest)):
            return {"auroc": row["auroc"], "auprc": row["auprc"], "train_seconds": row["train_seconds"],
                    "git": row["git"], "source": f"benchmarks/results/p12_search.json, configuration {configuration}"
                                                 ": the same recipes/finetune.py command"}
    return {}


def shared_run(arm: str, fraction: float, seed: int, validation: str, model: str, experiment: Path | None) -> dict:
    """This cell from another experiment's results file, if the arm reads no base (`BASE_FREE`): scratch of the same
    model, or the GBM, on the same subset and validation is the same command whatever the base, so a second base is
    paired with them at no cost. Empty if there is no such row."""
    if experiment is None or arm not in BASE_FREE:
        return {}
    for row in json.loads(experiment.read_text()):
        if ((row["arm"], row["fraction"], row["seed"], row["validation"]) == (arm, fraction, seed, validation)
                and (arm in TABLE_ARMS or row.get("model", FIRST_BASE_MODEL) == model)):
            return {**{key: row[key] for key in ("auroc", "auprc", "train_seconds", "git", "settings") if key in row},
                    "source": f"{experiment.name} of {experiment.parent.name}"
                              + (f", from {row['source']}" if "source" in row else "")}
    return {}


def lpft_first_stage(arm: str, fraction: float, seed: int, validation: str, flags: list[str],
                     output_dir: Path) -> dict:
    """`pretrained_head`'s cell from this experiment's LP-FT run of the same cell, if its first stage has finished:
    LP-FT's probe is `--strategy probe` with LP-FT's flags, so where the stage recorded every setting the head's
    `flags` give (`finetune.py`'s own parse; the base judged by its weights' hash), its figures are taken rather
    than trained again. Empty if there is no such stage."""
    stage = output_dir / run_name("pretrained_lpft", fraction, seed, validation) / "probe"
    report = stage / "test_metrics.json"
    if arm != "pretrained_head" or not report.exists():
        return {}
    head = load_recipe("finetune").build_parser().parse_args([*flags, "--output_dir", str(stage)])
    if changed_settings(read_run_settings(stage), head):
        return {}
    report = json.loads(report.read_text())
    return {"auroc": report["test"]["auroc"]["value"], "auprc": report["test"]["auprc"]["value"],
            "train_seconds": report["train_seconds"], "git": report["git"]["commit"],
            "source": f"LP-FT's first stage, {stage.parent.name}/probe: the same recipes/finetune.py command"}


def load_recipe(name: str) -> ModuleType:
    """A recipe (`recipes/<name>.py`) as a module, for its parser: what a run of it records."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_name(arm: str, fraction: float, seed: int, validation: str) -> str:
    return f"{arm}-f{fraction}-s{seed}-{validation}-validation"


def cell_flags(arm: str, fraction: float, seed: int, validation: str, args: argparse.Namespace) -> list[str]:
    """A fine-tuned arm's `recipes/finetune.py` flags for one cell."""
    cut = ["--validation_fraction", str(fraction)] if validation == "cut" else []
    return ["--dataset", "p12", "--data_dir", str(args.data_dir), "--protocol", "seft-split",
            *finetune_flags(args.model), "--train_fraction", str(fraction), "--seed", str(seed),
            *arm_flags(arm, args.base), *cut]


def run_cell(arm: str, fraction: float, seed: int, validation: str, args: argparse.Namespace) -> dict:
    flags = [] if arm in TABLE_ARMS else cell_flags(arm, fraction, seed, validation, args)
    if adopted := (shared_run(arm, fraction, seed, validation, args.model, args.base_free_rows_from)
                   or table_run(arm, fraction, seed, validation, args.model)
                   or search_run(arm, fraction, seed, validation, args.model, args.base)
                   or lpft_first_stage(arm, fraction, seed, validation, flags, args.output_dir)):
        figures = adopted
    elif arm in TABLE_ARMS:
        figures = run_table_arm(arm, fraction, seed, validation, args)
    else:
        run_dir = args.output_dir / run_name(arm, fraction, seed, validation)
        report = run_finetune(flags, run_dir, args.launcher)
        figures = {"auroc": report["test"]["auroc"]["value"], "auprc": report["test"]["auprc"]["value"],
                   "train_seconds": report["train_seconds"] + probe_seconds(run_dir)}
    _, labels, _ = summary_tables(args.data_dir, "seft-split", 0)
    base = {"base": weights_digest(args.base / "model")} if arm in FROM_THE_BASE else {}
    return {"arm": arm, "fraction": fraction, "seed": seed, "validation": validation, "model": args.model, **base,
            "train_patients": len(nested_subset(labels["train"], fraction, seed)), "git": git_commit()["commit"],
            **figures}


def cells(args: argparse.Namespace) -> list[tuple[str, float, int, str]]:
    """Every (arm, fraction, seed, validation) of the experiment, smallest fractions first: a partial run already
    answers the question that matters most to a small hospital. A subset's arms run in `ARMS`'s order, LP-FT before
    `pretrained_head`, which takes LP-FT's first stage."""
    return [(arm, fraction, seed, validation)
            for fraction in sorted(args.fractions)
            for validation in (("full", "cut") if fraction in args.cut_validation_fractions else ("full",))
            for seed in seeds_for(fraction, args) for arm in sorted(args.arms, key=ARMS.index)]


def seeds_for(fraction: float, args: argparse.Namespace) -> list[int]:
    return args.seeds if args.seeds is not None else list(range(SEEDS_BY_FRACTION.get(fraction, 3)))


def cells_of(rows: list[dict]) -> Iterator[tuple[str, float, dict[str, dict[int, dict]]]]:
    """Each (validation, fraction) with its rows by arm and seed."""
    for validation in ("full", "cut"):
        for fraction in sorted({row["fraction"] for row in rows}):
            yield validation, fraction, {arm: {row["seed"]: row for row in rows
                                               if (row["arm"], row["fraction"], row["validation"])
                                               == (arm, fraction, validation)}
                                         for arm in ARMS}


def summarise(rows: list[dict]) -> tuple[str, str]:
    """The table (mean ± std per validation, fraction and arm) and the paired gains (per seed, `COMPARISONS`), as
    Markdown."""
    table = ["| validation | fraction | train stays | arm | seeds | AUROC | AUPRC |",
             "|---|---:|---:|---|---:|---|---|"]
    gains = ["| validation | fraction | arm | versus | seeds | AUROC gain per seed | AUPRC gain per seed "
             "| AUPRC gain |",
             "|---|---:|---|---|---:|---|---|---|"]
    for validation, fraction, cell in cells_of(rows):
        for arm, by_seed in cell.items():
            if by_seed:
                figures = [mean_std_of([row[metric] for row in by_seed.values()]) for metric in ("auroc", "auprc")]
                patients = next(iter(by_seed.values()))["train_patients"]
                table.append(f"| {validation} | {fraction:g} | {patients:,} | {arm} | {len(by_seed)} | "
                             f"{' | '.join(figures)} |")
        for arm, versus in COMPARISONS:
            seeds = sorted(cell[arm].keys() & cell[versus].keys())
            if not seeds:
                continue
            per_metric = {metric: [cell[arm][seed][metric] - cell[versus][seed][metric] for seed in seeds]
                          for metric in ("auroc", "auprc")}
            listed = [", ".join(f"{gain:+.4f}" for gain in per_metric[metric]) for metric in ("auroc", "auprc")]
            gains.append(f"| {validation} | {fraction:g} | {arm} | {versus} | {len(seeds)} | {listed[0]} | "
                         f"{listed[1]} | {mean_std_of(per_metric['auprc'], '+')} |")
    return "\n".join(table), "\n".join(gains)


def baseline_gbm(cell: dict[str, dict[int, dict]]) -> str:
    """The GBM a cell's arms from the base are measured against: the one with the 50-iteration floor where it was run
    (1 % and 5 %, where it scored at least as high as the plain GBM in every cell; RESULTS, "The 50-iteration
    floor"), else the plain one."""
    return "gbm_min_iterations" if cell["gbm_min_iterations"] else "gbm"


def goal_check(rows: list[dict]) -> str:
    """The pretraining issue's goal, cell by cell, as Markdown: does an arm from the base beat the GBM's mean test
    AUPRC by more than the GBM's seed std, and scratch's mean? A line per arm, each read on the subsets it shares
    with the GBM (`baseline_gbm`) and scratch (arms with different subsets are not ranked against each other); the
    goal is met in a cell where any arm's line says yes."""
    lines = ["| validation | fraction | arm from the base | seeds | its AUPRC | GBM | GBM AUPRC | margin over the GBM "
             "| beats the GBM by more than its std | scratch AUPRC | beats scratch |",
             "|---|---:|---|---:|---|---|---|---:|---|---|---|"]
    for validation, fraction, cell in cells_of(rows):
        gbm_arm = baseline_gbm(cell)
        for arm in FROM_THE_BASE:
            seeds = sorted(cell[arm].keys() & cell[gbm_arm].keys() & cell["scratch"].keys())
            if not seeds:
                continue
            (mean, std), (gbm, gbm_std), (scratch, scratch_std) = (
                mean_and_std([cell[name][seed]["auprc"] for seed in seeds]) for name in (arm, gbm_arm, "scratch"))
            beats_gbm = "one subset: no std" if np.isnan(gbm_std) else "yes" if mean - gbm > gbm_std else "no"
            lines.append(f"| {validation} | {fraction:g} | {arm} | {len(seeds)} | {format_mean_std(mean, std)} | "
                         f"{gbm_arm} | {format_mean_std(gbm, gbm_std)} | {mean - gbm:+.4f} | {beats_gbm} | "
                         f"{format_mean_std(scratch, scratch_std)} | {'yes' if mean > scratch else 'no'} |")
    return "\n".join(lines)


def labels_the_gbm_needs(rows: list[dict]) -> str:
    """How many labelled stays the GBM needs to reach each arm from the base, as a multiple of the arm's own, read off
    the two curves' means (`baseline_gbm`, same validation; the GBM's on the arm's subsets where it has them, as
    `goal_check` pairs them): bracketed by the fewest stays at which the GBM's mean test AUPRC is higher than the
    arm's and the most stays below those at which it is not, and estimated between them on a line in log stays. A
    reading of the curves at the measured fractions, not a paired test: "fewer labelled patients" in a hospital's
    terms."""
    lines = ["| validation | arm from the base | train stays | seeds | its AUPRC "
             "| the GBM just below and just above it | labels the GBM needs, as a multiple |",
             "|---|---|---:|---:|---|---|---|"]
    for validation in ("full", "cut"):
        same_validation = [cell for kind, _, cell in cells_of(rows) if kind == validation]
        gbm_cells = [gbm for gbm in (cell[baseline_gbm(cell)] for cell in same_validation) if gbm]
        for arm in FROM_THE_BASE if gbm_cells else ():
            for by_seed in (cell[arm] for cell in same_validation if cell[arm]):
                stays = next(iter(by_seed.values()))["train_patients"]
                auprc = mean_and_std([row["auprc"] for row in by_seed.values()])[0]
                curve = [(next(iter(gbm.values()))["train_patients"],
                          mean_and_std([gbm[seed]["auprc"] for seed in (gbm.keys() & by_seed.keys() or gbm)])[0])
                         for gbm in gbm_cells]
                above = min(((n, gbm_auprc) for n, gbm_auprc in curve if gbm_auprc > auprc), default=None)
                below = max(((n, gbm_auprc) for n, gbm_auprc in curve
                             if gbm_auprc <= auprc and (above is None or n < above[0])), default=None)
                bracket = " – ".join("none measured" if point is None else f"{point[0]:,} ({point[1]:.4f})"
                                     for point in (below, above))
                lines.append(f"| {validation} | {arm} | {stays:,} | {len(by_seed)} | {auprc:.4f} | {bracket} | "
                             f"{label_multiple(auprc, stays, below, above)} |")
    return "\n".join(lines)


def label_multiple(auprc: float, stays: int, below: tuple[int, float] | None, above: tuple[int, float] | None) -> str:
    """The GBM's stays to reach `auprc`, over the arm's `stays`: between the bracketing points' multiples, and where
    both exist, about the log-linear point between them."""
    if below is None:
        return f"fewer than {above[0] / stays:.2g}×"
    if above is None:
        return f"more than {below[0] / stays:.2g}×"
    (low, low_auprc), (high, high_auprc) = below, above
    share = (auprc - low_auprc) / (high_auprc - low_auprc)  # the bracket's AUPRCs differ: one is above `auprc`
    estimate = math.exp(math.log(low) + share * (math.log(high) - math.log(low)))
    return f"{low / stays:.2g}× to {high / stays:.2g}×, about {estimate / stays:.2g}×"


def plot(rows: list[dict], path: Path) -> None:
    """AUROC and AUPRC against the number of labelled training stays (log scale), one line per arm, mean ± std over
    seeds; full validation solid, cut validation dashed. The arms stand side by side around each fraction, so that
    one's bars do not hide another's, and the legend (arms by colour, validations by line) sits below the panels."""
    figure, axes = plt.subplots(1, 2, figsize=(12, 5.4))
    plotted = [arm for arm in ARMS if any(row["arm"] == arm for row in rows)]
    styles = {"full": "-", "cut": "--"}
    for axis, metric in zip(axes, ("auroc", "auprc")):
        for place, arm in enumerate(plotted):
            shift = 1.035 ** (place - (len(plotted) - 1) / 2)  # a few percent along the log axis
            for validation, style in styles.items():
                cell = [row for row in rows if row["arm"] == arm and row["validation"] == validation]
                if not cell:
                    continue
                patients = sorted({row["train_patients"] for row in cell})
                stats = [mean_and_std([row[metric] for row in cell if row["train_patients"] == n]) for n in patients]
                axis.errorbar([n * shift for n in patients], [mean for mean, _ in stats],
                              yerr=[0.0 if np.isnan(std) else std for _, std in stats], color=arm_colour(arm),
                              linestyle=style, marker="o", markersize=4, capsize=2, linewidth=1.2)
        axis.set(xscale="log", xlabel="labelled training stays (P12, SeFT split)", ylabel=f"test {metric.upper()}")
        axis.grid(alpha=0.3)
    handles = ([Line2D([], [], color=arm_colour(arm), marker="o", label=arm) for arm in plotted]
               + [Line2D([], [], color="black", linestyle=style, label=f"{validation} validation")
                  for validation, style in styles.items()])
    figure.legend(handles=handles, loc="lower center", ncol=5, fontsize=8, frameon=False)
    figure.suptitle("Label efficiency: pretrained MedFuse against scratch and the summary-statistics GBM")
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)


def arm_colour(arm: str) -> str:
    """An arm's colour, the same in every plot: its place in `ARMS` in matplotlib's default cycle."""
    return f"C{ARMS.index(arm)}"


def refuse_other_experiments(rows: list[dict], args: argparse.Namespace) -> None:
    """A results file is one experiment: one model, one base. Rows of another would count as this one's finished
    cells and be skipped (rows from before either was recorded are the first base's). The scikit-learn arms train no
    model, so theirs is any; the GBM's rows read no base either, and are the same in every experiment."""
    weighed = args.base is not None and (args.base / "model" / "model.safetensors").exists()
    digest = weights_digest(args.base / "model") if weighed else None
    for row in rows:
        base = row.get("base", FIRST_BASE_WEIGHTS if row["arm"] in FROM_THE_BASE else digest)
        model = args.model if row["arm"] in TABLE_ARMS else row.get("model", FIRST_BASE_MODEL)
        if model != args.model or base != digest:
            raise SystemExit(f"{args.results} holds rows of --model {model} from base "
                             f"weights {base} ({row['arm']}, fraction {row['fraction']:g}, "
                             f"seed {row['seed']}); this is --model {args.model} from {digest}: give --results and "
                             "--output_dir of its own")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, help="the pretrained base's run folder (model/, feature_embeddings/)")
    parser.add_argument("--data_dir", type=Path, default=ROOT.parent / "shared" / "data" / "physionet2012")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(DEFAULT_ARMS))
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.05, 0.1, 0.25, 1.0])
    parser.add_argument("--cut_validation_fractions", type=float, nargs="*", default=[0.01, 0.05])
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="one list for every fraction (default: 10 subsets at 1 %%, 5 at 5 %%, 3 elsewhere)")
    parser.add_argument("--model", default=FIRST_BASE_MODEL,  # an architecture: the arms choose where they start
                        choices=sorted(model for model, flags in MODELS.items() if "--init_from" not in flags),
                        help="the fine-tuned arms' model and budget (benchmarks/protocol.py), to match the base's "
                             "architecture; another model is another experiment, with its own results and runs")
    parser.add_argument("--results", type=Path,
                        help="default: benchmarks/results/pretraining/[<model>/]p12_label_efficiency.json")
    parser.add_argument("--output_dir", type=Path, help="default: outputs/label-efficiency[-<model>]")
    parser.add_argument("--base_free_rows_from", type=Path,
                        help="another base's results file of this model: its scratch and GBM cells are taken, not "
                             "trained again (they read no base)")
    parser.add_argument("--launcher", default=shlex.quote(sys.executable))
    parser.add_argument("--summary_only", action="store_true", help="train nothing: summarise the finished cells")
    args = parser.parse_args()
    first_base = args.model == FIRST_BASE_MODEL
    args.results = args.results or RESULTS / ("" if first_base else args.model) / "p12_label_efficiency.json"
    args.output_dir = args.output_dir or ROOT / "outputs" / ("label-efficiency" + ("" if first_base else
                                                                                   f"-{args.model}"))
    results = ResultRows(args.results, key=("arm", "fraction", "seed", "validation"))
    if not args.summary_only:
        needed = {arm: "feature_embeddings" if arm == "pretrained_embeddings" else "model" for arm in FROM_THE_BASE}
        missing = [folder for arm, folder in needed.items()
                   if arm in args.arms and (args.base is None or not (args.base / folder).is_dir())]
        if missing:
            parser.error(f"the pretrained arms need --base, a pretraining run folder with {' and '.join(missing)}/")
        refuse_other_experiments(results.rows, args)
        results.fill(({"arm": arm, "fraction": fraction, "seed": seed, "validation": validation}
                      for arm, fraction, seed, validation in cells(args)),
                     lambda cell: run_cell(cell["arm"], cell["fraction"], cell["seed"], cell["validation"], args),
                     lambda row: f"{row['arm']}, fraction {row['fraction']:g} ({row['train_patients']} stays), seed "
                     f"{row['seed']}, {row['validation']} validation: AUROC {row['auroc']:.4f}, AUPRC "
                     f"{row['auprc']:.4f} ({row['train_seconds']:.0f} s)")
    if not results.rows:
        raise SystemExit(f"{results.path} holds no finished cell yet")
    table, gains = summarise(results.rows)
    goal, labels = goal_check(results.rows), labels_the_gbm_needs(results.rows)
    for name, text in (("table", table), ("gains", gains), ("goal", goal), ("labels", labels)):
        (args.results.parent / f"{name}.md").write_text(text + "\n")
    plot(results.rows, args.results.parent / "label_efficiency.png")
    print(table, gains, goal, labels, sep="\n\n")


if __name__ == "__main__":
    main()
