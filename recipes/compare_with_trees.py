"""Does MedFuse beat the model a clinical data scientist fits first, on this hospital's own data? Fits gradient-boosted
trees on per-stay summary statistics (`medfuse_hf.training.summary_baseline`, tuned and early-stopped on validation)
on exactly the patients a finished fine-tuning run trained, validated and was tested on, and compares the two on the
same test patients with a paired bootstrap.

    python recipes/compare_with_trees.py --run_dir outputs/p12-seft

Writes `comparison_with_trees.json` and `comparison_with_trees.md` into the run folder, and the same table into its
model card (`model/README.md`), so that a hospital deciding whether to use MedFuse need not trust another cohort's
numbers.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from medfuse_hf.data.clinical_features import CATEGORICAL_FEATURES
from medfuse_hf.progress import quiet_library_progress_bars
from medfuse_hf.training import binary_metrics
from medfuse_hf.training.cohorts import load_cohort_from_settings, training_splits
from medfuse_hf.training.metrics import format_gap, paired_bootstrap_difference
from medfuse_hf.training.summary_baseline import SummaryTable, fit_gbm

CARD_SECTION = "## Compared with trees on this cohort"


def comparison(run_dir: Path, num_resamples: int) -> dict:
    """The GBM on the run's own splits, and MedFuse minus the GBM on the run's test patients."""
    settings = json.loads((run_dir / "run_info.json").read_text())["config"]
    cohort = load_cohort_from_settings(settings)
    splits = training_splits(argparse.Namespace(**settings), cohort)
    label, id_column = cohort.label_column, cohort.id_column
    summarise = SummaryTable(splits["train"], categorical=CATEGORICAL_FEATURES)
    tables = {name: summarise(part) for name, part in splits.items()}
    labels = {name: np.asarray(part[label]) for name, part in splits.items()}
    gbm = fit_gbm((tables["train"], labels["train"]), (tables["validation"], labels["validation"]), tables["test"],
                  settings["seed"])
    gbm_scores = pd.Series(gbm.test_scores, index=[str(patient) for patient in splits["test"][id_column]])
    medfuse = pd.read_csv(run_dir / "test_predictions.csv", dtype={id_column: str}).set_index(id_column)
    if set(medfuse.index) != set(gbm_scores.index):
        raise SystemExit(f"{run_dir}: its test predictions are not of this cohort's test split "
                         f"({len(medfuse)} against {len(gbm_scores)} patients): was the cohort changed since?")
    gbm_scores = gbm_scores[medfuse.index]
    medfuse_metrics, gbm_metrics = (binary_metrics(medfuse["label"], scores)
                                    for scores in (medfuse["score"], gbm_scores))
    return {
        "test_patients": len(medfuse),
        "medfuse": {metric: medfuse_metrics[metric] for metric in ("auroc", "auprc")},
        "gbm": {metric: gbm_metrics[metric] for metric in ("auroc", "auprc")},
        "gbm_settings": gbm.settings,
        "medfuse_minus_gbm": {metric: paired_bootstrap_difference(medfuse["label"], medfuse["score"], gbm_scores,
                                                                   metric, num_resamples, settings["seed"])
                              for metric in ("auroc", "auprc")},
        "num_resamples": num_resamples,
    }


def as_markdown(result: dict) -> str:
    gaps = result["medfuse_minus_gbm"]
    return "\n".join([
        CARD_SECTION, "",
        f"The same {result['test_patients']:,} test patients, scored by this model and by gradient-boosted trees on "
        "per-stay summary statistics fitted on its training split and early-stopped on its validation split "
        "(`recipes/compare_with_trees.py`). Gaps are paired, with bootstrap 95% intervals "
        f"({result['num_resamples']:,} resamples).", "",
        "| | AUROC | AUPRC |", "|---|---|---|",
        f"| MedFuse | {result['medfuse']['auroc']:.4f} | {result['medfuse']['auprc']:.4f} |",
        f"| GBM on summaries | {result['gbm']['auroc']:.4f} | {result['gbm']['auprc']:.4f} |",
        f"| MedFuse − GBM | {format_gap(gaps['auroc'])} | {format_gap(gaps['auprc'])} |",
    ]) + "\n"


def add_to_card(card: Path, section: str) -> None:
    """The card with this section in place of an earlier one: a second comparison replaces the first."""
    text = card.read_text()
    kept = text.split(CARD_SECTION)[0].rstrip()
    card.write_text(f"{kept}\n\n{section}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", type=Path, required=True, help="a finished recipes/finetune.py run")
    parser.add_argument("--bootstrap_resamples", type=int, default=1000)
    args = parser.parse_args()
    quiet_library_progress_bars()
    result = comparison(args.run_dir, args.bootstrap_resamples)
    section = as_markdown(result)
    (args.run_dir / "comparison_with_trees.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.run_dir / "comparison_with_trees.md").write_text(section)
    if (args.run_dir / "model" / "README.md").exists():
        add_to_card(args.run_dir / "model" / "README.md", section)
    print(section)


if __name__ == "__main__":
    main()
