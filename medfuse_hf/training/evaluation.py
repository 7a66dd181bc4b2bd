"""Scoring patients across processes: every patient counted exactly once, whatever the number of processes."""

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

ROW_COLUMN = "row"


@torch.no_grad()
def predict(model: torch.nn.Module, dataloader: DataLoader, accelerator: Accelerator) -> dict[str, np.ndarray]:
    """Rows, labels and positive-class probabilities of the whole (prepared) dataloader, on every process.

    `gather_for_metrics` drops the samples Accelerate duplicates to even out the last batch across processes,
    so each patient appears once; rows are returned so that callers can check it.
    """
    model.eval()
    rows, labels, scores = [], [], []
    for batch in dataloader:
        row, label = batch.pop(ROW_COLUMN), batch.pop("labels")
        probability = model(**batch).logits.float().softmax(dim=-1)[:, 1]
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
