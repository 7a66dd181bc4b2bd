"""What every loader shares: a patient-per-row table builder and the summary of what was read and skipped.

Loaders stream their sources one patient at a time and append flat arrays here, so the whole cohort exists once,
as Arrow columns (`feature`, `value`, `time` lists plus scalar fields), never as Python lists of every event.
"""

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field

import datasets
import numpy as np
import pyarrow as pa
from datasets.table import InMemoryTable

logger = logging.getLogger(__name__)

EXAMPLES_PER_REASON = 5
# The row number the recipes tag each patient with, to match its predictions back.
ROW_COLUMN = "row"
# A patient table's own columns, which a labels or patients table joined to it must not bring again.
PATIENT_TABLE_COLUMNS = ("patient_id", "feature", "value", "time", ROW_COLUMN)


@dataclass
class LoadSummary:
    """Counts of what a loader read, kept and skipped, with the first places (file:line) of each skip reason."""

    source: str
    patients_read: int = 0
    patients_kept: int = 0
    events_read: int = 0
    events_kept: int = 0
    skipped_events: Counter = field(default_factory=Counter)
    skipped_patients: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)  # feature -> the unit its kept values are in, where read
    # feature -> its events that gave no unit, read in the unit of the feature's other events (`units`)
    events_without_unit: dict[str, int] = field(default_factory=dict)

    def skip_event(self, reason: str, where: str, count: int = 1) -> None:
        self.skipped_events[reason] += count
        self._remember(reason, where)

    def skip_patient(self, reason: str, where: str) -> None:
        self.skipped_patients[reason] += 1
        self._remember(reason, where)

    def note(self, reason: str, where: str, count: int = 1) -> None:
        """Something worth knowing that lost no data (e.g. rows out of time order, which are sorted)."""
        self.notes[reason] += count
        self._remember(reason, where)

    def _remember(self, reason: str, where: str) -> None:
        places = self.examples.setdefault(reason, [])
        if len(places) < EXAMPLES_PER_REASON and where not in places:
            places.append(where)

    def __str__(self) -> str:
        lines = [
            f"{self.source}: {self.patients_kept:,} of {self.patients_read:,} patients kept, "
            f"{self.events_kept:,} of {self.events_read:,} events kept"
        ]
        for verb, counter in (("skipped", self.skipped_events), ("skipped", self.skipped_patients),
                              ("noted", self.notes)):
            kind = "patients" if counter is self.skipped_patients else "events"
            for reason, count in counter.most_common():
                lines.append(f"  {verb} {count:,} {kind}: {reason} (e.g. {', '.join(self.examples[reason])})")
        return "\n".join(lines)

    def log(self) -> None:
        """Warn when anything was skipped, so that no drop is silent."""
        level = logging.WARNING if self.skipped_events or self.skipped_patients else logging.INFO
        logger.log(level, "%s", self)


class PatientTableBuilder:
    """Accumulates patients as flat arrays and offsets, then builds one `datasets.Dataset`."""

    def __init__(self, feature_names: list[str]):
        self.feature_names = list(feature_names)
        self._feature_codes: list[np.ndarray] = []
        self._values: list[np.ndarray] = []
        self._times: list[np.ndarray] = []
        self._lengths: list[int] = []
        self._fields: dict[str, list] = {}

    def add(self, feature_codes: np.ndarray, values: np.ndarray, times: np.ndarray, **fields) -> None:
        """One patient: events as codes into `feature_names`, values and hours, sorted by time; scalar fields."""
        order = np.argsort(times, kind="stable")
        self._feature_codes.append(np.asarray(feature_codes, dtype=np.int32)[order])
        self._values.append(np.asarray(values, dtype=np.float64)[order])
        self._times.append(np.asarray(times, dtype=np.float32)[order])
        self._lengths.append(len(order))
        for key in [*fields, *(key for key in self._fields if key not in fields)]:
            self._fields.setdefault(key, [None] * (len(self._lengths) - 1)).append(fields.get(key))

    def __len__(self) -> int:
        return len(self._lengths)

    def finish(self, summary: LoadSummary, return_summary: bool):
        """What every loader returns: the dataset, with its logged summary when asked for."""
        summary.log()
        dataset = self.build()
        return (dataset, summary) if return_summary else dataset

    def build(self) -> datasets.Dataset:
        offsets = pa.array(np.concatenate([[0], np.cumsum(self._lengths)]).astype(np.int32))

        def as_lists(chunks: list[np.ndarray], dtype) -> pa.ListArray:
            flat = np.concatenate(chunks) if chunks else np.array([], dtype=dtype)
            return pa.ListArray.from_arrays(offsets, pa.array(flat))

        codes = np.concatenate(self._feature_codes) if self._feature_codes else np.array([], dtype=np.int32)
        columns = {key: pa.array(values) for key, values in self._fields.items()}
        # Arrow's own `take` expands codes to names without a Python object per event.
        names = pa.array(self.feature_names, type=pa.string()).take(pa.array(codes))
        columns["feature"] = pa.ListArray.from_arrays(offsets, names)
        columns["value"] = as_lists(self._values, np.float64)
        columns["time"] = as_lists(self._times, np.float32)
        table = pa.table(columns)
        # datasets would fingerprint the table by pickling it, a transient copy of the whole cohort; hashing the
        # Arrow buffers in place gives the same guarantee (same data, same fingerprint) without the copy.
        digest = hashlib.blake2b(digest_size=16)
        for column in table.columns:
            for chunk in column.chunks:
                for buffer in chunk.buffers():
                    if buffer is not None:
                        digest.update(buffer)
        return datasets.Dataset(InMemoryTable(table), fingerprint=digest.hexdigest())
