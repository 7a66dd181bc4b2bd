"""Binary classification metrics with bootstrap 95% intervals, all from scikit-learn.

scikit-learn computes them; `clinical_metrics.py` beside this file serves the same functions as an `evaluate`
metric module (a local file, so `evaluate.load` works offline, as hospital machines often are; the Hub's metric
scripts are fetched at load time and have no AUPRC). min(Re, Pr) is the PhysioNet 2012 challenge's own score.
"""

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

CLINICAL_METRICS = str(Path(__file__).with_name("clinical_metrics.py"))  # for evaluate.load
METRICS = ("auroc", "auprc", "accuracy", "f1", "min_recall_precision", "brier")
RANKING_SCORES = {"auroc": roc_auc_score, "auprc": average_precision_score}  # threshold-free, from the scores


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUROC, AUPRC, and at `threshold`: accuracy, F1, min(recall, precision); Brier score of the probabilities."""
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be matching 1-D arrays")
    if len(np.unique(labels)) < 2:
        raise ValueError("AUROC and AUPRC need both classes among the labels")
    predicted = (scores >= threshold).astype(int)
    return {
        **{name: float(score(labels, scores)) for name, score in RANKING_SCORES.items()},
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1": float(f1_score(labels, predicted, zero_division=0)),
        "min_recall_precision": float(
            min(recall_score(labels, predicted, zero_division=0), precision_score(labels, predicted, zero_division=0))
        ),
        "brier": float(brier_score_loss(labels, scores)),
    }


def accuracy_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold of highest accuracy on these (validation) patients, to report test accuracy at a threshold
    chosen without the test set: with class weights or an imbalanced outcome, 0.5 is an arbitrary cut."""
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    # Predicting the top k as positive: accuracy = (true positives among them + negatives outside them) / n.
    correct = np.concatenate([[0], np.cumsum(2 * labels[order] - 1)]) + (labels == 0).sum()
    cuts = np.concatenate([[np.inf], scores[order]])
    distinct = np.concatenate([scores[order][:-1] != scores[order][1:], [True]])  # cut only between distinct scores
    best = int(np.argmax(np.where(np.concatenate([[True], distinct]), correct, -1)))
    return float(cuts[best])


def bootstrap_intervals(
    labels: np.ndarray, scores: np.ndarray, num_resamples: int = 1000, seed: int = 0, threshold: float = 0.5
) -> dict[str, dict[str, float]]:
    """Point estimate and percentile 95% interval of every metric over patient-level bootstrap resamples
    (stratified by label)."""
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64)
    samples = {name: [] for name in METRICS}
    for rows in stratified_resamples(labels, num_resamples, seed):
        for name, value in binary_metrics(labels[rows], scores[rows], threshold).items():
            samples[name].append(value)
    point = binary_metrics(labels, scores, threshold)
    return {
        name: {"value": point[name], "low": float(np.percentile(values, 2.5)),
               "high": float(np.percentile(values, 97.5))}
        for name, values in samples.items()
    }


def stratified_resamples(labels: np.ndarray, num_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Row indices of bootstrap resamples drawn within each class, so every resample keeps both classes (AUROC is
    undefined otherwise) and the positive rate of the test set."""
    rng = np.random.default_rng(seed)
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    for _ in range(num_resamples):
        yield np.concatenate([rng.choice(positives, positives.size), rng.choice(negatives, negatives.size)])


def paired_bootstrap_difference(
    labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, metric: str = "auprc",
    num_resamples: int = 1000, seed: int = 0,
) -> dict[str, float]:
    """metric(a) - metric(b) on the same patients, with a percentile 95% interval over resamples that score both
    models on the same patients: how large a gap the test set's own sampling noise makes. The resamples keep each
    class's count (`stratified_resamples`), so the interval leaves out the noise of the positive rate itself and is
    somewhat narrower than an unstratified one."""
    labels = np.asarray(labels).astype(int)
    scores_a, scores_b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    score = RANKING_SCORES[metric]
    gaps = [score(labels[rows], scores_a[rows]) - score(labels[rows], scores_b[rows])
            for rows in stratified_resamples(labels, num_resamples, seed)]
    return {"value": float(score(labels, scores_a) - score(labels, scores_b)),
            "low": float(np.percentile(gaps, 2.5)), "high": float(np.percentile(gaps, 97.5))}


def mean_and_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of one metric over seeds; the std is NaN for a single seed.

    Sample, not population, std: three to five seeds are a sample of what another seed would give, and the
    population formula would understate the spread by up to 18 % at three seeds.
    """
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else float("nan")


def format_mean_std(mean: float, std: float, sign: str = "") -> str:
    """`0.8582 ± 0.0109` for a table; the mean alone when there is no spread to show (one seed), and said to be the
    same on every seed where the seeds agree exactly (a deterministic arm: its seeds are not three measurements)."""
    if std < 1e-12:  # zero but for the rounding of the mean
        return f"{mean:{sign}.4f} (same on every seed)"
    return f"{mean:{sign}.4f}" + ("" if math.isnan(std) else f" ± {std:.4f}")


def mean_std_of(values: list[float], sign: str = "") -> str:
    """A table cell: the mean ± sample std of one metric over seeds (`mean_and_std`, `format_mean_std`)."""
    return format_mean_std(*mean_and_std(values), sign)


def format_gap(gap: dict) -> str:
    """A paired difference with its bootstrap interval (`paired_bootstrap_difference`): +0.0123 [-0.0040, +0.0290]."""
    return f"{gap['value']:+.4f} [{gap['low']:+.4f}, {gap['high']:+.4f}]"


def trainer_compute_metrics(eval_prediction) -> dict[str, float]:
    """`Trainer(compute_metrics=trainer_compute_metrics)`: the clinical metrics of a binary classifier's logits."""
    import evaluate

    logits = np.asarray(eval_prediction.predictions)
    logits = logits[0] if isinstance(eval_prediction.predictions, tuple) else logits
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities = (shifted / shifted.sum(axis=-1, keepdims=True))[:, 1]
    return evaluate.load(CLINICAL_METRICS).compute(predictions=probabilities, references=eval_prediction.label_ids)
