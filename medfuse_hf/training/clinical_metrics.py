"""The project's clinical metrics as an `evaluate` metric module: AUROC, AUPRC, accuracy, F1, min(Re, Pr) and the
Brier score of positive-class probabilities, with optional bootstrap 95% intervals.

    metric = evaluate.load(medfuse_hf.training.CLINICAL_METRICS)   # a local file: works offline
    metric.compute(predictions=probabilities, references=labels, bootstrap_resamples=1000)

It computes with `medfuse_hf.training.metrics`, the code the recipes report with, so a `Trainer` run and a recipe
run score alike; `trainer_compute_metrics` adapts it to `Trainer(compute_metrics=...)`.
"""

import datasets
import evaluate
import numpy as np

from medfuse_hf.training.metrics import binary_metrics, bootstrap_intervals

_DESCRIPTION = "Binary clinical outcome metrics (AUROC, AUPRC, accuracy, F1, min(recall, precision), Brier)."
_KWARGS_DESCRIPTION = """
Args:
    predictions: positive-class probabilities, one per patient.
    references: 0/1 labels.
    threshold: cut for the threshold metrics (default 0.5).
    bootstrap_resamples: with N > 0, each metric is {"value", "low", "high"} over N label-stratified resamples.
    seed: the resamples' seed.
"""


class ClinicalMetrics(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, threshold: float = 0.5, bootstrap_resamples: int = 0, seed: int = 0):
        labels, scores = np.asarray(references), np.asarray(predictions, dtype=np.float64)
        if bootstrap_resamples:
            return bootstrap_intervals(labels, scores, bootstrap_resamples, seed, threshold)
        return binary_metrics(labels, scores, threshold)
