"""A patient's features and values as model numbers, over one vocabulary: feature ids (with the unknown-feature
policy) and values normalised with the training split's statistics. Per-id tables make both vectorised over a
patient's events; the tokenizer adds times, order, truncation and padding."""

import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from .feature_vocabulary import PAD_ID, UNK_ID, FeatureVocabulary, ValueStatistics, category_key, parse_number

logger = logging.getLogger(__name__)

UnknownFeatures = Literal["error", "unk", "drop"]


class EventEncoder:
    """Feature ids and normalised values of events, under `vocabulary`."""

    def __init__(self, vocabulary: FeatureVocabulary):
        self.vocabulary = vocabulary
        self._reported_unknown: set[str] = set()
        self.size = size = len(vocabulary)
        self._statistics: list[ValueStatistics | None] = [None] * size
        self._has_statistics = np.zeros(size, dtype=bool)
        self._is_categorical = np.zeros(size, dtype=bool)
        self._has_statistics[[PAD_ID, UNK_ID]] = True
        self._category_ids: dict[int, dict[str, int]] = {}
        offsets = vocabulary.category_offsets()
        for feature_id, spec in enumerate(vocabulary, start=UNK_ID + 1):
            if spec.kind == "categorical":
                self._is_categorical[feature_id] = self._has_statistics[feature_id] = True
                self._category_ids[feature_id] = {
                    level: offsets[feature_id] + index for index, level in enumerate(spec.categories)
                }
            elif spec.statistics is not None:
                self._statistics[feature_id] = spec.statistics
                self._has_statistics[feature_id] = True

    def feature_ids(self, features: Sequence, row_labels: list, where: str, unknown_features: UnknownFeatures
                    ) -> np.ndarray:
        """Each event's feature id; an unknown name is an error, [UNK] or -1 (dropped) as `unknown_features` says,
        logged once per encoder at the first patient that has it."""
        lookup = self.vocabulary.id_of
        ids = [lookup(str(name)) for name in features]
        unknown = [position for position, feature_id in enumerate(ids) if feature_id is None]
        if unknown:
            names: dict[str, Any] = {}
            for position in unknown:
                names.setdefault(str(features[position]), row_labels[position])
            if unknown_features == "error":
                listed = ", ".join(f"{name!r} (first at row {row})" for name, row in list(names.items())[:20])
                raise ValueError(
                    f"{where}: {len(names)} unknown feature(s) not in the vocabulary: {listed}. "
                    "Map them to canonical names, or pass unknown_features='unk' or 'drop'."
                )
            replacement = UNK_ID if unknown_features == "unk" else -1
            for position in unknown:
                ids[position] = replacement
            first_seen = sorted(set(names) - self._reported_unknown)
            if first_seen:
                self._reported_unknown.update(first_seen)
                action = "mapped to [UNK]" if unknown_features == "unk" else "dropped"
                events = sum(str(features[position]) in first_seen for position in unknown)
                logger.warning("%s: %s its %d events of unknown features %s (each is reported once)",
                               where, action, events, first_seen)
        return np.asarray(ids, dtype=np.int64)

    def values(self, feature_ids: np.ndarray, values: Sequence, row_labels: list, where: str) -> np.ndarray:
        """Numeric values clipped and normalised with their feature's statistics, one vectorised call per feature;
        categorical levels as global category ids; [UNK] events 0."""
        missing = feature_ids[~self._has_statistics[feature_ids]]
        if missing.size:
            name = self.vocabulary.spec_of(int(missing[0])).name
            raise ValueError(
                f"feature {name!r} has no value statistics to normalise with; fit them with "
                "FeatureVocabulary.fit_statistics on the training split"
            )
        categorical = self._is_categorical[feature_ids]
        numbers = np.zeros(len(feature_ids), dtype=np.float64)
        numeric_positions = np.flatnonzero(~categorical & (feature_ids != UNK_ID))
        numbers[numeric_positions] = self._parse_numbers(values, numeric_positions, feature_ids, row_labels, where)
        for position in np.flatnonzero(categorical):
            feature_id = int(feature_ids[position])
            level = category_key(values[position])
            category_id = self._category_ids[feature_id].get(level)
            if category_id is None:
                spec = self.vocabulary.spec_of(feature_id)
                raise ValueError(
                    f"{where}, row {row_labels[position]}: {level!r} is not a level of categorical feature "
                    f"{spec.name!r} (levels: {spec.categories})"
                )
            numbers[position] = category_id
        for feature_id in np.unique(feature_ids[numeric_positions]):  # one vectorised call per feature
            positions = numeric_positions[feature_ids[numeric_positions] == feature_id]
            numbers[positions] = self._statistics[feature_id].normalize(numbers[positions])
        # [UNK] has no statistics: its events say "something was measured then", with value 0.
        numbers[feature_ids == UNK_ID] = 0.0
        return numbers

    def _parse_numbers(self, values, positions, feature_ids, row_labels, where) -> np.ndarray:
        selected = [values[position] for position in positions]
        try:
            numbers = np.asarray(selected, dtype=np.float64)
        except (TypeError, ValueError):
            numbers = np.array([_number_or_nan(value) for value in selected])
        if numbers.ndim != 1:  # each value a list of one: numbers, but one column too many
            position = positions[next(index for index, value in enumerate(selected) if np.ndim(value) != 0)]
            raise ValueError(f"{where}, row {row_labels[position]}: value {values[position]!r} of feature "
                             f"{self.vocabulary.spec_of(int(feature_ids[position])).name!r} is not one number")
        bad = np.flatnonzero(~np.isfinite(numbers))
        if bad.size:
            position = positions[bad[0]]
            name = self.vocabulary.spec_of(int(feature_ids[position])).name
            raise ValueError(
                f"{where}, row {row_labels[position]}: value {values[position]!r} of feature {name!r} is not a finite "
                "number (a missing measurement is no event: leave the row out)"
            )
        return numbers


def _number_or_nan(value: Any) -> float:
    number = parse_number(value)
    return math.nan if number is None else number
