"""How well finished runs' test risks match the outcome rate, with and without the logit offsets that take class
weighting back off (`MedFuseForSequenceClassification.risks`). Reads each run folder's `test_predictions.csv` and,
for a MedFuse run, `model/config.json`; trains nothing.

    python benchmarks/calibration.py --runs outputs/p12-table/seft-split-{gbm_summary,medfuse_round_two_lpft}-seed*

Runs saved before the offsets existed hold the weighted model's scores: their offsets are computed from the
config's `class_weights`. Runs saved since hold risks already: the weighted scores are computed back from them.
"""

import argparse
import json
import math
from pathlib import Path

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from medfuse_hf.training.evaluation import PROBABILITY_COLUMN, read_test_predictions


def log_odds_shift(run: Path) -> tuple[float, bool]:
    """What the run's training added to the positive class's log-odds, and whether its saved scores are risks
    already (offsets in its config). A run without class weighting (a GBM) shifts nothing."""
    config_path = run / "model" / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    if config.get("logit_offsets"):
        offsets = config["logit_offsets"]
        return offsets[0] - offsets[1], True
    weights = config.get("class_weights")
    return (math.log(weights[1] / weights[0]), False) if weights else (0.0, True)


def figures(labels: np.ndarray, risks: np.ndarray) -> dict[str, float]:
    """Mean risk against the outcome rate, Brier score, and the expected calibration error over risk deciles."""
    observed, predicted = calibration_curve(labels, risks, n_bins=10, strategy="quantile")
    return {"mean_risk": float(risks.mean()), "brier": float(brier_score_loss(labels, risks)),
            "decile_calibration_error": float(np.mean(np.abs(observed - predicted)))}


def cell(values: dict[str, float] | None) -> str:
    if values is None:
        return "(no weighting)"
    return f"{values['mean_risk']:.3f} / {values['brier']:.4f} / {values['decile_calibration_error']:.3f}"


def shifted(scores: np.ndarray, log_odds: float) -> np.ndarray:
    scores = np.clip(scores, 1e-12, 1 - 1e-12)
    return 1 / (1 + np.exp(-(np.log(scores / (1 - scores)) + log_odds)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="finished run folders")
    parser.add_argument("--results", type=Path, help="also write the rows to this JSON")
    args = parser.parse_args()
    rows = []
    print("| run | outcome rate | weighted scores: mean / Brier / decile error | risks: mean / Brier / decile error |")
    print("|---|---:|---|---|")
    for run in args.runs:
        predictions = read_test_predictions(run)
        labels, scores = predictions["label"].to_numpy(), predictions[PROBABILITY_COLUMN].to_numpy()
        shift, saved_as_risks = log_odds_shift(run)
        risks = scores if saved_as_risks else shifted(scores, -shift)
        weighted = shifted(risks, shift) if shift else None
        row = {"run": run.name, "outcome_rate": float(labels.mean()), "log_odds_shift": shift,
               "risks": figures(labels, risks), "weighted_scores": figures(labels, weighted) if shift else None}
        rows.append(row)
        print(f"| {run.name} | {row['outcome_rate']:.3f} | {cell(row['weighted_scores'])} | {cell(row['risks'])} |")
    if args.results:
        args.results.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
