"""PNG figures a person can look at: ROC, precision-recall and calibration curves, and training curves."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: recipes run on headless machines
import matplotlib.pyplot as plt
import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay


def save_evaluation_plots(labels: np.ndarray, scores: np.ndarray, output_dir: Path, title: str) -> list[Path]:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in (
        ("roc_curve.png", lambda ax: RocCurveDisplay.from_predictions(labels, scores, ax=ax, plot_chance_level=True)),
        ("pr_curve.png",
         lambda ax: PrecisionRecallDisplay.from_predictions(labels, scores, ax=ax, plot_chance_level=True)),
        ("calibration_curve.png", lambda ax: _calibration(ax, labels, scores)),
    ):
        figure, axis = plt.subplots(figsize=(5, 5))
        draw(axis)
        axis.set_title(title)
        figure.tight_layout()
        figure.savefig(output_dir / name, dpi=120)
        plt.close(figure)
        paths.append(output_dir / name)
    return paths


def _calibration(axis, labels: np.ndarray, scores: np.ndarray) -> None:
    observed, predicted = calibration_curve(labels, scores, n_bins=10, strategy="quantile")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    axis.plot(predicted, observed, marker="o", label="model")
    axis.set_xlabel("mean predicted probability (decile)")
    axis.set_ylabel("observed positive rate")
    axis.legend()


def save_training_curves(history: list[dict], path: Path) -> Path:
    """Training loss per logged step and validation metrics per epoch, from the JSON-lines tracker."""
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(10, 4))
    train = [(entry["step"], entry["train_loss"]) for entry in history if "train_loss" in entry]
    if train:
        loss_axis.plot(*zip(*train))
    loss_axis.set(xlabel="optimizer step", ylabel="training loss", title="training loss")
    for metric in ("validation_auroc", "validation_auprc", "validation_loss"):
        points = [(entry["epoch"], entry[metric]) for entry in history if metric in entry]
        if points:
            metric_axis.plot(*zip(*points), marker="o", label=metric.removeprefix("validation_"))
    metric_axis.set(xlabel="epoch", title="validation")
    if metric_axis.lines:  # a streamed pretraining has no validation split
        metric_axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
