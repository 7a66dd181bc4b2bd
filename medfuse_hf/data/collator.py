"""Batching patients for the model: tokenize, pad, attach labels; and batches grouped by length.

Patients differ a lot in length (P12: tens to over a thousand events), so random batches are mostly padding.
`length_grouped_sampler` uses transformers' `LengthGroupedSampler` (random megabatches, sorted by length inside)
so that each batch holds patients of similar length while the order stays random across epochs.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from ..tokenization_medfuse import MedFuseTokenizer


@dataclass
class MedFuseDataCollator:
    """Turns a list of patient rows (`feature`, `value`, `time` lists and a label column) into a padded batch."""

    tokenizer: MedFuseTokenizer
    label_column: str | None = None
    pad_to_multiple_of: int | None = 8

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = dict(self.tokenizer(list(rows), return_tensors="pt", pad_to_multiple_of=self.pad_to_multiple_of))
        if self.label_column is not None:
            labels = [row[self.label_column] for row in rows]
            if any(label is None for label in labels):
                raise ValueError(f"a patient in this batch has no {self.label_column!r}: filter unlabeled patients first")
            batch["labels"] = torch.tensor(labels)
        return batch


def length_grouped_sampler(lengths: Sequence[int], batch_size: int, seed: int = 0) -> LengthGroupedSampler:
    generator = torch.Generator().manual_seed(seed)
    return LengthGroupedSampler(batch_size, lengths=list(lengths), generator=generator)


def padding_fraction(batch: dict[str, torch.Tensor]) -> float:
    """Share of padded positions in a batch: the compute a batch wastes."""
    return 1.0 - batch["attention_mask"].float().mean().item()
