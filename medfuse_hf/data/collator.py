"""Batching patients for the model: tokenize, pad, attach labels; and batches grouped by length.

Patients differ a lot in length (P12: tens to over a thousand events), so random batches are mostly padding.
`LengthGroupedBatchSampler` shuffles patients, cuts them into megabatches of many batches, sorts each megabatch
by length and shuffles the resulting batches: batches of similar lengths in a random order every epoch.
transformers' `LengthGroupedSampler` does the same but caps megabatches at 4 batches on small cohorts, which
leaves about a quarter of each batch as padding on the bundled sample.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Sampler

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


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of patients of similar length, in a seeded random order that changes with `set_epoch`."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, batches_per_megabatch: int = 50):
        self.lengths = torch.as_tensor(list(lengths))
        self.batch_size = batch_size
        self.seed = seed
        self.megabatch_size = batch_size * batches_per_megabatch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.megabatch_size)
        return full * -(-self.megabatch_size // self.batch_size) + -(-rest // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator)
        batches = []
        for megabatch in order.split(self.megabatch_size):
            by_length = megabatch[self.lengths[megabatch].argsort(descending=True, stable=True)]
            batches.extend(batch.tolist() for batch in by_length.split(self.batch_size))
        for position in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[position]


def padding_fraction(batch: dict[str, torch.Tensor]) -> float:
    """Share of padded positions in a batch: the compute a batch wastes."""
    return 1.0 - batch["attention_mask"].float().mean().item()
