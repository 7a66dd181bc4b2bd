"""Batching patients for the model: tokenize, pad, attach labels; and batches grouped by length.

Patients differ a lot in length (P12: tens to over a thousand events), so random batches are mostly padding.
`LengthGroupedBatchSampler` shuffles patients, cuts them into megabatches of many batches, sorts each megabatch
by length and shuffles the resulting batches: batches of similar lengths in a random order every epoch.
transformers' `LengthGroupedSampler` does the same but caps megabatches at 4 batches on small cohorts, which
leaves about a quarter of each batch as padding on the bundled sample. A stream has no sampler, so
`LengthGroupedStream` does the same within windows of the stream.
"""

import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import datasets
import torch
from torch.utils.data import BatchSampler, Dataset, IterableDataset, Sampler

from ..tokenization_medfuse import MedFuseTokenizer
from .forecasting import forecasting_batch

# How many times the epoch had drawn a row before (`CountedDraws`): a key of its random draws (`RowDraws`).
DRAW_COLUMN = "draw"


@dataclass(kw_only=True)
class RowDraws:
    """Where a collator's random draws for a row (a patient) come from.

    With `row_key`, from (`seed`, the epoch `set_epoch` gave, the row's `row_key` value) alone: the same whichever
    batch or process the row lands in, and after a resumption, where the global `random` state would be off
    (Accelerate collates a batch ahead, so the state a checkpoint saves is a batch on, and a resumed stream collates
    the batches it skips). A row drawn again in the same epoch (balanced sampling, through `CountedDraws`) gets
    other draws each time. Else from `rng`, or from Python's global `random`.
    """

    rng: random.Random | None = None
    row_key: str | None = None
    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def draws_for(self, row: Mapping) -> random.Random:
        if self.row_key is None:
            return self.rng or random
        if self.row_key not in row:
            raise ValueError(f"a patient has no {self.row_key!r} column, which keys its random draws; "
                             f"it has {sorted(row)}")
        again = row.get(DRAW_COLUMN, 0)  # the first draw keeps the key a row drawn once has
        return random.Random(f"{self.seed}:{self.epoch}:{row[self.row_key]}" + (f":{again}" if again else ""))


@dataclass
class MedFuseDataCollator(RowDraws):
    """Turns a list of patient rows (`feature`, `value`, `time` lists and a label column) into a padded batch."""

    tokenizer: MedFuseTokenizer
    label_column: str | None = None
    pad_to_multiple_of: int | None = 8
    extra_columns: tuple[str, ...] = ()  # numeric per-patient columns passed through, e.g. a row index
    # Training augmentation: each event is left out with this probability (never every event of a patient, nor a
    # pinned feature's: the statics a model reads are always there at test), so the model cannot lean on any one
    # measurement.
    event_dropout: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.event_dropout < 1.0:
            raise ValueError(f"event_dropout must lie in [0, 1), got {self.event_dropout}")

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        if self.event_dropout:
            rows = [self._drop_events(row) for row in rows]
        batch = dict(self.tokenizer(list(rows), return_tensors="pt", pad_to_multiple_of=self.pad_to_multiple_of))
        for column in self.extra_columns:
            batch[column] = torch.tensor([row[column] for row in rows])
        if self.label_column is not None:
            labels = [row[self.label_column] for row in rows]
            if any(label is None for label in labels):
                raise ValueError(f"a patient in this batch has no {self.label_column!r}: "
                                 "filter unlabeled patients first")
            batch["labels"] = torch.tensor(labels)
        return batch

    def _drop_events(self, row: dict) -> dict:
        draw = self.draws_for(row)
        vocabulary, pinned = self.tokenizer.feature_vocabulary, self.tokenizer.pinned_feature_ids
        keep = [(bool(pinned) and vocabulary.id_of(str(name)) in pinned) or draw.random() >= self.event_dropout
                for name in row["feature"]]
        if keep and not any(keep):
            keep[draw.randrange(len(keep))] = True
        return {**row, **{column: [item for item, kept in zip(row[column], keep) if kept]
                          for column in ("feature", "value", "time")}}


@dataclass
class ForecastingCollator(RowDraws):
    """Self-supervised batches (STraTS' forecasting task) for `MedFuseForPreTraining`, no labels needed.

    Each patient gets a random cut-off between `min_observation_hours` (or its first event) and `horizon_hours`
    before its last event: the events before the cut-off are the input, each feature's mean value in the
    `horizon_hours` after it the target. Each patient's cut-off is drawn as `RowDraws` says.
    """

    tokenizer: MedFuseTokenizer
    horizon_hours: float = 2.0
    min_observation_hours: float = 12.0
    pad_to_multiple_of: int | None = 8

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        cutoffs = []
        for row in rows:
            times = [float(time) for time in row["time"]]
            low, high = max(self.min_observation_hours, min(times) + 1e-3), max(times) - self.horizon_hours
            # Too short a record for a window: every event is input, the targets are empty (masked out).
            cutoffs.append(self.draws_for(row).uniform(low, high) if high > low else max(times) + 1e-3)
        return dict(forecasting_batch(self.tokenizer, list(rows), cutoffs, self.horizon_hours,
                                      self.pad_to_multiple_of))


@dataclass
class MaskedValueCollator(RowDraws):
    """Self-supervised batches for masked-value modeling in `MedFuseForPreTraining`, no labels needed.

    Each numeric event's value is hidden with probability `mask_probability` (at least one per patient that has
    numeric events), and the model predicts it back from the rest of the stay. Hidden values are also zeroed in
    `values`, so no fusion can see them. Categorical and [UNK] events are never hidden: they have no value to
    predict. Each patient's events are drawn as `RowDraws` says, in the order the tokenizer keeps them, so padding
    does not move them.
    """

    tokenizer: MedFuseTokenizer
    mask_probability: float = 0.15
    pad_to_multiple_of: int | None = 8

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_probability < 1.0:
            raise ValueError(f"mask_probability must lie in (0, 1), got {self.mask_probability}")
        self.is_numeric = torch.from_numpy(self.tokenizer.feature_vocabulary.numeric_mask())

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = dict(self.tokenizer(list(rows), return_tensors="pt", pad_to_multiple_of=self.pad_to_multiple_of))
        eligible = self.is_numeric[batch["feature_ids"]] & batch["attention_mask"].bool()
        hidden = torch.zeros_like(eligible)
        for index, row in enumerate(rows):
            numeric = eligible[index].nonzero().squeeze(1).tolist()
            if numeric:  # at least one hidden value per patient that has any
                draw = self.draws_for(row)
                chosen = [position for position in numeric if draw.random() < self.mask_probability]
                hidden[index, chosen or [draw.choice(numeric)]] = True
        batch["masked_values"] = batch["values"]
        batch["values"] = batch["values"].masked_fill(hidden, 0.0)
        batch["value_mask"] = hidden
        return batch


class CountedDraws(Sampler[list[tuple[int, int]]]):
    """A batch sampler's batches, each row as (index, how many times the epoch drew it before): sampling with
    replacement (balanced sampling) draws a patient several times an epoch, and each copy should lose other events
    to event dropout, as a function of the epoch's order alone, so that a resumed run sees the same batches. Read
    through `RowsWithDraws`."""

    def __init__(self, batches: BatchSampler):
        self.batches = batches
        self.batch_size, self.drop_last = batches.batch_size, batches.drop_last  # what Accelerate shards by

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        drawn = Counter()
        for batch in self.batches:
            counted = []
            for index in batch:
                counted.append((index, drawn[index]))
                drawn[index] += 1
            yield counted


class RowsWithDraws(Dataset):
    """A dataset's rows fetched by `CountedDraws`' (index, draw) pairs, each with its draw in `DRAW_COLUMN`."""

    def __init__(self, rows: datasets.Dataset):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[dict]:
        rows = self.rows.__getitems__([index for index, _ in keys])  # one Arrow read a batch, as a DataLoader makes
        return [{**row, DRAW_COLUMN: draw} for row, (_, draw) in zip(rows, keys)]


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of patients of similar length, in a seeded random order that changes with `set_epoch`.

    The patients that do not fill a last batch are drawn at random each epoch, not taken from the length order
    (which would leave out the shortest patients every epoch: half of a 1 % cohort, never trained on). With
    `drop_last` they are left out: every batch is then full, which Accelerate needs to split batches evenly across
    processes without padding them with repeated patients. Without it, they come last as one short batch, where
    Accelerate expects it.
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, seed: int = 0, drop_last: bool = False,
        batches_per_megabatch: int = 50
    ):
        self.lengths = torch.as_tensor(list(lengths))
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.seed = seed
        self.megabatch_size = batch_size * batches_per_megabatch  # a multiple of batch_size: one short batch at most
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator)
        full = len(order) - len(order) % self.batch_size
        batches = []
        for megabatch in order[:full].split(self.megabatch_size):  # megabatches are whole batches: all full
            by_length = megabatch[self.lengths[megabatch].argsort(descending=True, stable=True)]
            batches.extend(batch.tolist() for batch in by_length.split(self.batch_size))
        for position in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[position]
        if full < len(order) and not self.drop_last:
            yield order[full:].tolist()


class LengthGroupedStream(IterableDataset):
    """A stream of patients (shuffled within its own buffer) re-ordered within windows of `batches_per_window`
    batches, so that each `batch_size` consecutive patients, one batch of a DataLoader over it, are stays of similar
    length. A random streamed batch pads to its longest stay: on the public pretraining corpus, batches of 64 stays
    fill 35 % of their positions at random and 92 % grouped (`benchmarks/streamed_grouping.py`). A window's batches
    come in a seeded
    random order that changes with `set_epoch`; only the stream's last window can leave a short batch, and it comes
    last, where a DataLoader makes its short batch. Memory: one window of patients."""

    def __init__(self, patients, batch_size: int, seed: int = 0, batches_per_window: int = 20):
        self.patients, self.batch_size, self.seed = patients, batch_size, seed
        self.window = batch_size * batches_per_window  # whole batches: no short batch inside the stream
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The window order, and the stream's own shuffle where it has one, for `epoch`."""
        self.epoch = epoch
        if hasattr(self.patients, "set_epoch"):
            self.patients.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict]:
        generator, window = random.Random(f"{self.seed}-{self.epoch}"), []
        for patient in self.patients:
            window.append(patient)
            if len(window) == self.window:
                yield from self._grouped(window, generator)
                window = []
        yield from self._grouped(window, generator)

    def _grouped(self, window: list[dict], generator: random.Random) -> Iterator[dict]:
        by_length = sorted(window, key=lambda patient: len(patient["feature"]), reverse=True)
        full = len(by_length) - len(by_length) % self.batch_size
        batches = [by_length[start:start + self.batch_size] for start in range(0, full, self.batch_size)]
        generator.shuffle(batches)
        for batch in batches:
            yield from batch
        yield from by_length[full:]


def padding_fraction(batch: dict[str, torch.Tensor]) -> float:
    """Share of padded positions in a batch: the compute a batch wastes."""
    return 1.0 - batch["attention_mask"].float().mean().item()
