"""The triplet tokenizer: a patient's (feature, value, time) events in, MedFuse model inputs out.

It is a `SequenceFeatureExtractor` (the transformers base for preprocessors of non-text sequences, such as audio)
so that it saves, loads, pushes to the Hub and resolves through `AutoFeatureExtractor` like any Hugging Face
preprocessor, and pads and truncates as they do. The feature vocabulary is saved inside its settings, in
`preprocessor_config.json`: transformers builds a feature extractor from that one dictionary (`from_dict`), so a
tokenizer that needs nothing else loads through every path it offers, `trust_remote_code` included.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import PaddingStrategy, cached_file

from .event_encoding import EventEncoder, UnknownFeatures
from .feature_vocabulary import PAD_ID, FeatureVocabulary
from .patient_inputs import as_patient_list, columns_of, describe_patient
from .privacy import DEFAULT_MIN_PATIENTS, guarded_copy
from .timestamps import hours_since_start

logger = logging.getLogger(__name__)

# checkpoints saved by medfuse_hf 0.1 kept the vocabulary in a file of its own; `from_pretrained` still reads them
LEGACY_VOCABULARY_FILE_NAME = "feature_vocabulary.json"
HOURS_PER_YEAR = 24 * 365.25
# The settings `to_dict` writes beside the vocabulary, each of which `from_pretrained` may override.
SAVED_SETTINGS = ("max_events", "unknown_features", "max_hours", "pinned_features", "event_window", "padding_side",
                  "return_attention_mask")
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")



@dataclass
class EncodedPatient:
    """One patient's events as arrays, sorted by time."""

    feature_ids: np.ndarray  # int64
    values: np.ndarray  # float32
    times: np.ndarray  # float32, hours
    positions: np.ndarray | None = None  # each event's place among the patient's events as given (explanations)

    def __len__(self) -> int:
        return len(self.feature_ids)

    def select(self, index: np.ndarray | slice) -> "EncodedPatient":
        positions = None if self.positions is None else self.positions[index]
        return EncodedPatient(self.feature_ids[index], self.values[index], self.times[index], positions)


class MedFuseTokenizer(SequenceFeatureExtractor):
    """Encodes patients for MedFuse over a shared `FeatureVocabulary`.

    Args:
        feature_vocabulary: the vocabulary, or its `to_dict()` form (as `preprocessor_config.json` holds it);
            numeric features need fitted value statistics.
        max_events: events kept per patient; when a record is longer, the most recent are kept (what a model
            scoring a patient *now* needs most), and the earliest event of each of `pinned_features`.
        unknown_features: a feature name missing from the vocabulary is an `"error"` (all such names listed),
            mapped to `[UNK]` (`"unk"`, value 0 since it has no statistics) or dropped (`"drop"`); either way each
            unknown name is logged once per tokenizer, at the first patient that has it, not once per patient.
            A patient left with no event is an error naming the patient: it has nothing to score.
        max_hours: a time further than this from the anchor is treated as a data error (a unit or year mistake).
        padding_side: `"right"` (the default) or `"left"`; the model's output does not depend on it.
        pinned_features: features whose earliest event survives any cut to the most recent events: the static
            descriptors recorded at admission (age, ICU type) that a model's `static_feature_ids` reads there, and
            that a long stay would otherwise lose first.
        event_window: the window the training events came from, recorded by `recipes/finetune.py` so that
            `recipes/predict.py` reads new patients the same way unless told otherwise: a long-format table's
            flags, `{"anchor_column": "INTIME", "max_hours": 48, "end_column": "OUTTIME"}`, or a public cohort's
            `{"time_zero": "ICU admission", "max_hours": 48}`.
    """

    model_input_names = ["feature_ids", "values", "times", "attention_mask"]

    def __init__(
        self,
        feature_vocabulary: FeatureVocabulary | Mapping[str, Any] | None = None,
        max_events: int = 1024,
        unknown_features: UnknownFeatures = "error",
        max_hours: float = 10 * HOURS_PER_YEAR,
        pinned_features: Sequence[str] = (),
        event_window: Mapping[str, Any] | None = None,
        **kwargs,
    ):
        # one event per position (feature_size 1); no sampling rate; padding is PAD_ID and zeros, see `_pad`
        super().__init__(feature_size=1, sampling_rate=None, padding_value=float(PAD_ID), **kwargs)
        if self.padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {self.padding_side!r}")
        if unknown_features not in ("error", "unk", "drop"):
            raise ValueError(f"unknown_features must be 'error', 'unk' or 'drop', got {unknown_features!r}")
        if max_events < 1:
            raise ValueError(f"max_events must be positive, got {max_events}")
        if feature_vocabulary is None:
            raise ValueError(
                "MedFuseTokenizer needs a feature_vocabulary. A checkpoint saved by medfuse_hf 0.1 keeps it in "
                f"{LEGACY_VOCABULARY_FILE_NAME}, which only MedFuseTokenizer.from_pretrained reads: load it that way "
                "once and save_pretrained it again to load it through AutoFeatureExtractor"
            )
        if isinstance(feature_vocabulary, Mapping):
            feature_vocabulary = FeatureVocabulary.from_dict(feature_vocabulary)
        self.feature_vocabulary = feature_vocabulary
        self.max_events = max_events
        self.unknown_features = unknown_features
        self.max_hours = max_hours
        self.pinned_features = pinned_features
        self.event_window = dict(event_window) if event_window else None

    @property
    def feature_vocabulary(self) -> FeatureVocabulary:
        return self._feature_vocabulary

    @feature_vocabulary.setter
    def feature_vocabulary(self, vocabulary: FeatureVocabulary) -> None:
        """A new vocabulary (the privacy guard's, say) brings its own lookup tables."""
        self._feature_vocabulary = vocabulary
        self._encoder = EventEncoder(vocabulary)

    @property
    def _events(self) -> EventEncoder:
        """The encoder of the vocabulary as it is now: `FeatureVocabulary.add` grows a vocabulary in place."""
        if self._encoder.size != len(self._feature_vocabulary):
            self._encoder = EventEncoder(self._feature_vocabulary)
        return self._encoder

    @property
    def pinned_features(self) -> list[str]:
        return self._pinned_features

    @pinned_features.setter
    def pinned_features(self, names: Sequence[str]) -> None:
        unknown = [name for name in names if name not in self.feature_vocabulary]
        if unknown:
            raise ValueError(f"pinned_features {unknown} are not in the feature vocabulary")
        self._pinned_features = list(names)

    @property
    def pinned_feature_ids(self) -> set[int]:
        """The ids of `pinned_features`, which may be aliases or codes."""
        return {self.feature_vocabulary.id_of(name) for name in self.pinned_features}

    # ----- public API ---------------------------------------------------------------------------------
    def __call__(
        self,
        patients: Any,
        padding: bool | Literal["longest", "max_length"] = "longest",
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        anchor_times: Any = None,
        patient_column: str | None = None,
        time_zone: str | None = None,
    ) -> BatchFeature:
        """Encode one patient or a batch.

        A patient is a list of `(feature, value, time)` tuples, a mapping of `feature`/`value`/`time` columns, or a
        long-format DataFrame with those columns (several patients when `patient_column` names their id column).
        A mapping whose columns hold lists (a `datasets` batch) or a `datasets.Dataset` is a batch. Times are numbers
        of hours, or timestamps converted to hours since `anchor_times` (one per patient, or one for all) or else since
        the patient's first event; timestamps without a UTC offset are UTC, or the clock times of `time_zone`
        (`"Europe/Berlin"`), which keeps hours right across a daylight-saving change. `max_length` keeps each
        patient's most recent events, as `max_events` does.
        """
        batch, is_single = as_patient_list(patients, patient_column)
        per_patient = isinstance(anchor_times, (list, tuple)) or np.ndim(anchor_times) == 1  # an array, a Series
        anchors = list(anchor_times) if per_patient else [anchor_times] * len(batch)
        if len(anchors) != len(batch):
            raise ValueError(f"got {len(anchors)} anchor_times for {len(batch)} patients")
        encoded = [self.encode_patient(patient, index, anchor, time_zone=time_zone)
                   for index, (patient, anchor) in enumerate(zip(batch, anchors))]
        if max_length is not None:
            encoded = [events.select(self._kept(events.feature_ids, max_length)) for events in encoded]
        if padding is False and len({len(events) for events in encoded}) > 1 and return_tensors is not None:
            lengths = [len(events) for events in encoded]
            raise ValueError(f"patients have {min(lengths)}..{max(lengths)} events: tensors need padding=True")
        if padding is False and return_tensors is None:  # ragged, for `datasets.map`: `pad` (a collator) pads later
            features = {name: [getattr(events, name).tolist() for events in encoded]
                        for name in ("feature_ids", "values", "times")}
            features["attention_mask"] = [[1] * len(events) for events in encoded]
            return BatchFeature({key: value[0] for key, value in features.items()} if is_single else features)
        rows = [{"feature_ids": events.feature_ids, "values": events.values, "times": events.times}
                for events in encoded]
        features = self.pad(rows, padding, max_length, truncation=False,  # already cut to max_length above
                            pad_to_multiple_of=pad_to_multiple_of, return_tensors=return_tensors or "np")
        if return_tensors is None:  # plain lists, as transformers tokenizers return; unbatched for one patient
            features = {key: value[0].tolist() if is_single else value.tolist() for key, value in features.items()}
        return BatchFeature(features, tensor_type=return_tensors)

    def pad(self, processed_features: Any, padding: bool | str = True, max_length: int | None = None,
            truncation: bool | None = None, **kwargs) -> BatchFeature:
        """`SequenceFeatureExtractor.pad`, where `max_length` also truncates unless `truncation=False` (the base
        would leave longer patients unpadded and fail to stack them): patients keep their most recent events, as in
        encoding. Every model input is padded; other keys, such as `labels`, pass through."""
        truncation = max_length is not None if truncation is None else truncation
        return super().pad(processed_features, padding, max_length, truncation, **kwargs)

    def _pad(
        self,
        processed_features: dict[str, np.ndarray],
        max_length: int | None = None,
        padding_strategy: PaddingStrategy = PaddingStrategy.DO_NOT_PAD,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
    ) -> dict[str, np.ndarray]:
        """One patient, padded for `SequenceFeatureExtractor.pad`: every model input (the base pads only the first),
        with PAD_ID, value 0, time 0 and mask 0; other keys, such as `labels`, pass through."""
        length = len(processed_features["feature_ids"])
        if padding_strategy == PaddingStrategy.LONGEST or max_length is None:
            max_length = length
        if pad_to_multiple_of:
            max_length = math.ceil(max_length / pad_to_multiple_of) * pad_to_multiple_of
        if return_attention_mask and "attention_mask" not in processed_features:
            processed_features["attention_mask"] = np.ones(length, dtype=np.int64)
        if padding_strategy != PaddingStrategy.DO_NOT_PAD and length < max_length:
            widths = (0, max_length - length) if self.padding_side == "right" else (max_length - length, 0)
            for name in self.model_input_names:
                if name in processed_features:
                    fill = PAD_ID if name == "feature_ids" else 0
                    processed_features[name] = np.pad(processed_features[name], widths, constant_values=fill)
        return processed_features

    def _truncate(
        self,
        processed_features: dict[str, np.ndarray],
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        truncation: bool | None = None,
    ) -> dict[str, np.ndarray]:
        """One patient cut to `max_length` for `SequenceFeatureExtractor.pad`: the most recent events are kept (the
        base keeps the first ones) with the pinned features' earliest, in every model input."""
        if not truncation:
            return processed_features
        if max_length is None:
            raise ValueError("truncation=True needs max_length")
        kept = self._kept(np.asarray(processed_features["feature_ids"]), max_length)
        for name in self.model_input_names:
            if name in processed_features:
                processed_features[name] = np.asarray(processed_features[name])[kept]
        return processed_features

    def encode_patient(
        self, patient: Any, index: int = 0, anchor: Any = None, truncate: bool = True, time_zone: str | None = None
    ) -> EncodedPatient:
        """One patient's events as id, normalised value and hour arrays, sorted by time, unpadded."""
        features, values, times, row_labels = columns_of(patient)
        where = describe_patient(patient, index)
        if len(features) == 0:
            raise ValueError(f"{where} has no events: a patient needs at least one observation to be scored")
        feature_ids = self._events.feature_ids(features, row_labels, where, self.unknown_features)
        keep = feature_ids >= 0  # -1 marks events dropped under unknown_features="drop"
        positions = np.flatnonzero(keep)
        if not keep.all():
            feature_ids, row_labels = feature_ids[keep], [label for label, kept in zip(row_labels, keep) if kept]
            values = [value for value, kept in zip(values, keep) if kept]
            times = [time for time, kept in zip(times, keep) if kept]
            if len(feature_ids) == 0:
                raise ValueError(f"{where} has no events left after dropping unknown features")
        hours = hours_since_start(times, anchor, row_labels, where, self.max_hours, time_zone)
        normalised = self._events.values(feature_ids, values, row_labels, where)
        order = np.argsort(hours, kind="stable")
        events = EncodedPatient(feature_ids[order], normalised[order].astype(np.float32),
                                hours[order].astype(np.float32), positions[order])
        return self._keep_most_recent(events) if truncate else events

    # ----- saving and loading -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "feature_extractor_type": type(self).__name__,
            **{key: getattr(self, key) for key in SAVED_SETTINGS},
            "feature_vocabulary": self.feature_vocabulary.to_dict(),
            # where the code lies for `trust_remote_code` loading, set by `save_pretrained` (see `__init__.py`)
            **({"auto_map": self._feature_extractor_auto_map()} if getattr(self, "auto_map", None) else {}),
        }

    def _feature_extractor_auto_map(self) -> dict[str, str]:
        """transformers writes a class whose name ends in "Tokenizer" as a text tokenizer's (slow, fast) pair, which
        `AutoFeatureExtractor` cannot read: this one is a feature extractor, one class."""
        return {key: value[0] if isinstance(value, (list, tuple)) else value for key, value in self.auto_map.items()}

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs) -> list[str]:
        """Write `preprocessor_config.json` (settings and vocabulary) into `save_directory`.

        A local save keeps the exact statistics (counts, quartiles and fences of every feature) the tokenizer
        normalises with: it stays in the hospital. With `push_to_hub=True` the vocabulary written and uploaded is
        the privacy-guarded one (`publishable_vocabulary`: counts rounded to tens), and the upload is refused before
        any request when a feature's statistics come from fewer than `min_patients_for_statistics` (default 20)."""
        min_patients = kwargs.pop("min_patients_for_statistics", DEFAULT_MIN_PATIENTS)
        if push_to_hub:  # the guarded copy is what this folder and the repo get
            repo_id = kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
            public = guarded_copy(self, repo_id, min_patients)
            files = public.save_pretrained(save_directory)
            public.push_to_hub(repo_id, min_patients_for_statistics=min_patients, **kwargs)
            return files
        return super().save_pretrained(save_directory, **kwargs)

    def push_to_hub(self, repo_id: str, *, min_patients_for_statistics: int = DEFAULT_MIN_PATIENTS, **kwargs) -> Any:
        """Upload under the privacy guard of `save_pretrained(push_to_hub=True)`; the exact statistics stay here."""
        return super(MedFuseTokenizer, guarded_copy(self, repo_id, min_patients_for_statistics)).push_to_hub(
            repo_id, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> MedFuseTokenizer:
        """Load from a directory written by `save_pretrained` or a Hub repo id, in today's one-file layout or in the
        two-file layout of medfuse_hf 0.1 (settings beside `feature_vocabulary.json`). Settings given as keyword
        arguments (`max_events=512`) override the saved ones."""
        settings, unused = cls.get_feature_extractor_dict(pretrained_model_name_or_path, **kwargs)
        # transformers overrides only the settings a file holds: one saved before a setting was written takes it too
        settings.update({key: unused.pop(key) for key in SAVED_SETTINGS if key in unused})
        if "feature_vocabulary" not in settings:
            hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
            vocabulary_file = cached_file(pretrained_model_name_or_path, LEGACY_VOCABULARY_FILE_NAME, **hub_kwargs)
            settings["feature_vocabulary"] = FeatureVocabulary.load(vocabulary_file)
        return cls.from_dict(settings, **unused)

    def _keep_most_recent(self, events: EncodedPatient) -> EncodedPatient:
        return events if len(events) <= self.max_events else events.select(self._kept(events.feature_ids,
                                                                                       self.max_events))

    def _kept(self, feature_ids: np.ndarray, limit: int) -> slice | np.ndarray:
        """Which of a patient's time-ordered events a cut to `limit` keeps: each pinned feature's earliest event,
        and the most recent of the others."""
        if len(feature_ids) <= limit or not self.pinned_features:
            return slice(-limit, None)
        ids, first = np.unique(feature_ids, return_index=True)
        pinned = np.sort(first[np.isin(ids, list(self.pinned_feature_ids))])[-limit:]
        others = np.setdiff1d(np.arange(len(feature_ids)), pinned)
        return np.sort(np.concatenate([pinned, others[len(others) - (limit - len(pinned)):]]))


__all__ = ["MedFuseTokenizer", "EncodedPatient"]
