"""Scoring patients across processes (every patient counted exactly once, whatever the number of processes),
and the report a scored split gets: metrics with bootstrap intervals, predictions and plots."""

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from ..data import MedFuseDataCollator
from ..data.patient_table import ROW_COLUMN
from ..tokenization_medfuse import MedFuseTokenizer
from .metrics import bootstrap_intervals
from .plots import save_evaluation_plots

# Each patient's risk of the positive class at the training cohort's prevalence, as test_predictions.csv and
# predict.py's scores name it. Runs saved before it was named so wrote it as `score` (`read_test_predictions`).
PROBABILITY_COLUMN = "probability"


def with_row_numbers(dataset: datasets.Dataset) -> datasets.Dataset:
    """Each patient tagged with its row in `dataset`: what a prediction is matched back by, and what keys a training
    collator's random draws."""
    return dataset.add_column(ROW_COLUMN, list(range(len(dataset))))


def evaluation_loader(dataset: datasets.Dataset, collate: Callable, batch_size: int) -> DataLoader:
    """Patients sorted by length (batches carry little padding), each tagged with its row for `predict`."""
    tagged = with_row_numbers(dataset)
    by_length = np.argsort([len(features) for features in tagged["feature"]], kind="stable")
    return DataLoader(tagged.select(by_length), batch_size=batch_size, collate_fn=collate)


def known_events(patients: datasets.Dataset, tokenizer: MedFuseTokenizer) -> tuple[list[int], Counter]:
    """Each patient's number of events of features in the model's vocabulary, and the unknown features' counts."""
    vocabulary = tokenizer.feature_vocabulary
    unknown: Counter = Counter()
    counts = []
    for features in patients["feature"]:
        known = [name in vocabulary for name in features]
        unknown.update(name for name, is_known in zip(features, known) if not is_known)
        counts.append(int(sum(known)))
    return counts, unknown


def patients_with_known_events(patients: datasets.Dataset, tokenizer: MedFuseTokenizer, id_column: str
                               ) -> tuple[datasets.Dataset, list]:
    """The patients with an event of a feature the model knows, and the ids of the others: with unknown features
    dropped, they have nothing left to score."""
    counts, _ = known_events(patients, tokenizer)
    left_out = [patient for patient, count in zip(patients[id_column], counts) if count == 0]
    return patients.select([row for row, count in enumerate(counts) if count > 0]), left_out


@torch.no_grad()
def per_patient_outputs(
    dataset: datasets.Dataset,
    tokenizer: MedFuseTokenizer,
    output: Callable[[dict], torch.Tensor],
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """`output(batch)` of every patient, one row each in the dataset's order, in this process alone: scoring outside
    a training run (`recipes/predict.py`, benchmarks). Batches are formed by length (`evaluation_loader`); padding
    does not change a patient's output. Batches go to `device`, where the model `output` runs is."""
    collate = MedFuseDataCollator(tokenizer, extra_columns=(ROW_COLUMN,))
    rows, outputs = [], []
    for batch in evaluation_loader(dataset, collate, batch_size):
        rows.append(batch.pop(ROW_COLUMN))
        outputs.append(output({name: tensor.to(device) for name, tensor in batch.items()}).float().cpu())
    by_length = torch.cat(outputs)
    in_order = torch.empty_like(by_length)
    in_order[torch.cat(rows)] = by_length
    return in_order.numpy()


@torch.no_grad()
def predict(model: torch.nn.Module, dataloader: DataLoader, accelerator: Accelerator) -> dict[str, np.ndarray]:
    """Rows, labels and positive-class probabilities of the whole (prepared) dataloader, on every process.

    `gather_for_metrics` drops the samples Accelerate duplicates to even out the last batch across processes,
    so each patient appears once; rows are returned so that callers can check it.
    """
    model.eval()
    risks = accelerator.unwrap_model(model).risks
    rows, labels, scores = [], [], []
    for batch in dataloader:
        row, label = batch.pop(ROW_COLUMN), batch.pop("labels")
        probability = risks(model(**batch).logits)[:, 1]
        row, label, probability = accelerator.gather_for_metrics((row, label, probability))
        rows.append(row.cpu())
        labels.append(label.cpu())
        scores.append(probability.cpu())
    model.train()
    return {
        "rows": torch.cat(rows).numpy(),
        "labels": torch.cat(labels).numpy(),
        "scores": torch.cat(scores).numpy(),
    }


def write_report(
    predictions: dict[str, np.ndarray],
    dataset: datasets.Dataset,
    id_column: str,
    output_dir: Path,
    title: str,
    bootstrap_resamples: int = 1000,
    seed: int = 0,
    extra: dict | None = None,
) -> dict:
    """`test_metrics.json` (bootstrap 95% intervals), `test_predictions.csv` and `plots/`; returns the metrics."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    labels, scores = predictions["labels"], predictions["scores"]
    report = {**(extra or {}), "dataset": title, "test_patients": int(len(labels)),
              "test": bootstrap_intervals(labels, scores, bootstrap_resamples, seed)}
    (output_dir / "test_metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    ids = np.asarray(dataset[id_column])[predictions["rows"]]
    # pandas keeps each column's type: ids stay ids ("132539", "p000001"), not "132539.0" as a float array makes them
    pd.DataFrame({id_column: ids, "label": labels.astype(int), PROBABILITY_COLUMN: scores}).to_csv(
        output_dir / "test_predictions.csv", index=False)
    save_evaluation_plots(labels, scores, output_dir / "plots", title)
    return report


def read_test_predictions(run_dir: Path, id_column: str | None = None) -> pd.DataFrame:
    """A run's `test_predictions.csv`, indexed by patient id as text (`id_column`, else its first column, whatever
    the cohort calls it), with `label` and `probability`. Older runs' `score` column is read as `probability`: the
    same ranking, and so the same AUROC and AUPRC (those saved before `logit_offsets` hold the class-weighted model's
    scores, see `benchmarks/calibration.py`)."""
    path = Path(run_dir) / "test_predictions.csv"
    id_column = id_column or pd.read_csv(path, nrows=0).columns[0]
    frame = pd.read_csv(path, dtype={id_column: str})
    return frame.rename(columns={"score": PROBABILITY_COLUMN}).set_index(id_column)


def summary_line(report: dict) -> str:
    """The one line a run ends with."""
    auroc, auprc = report["test"]["auroc"], report["test"]["auprc"]
    return (f"{report['dataset']}: test AUROC {auroc['value']:.4f} [{auroc['low']:.4f}, {auroc['high']:.4f}], "
            f"AUPRC {auprc['value']:.4f} [{auprc['low']:.4f}, {auprc['high']:.4f}] on {report['test_patients']} "
            "patients")
