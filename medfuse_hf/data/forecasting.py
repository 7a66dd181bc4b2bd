"""STraTS' self-supervised forecasting targets, the inputs and labels of `MedFuseForPreTraining`.

Apart from the tokenizer, whose one job is to encode events: this builds a task on top of the encoded events.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers.feature_extraction_utils import BatchFeature

from ..tokenization_medfuse import MedFuseTokenizer


def forecasting_batch(
    tokenizer: MedFuseTokenizer,
    patients: Sequence[Any],
    cutoffs: Sequence[float],
    horizon_hours: float,
    pad_to_multiple_of: int | None = None,
    return_tensors: str | None = "pt",
) -> BatchFeature:
    """Inputs from each patient's events before its cut-off (the most recent `max_events` of them), and as
    `forecast_values` / `forecast_mask` of shape `(batch_size, vocab_size)` the mean normalised value of every
    numeric feature observed in `[cutoff, cutoff + horizon_hours)`: unobserved features are masked out of the loss."""
    if len(cutoffs) != len(patients):
        raise ValueError(f"got {len(cutoffs)} cut-offs for {len(patients)} patients")
    size = len(tokenizer.feature_vocabulary)
    numeric = tokenizer.feature_vocabulary.numeric_mask()
    sums = np.zeros((len(patients), size), dtype=np.float32)
    counts = np.zeros((len(patients), size), dtype=np.float32)
    inputs = []
    for index, (patient, cutoff) in enumerate(zip(patients, cutoffs)):
        events = tokenizer.encode_patient(patient, index, truncate=False)
        window = (events.times >= cutoff) & (events.times < cutoff + horizon_hours)
        targets = window & numeric[events.feature_ids]
        np.add.at(sums[index], events.feature_ids[targets], events.values[targets])
        np.add.at(counts[index], events.feature_ids[targets], 1.0)
        before = events.select(events.times < cutoff)
        inputs.append({"feature_ids": before.feature_ids, "values": before.values, "times": before.times})
    batch = tokenizer.pad(inputs, max_length=tokenizer.max_events, truncation=True,
                          pad_to_multiple_of=pad_to_multiple_of, return_tensors="np")
    batch["forecast_values"] = sums / np.maximum(counts, 1.0)
    batch["forecast_mask"] = (counts > 0).astype(np.float32)
    return BatchFeature(dict(batch), tensor_type=return_tensors)
