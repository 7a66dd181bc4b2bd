"""The shared feature-identity vocabulary.

One entry per clinical feature, keyed by a stable canonical name (``heart_rate``), with optional code (LOINC),
aliases (``HR``), unit, kind and the value statistics used to normalise it. Ids are positions in the
vocabulary: two hospitals that share a vocabulary share embedding rows, which is what makes feature
embeddings transferable. The JSON form is meant to be read and diffed by people.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from statistics import NormalDist
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

PAD_ID = 0
UNK_ID = 1
SPECIAL_NAMES = ("[PAD]", "[UNK]")
VOCABULARY_FORMAT_VERSION = 1

FeatureKind = Literal["numeric", "categorical"]
ValueNormalization = Literal["robust_zscore", "quantile"]
# Probabilities of the quantile knots: dense in the tails, where skewed labs (lactate, creatinine, bilirubin) carry
# their signal, but not past the 1st and 99th percentiles.
QUANTILE_LEVELS = (0.01, 0.025, 0.05, *np.round(np.arange(0.1, 0.91, 0.05), 2).tolist(), 0.95, 0.975, 0.99)
NORMAL_SCORES = np.array([NormalDist().inv_cdf(level) for level in QUANTILE_LEVELS])  # -2.33 ... 2.33
# A tail knot is kept only with at least this many patients at or beyond it (privacy's small-cell floor): the 99th
# percentile of 25 patients lies between the two sickest ones' own values, and a published vocabulary would give them.
MIN_PATIENTS_BEYOND_A_KNOT = 10


@dataclass
class ValueStatistics:
    """Per-feature statistics of the values seen in training data.

    The authors of MedFuse z-score each feature after discarding outliers beyond 3 IQR from the quartiles;
    ``lower``/``upper`` are those fences and ``mean``/``std`` are computed on the values inside them.
    ``num_patients`` is kept so that a published vocabulary can withhold statistics of rare features.
    ``quantiles``, when fitted, are the values at `QUANTILE_LEVELS` and select quantile normalisation instead; a
    tail knot with fewer than `MIN_PATIENTS_BEYOND_A_KNOT` patients at or beyond it is not kept (`None`).
    ``largest_patient_count``, how many of the values the patient with most of them gave, lets the privacy guard
    withhold statistics that one patient's values make (a monitored stay among spot checks).
    """

    count: int
    num_patients: int
    mean: float
    std: float
    q25: float
    median: float
    q75: float
    lower: float
    upper: float
    quantiles: list[float | None] | None = None
    largest_patient_count: int | None = None

    @classmethod
    def fit(
        cls,
        values: np.ndarray,
        num_patients: int,
        outlier_fence: float = 3.0,
        normalization: ValueNormalization = "robust_zscore",
        patient_ranges: tuple[np.ndarray, np.ndarray] | None = None,
        largest_patient_count: int | None = None,
    ) -> ValueStatistics:
        """`patient_ranges`, each patient's lowest and highest value, say how many patients lie beyond a tail knot;
        without them every value counts as a patient of its own. `largest_patient_count`: how many of the values
        the patient with most of them gave."""
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            raise ValueError("cannot fit value statistics on zero values")
        if not np.isfinite(values).all():
            raise ValueError("value statistics need finite values; found NaN or infinity")
        if normalization not in ("robust_zscore", "quantile"):
            raise ValueError(f"normalization must be 'robust_zscore' or 'quantile', got {normalization!r}")
        q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])
        # Half the values or more at one level (a 0/1 flag, a lab at its detection floor) leave no IQR, and fences
        # at the quartiles would clip every value to that level: the standard deviation of the values between the
        # 1st and 99th percentiles spaces them instead (of all of them, one entry error of 99999 would set it).
        if q75 > q25:
            spread = q75 - q25
        else:
            q01, q99 = np.quantile(values, [0.01, 0.99])
            spread = values[(values >= q01) & (values <= q99)].std()
        lower, upper = q25 - outlier_fence * spread, q75 + outlier_fence * spread
        inliers = values[(values >= lower) & (values <= upper)]
        lowest, highest = patient_ranges or (values, values)
        return cls(
            count=int(values.size),
            num_patients=int(num_patients),
            mean=float(inliers.mean()),
            # A constant feature (e.g. a flag always 1) would divide by zero, or by its rounding error (1e-14 for
            # 36.6 a thousand times): leave its scale alone.
            std=float(inliers.std()) if inliers.max() > inliers.min() else 1.0,
            q25=float(q25),
            median=float(median),
            q75=float(q75),
            lower=float(lower),
            upper=float(upper),
            quantiles=kept_knots(values, lowest, highest) if normalization == "quantile" else None,
            largest_patient_count=largest_patient_count,
        )

    def in_other_units(self, scale: float, offset: float = 0.0) -> ValueStatistics:
        """The same statistics after a change of units `scale × value + offset` (mg/dL -> µmol/L: 88.42; °F -> °C:
        5/9 and -160/9); counts unchanged."""
        if not scale > 0:
            raise ValueError(f"a unit conversion's scale must be positive, got {scale}")
        moved = {name: getattr(self, name) * scale + offset
                 for name in ("mean", "q25", "median", "q75", "lower", "upper")}
        quantiles = None if self.quantiles is None else [None if value is None else value * scale + offset
                                                         for value in self.quantiles]
        return replace(self, std=self.std * scale, quantiles=quantiles, **moved)

    @property
    def normalization(self) -> ValueNormalization:
        return "robust_zscore" if self.quantiles is None else "quantile"

    def normalize(self, values: np.ndarray) -> np.ndarray:
        """Robust z-score: clip to the outlier fences, then z-score, so that extreme values stay in the record but
        cannot dominate. Quantile: the value's rank among the training values, as a standard normal score
        (piecewise linear between the knots, constant beyond the 1st and 99th percentiles): a skewed lab is spread
        evenly over the value projector's range instead of being squeezed near its median by a few large values."""
        values = np.asarray(values, dtype=np.float64)
        if self.quantiles is None:
            return (np.clip(values, self.lower, self.upper) - self.mean) / self.std
        knots, scores = self._quantile_map()
        return np.interp(values, knots, scores) if len(knots) > 1 else np.zeros_like(values)

    def _quantile_map(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct knot values and their normal scores; a value several knots share (an integer score such as the
        GCS, a constant flag) gets the mean of their scores, its mid-rank."""
        if len(self.quantiles) != len(QUANTILE_LEVELS):
            raise ValueError(f"{len(self.quantiles)} quantiles for the {len(QUANTILE_LEVELS)} levels of "
                             "QUANTILE_LEVELS: was this vocabulary written by another version of medfuse_hf?")
        kept = np.array([knot is not None for knot in self.quantiles])
        knots, inverse = np.unique(np.array(self.quantiles)[kept].astype(np.float64), return_inverse=True)
        scores = np.bincount(inverse, weights=NORMAL_SCORES[kept]) / np.bincount(inverse)
        return knots, scores


def kept_knots(values: np.ndarray, lowest: np.ndarray, highest: np.ndarray) -> list[float | None]:
    """The values at `QUANTILE_LEVELS`, but `None` for a tail knot with fewer than `MIN_PATIENTS_BEYOND_A_KNOT`
    patients at or beyond it (`lowest`, `highest`: each patient's extreme values): a value past the last knot kept
    gets that knot's score, as one past the 1st or 99th percentile always does."""
    knots = np.quantile(values, QUANTILE_LEVELS)
    beyond = [(lowest <= knot).sum() if level < 0.5 else (highest >= knot).sum() for level, knot in
              zip(QUANTILE_LEVELS, knots)]
    return [float(knot) if count >= MIN_PATIENTS_BEYOND_A_KNOT or level == 0.5 else None
            for level, knot, count in zip(QUANTILE_LEVELS, knots, beyond)]


@dataclass
class FeatureSpec:
    """One clinical feature of the vocabulary."""

    name: str
    kind: FeatureKind = "numeric"
    unit: str | None = None
    code: str | None = None
    aliases: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    statistics: ValueStatistics | None = None
    description: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("numeric", "categorical"):
            raise ValueError(f"feature {self.name!r}: kind must be 'numeric' or 'categorical', got {self.kind!r}")
        if self.kind == "categorical" and not self.categories:
            raise ValueError(f"categorical feature {self.name!r} needs at least one category level")
        self.categories = [category_key(level) for level in self.categories]  # levels [1.0, 2.0] read values 1 and 2
        if len(set(self.categories)) != len(self.categories):
            raise ValueError(f"categorical feature {self.name!r} lists a level twice: {self.categories}")
        if isinstance(self.statistics, Mapping):
            self.statistics = ValueStatistics(**self.statistics)

    def to_dict(self) -> dict:
        entry = {key: value for key, value in asdict(self).items() if value not in (None, [])}
        if "statistics" in entry:  # fields added since the first format, written only where set, as before them
            for name in ("quantiles", "largest_patient_count"):
                if entry["statistics"][name] is None:
                    del entry["statistics"][name]
        return entry


class FeatureVocabulary:
    """Ordered feature entries with reserved ids ``0 = [PAD]`` and ``1 = [UNK]``.

    Categorical levels get *global* category ids (1-based; 0 is reserved) so that one embedding table serves
    every categorical feature.
    """

    def __init__(self, features: Iterable[FeatureSpec] = ()):
        self._features: list[FeatureSpec] = []
        self._lookup: dict[str, int] = {}
        for spec in features:
            self.add(spec)

    # ----- construction -------------------------------------------------------------------------------
    def add(self, spec: FeatureSpec) -> int:
        """Append a feature; its name, code and aliases must not collide with existing ones."""
        keys = self._keys_of(spec)
        for key in keys:
            if key in self._lookup:
                clash = self._features[self._lookup[key] - len(SPECIAL_NAMES)].name
                raise ValueError(f"feature {spec.name!r}: {key!r} is already used by feature {clash!r}")
        feature_id = len(SPECIAL_NAMES) + len(self._features)
        self._features.append(spec)
        for key in keys:
            self._lookup[key] = feature_id
        return feature_id

    @staticmethod
    def _keys_of(spec: FeatureSpec) -> list[str]:
        keys = [spec.name, *spec.aliases] + ([spec.code] if spec.code else [])
        if len(set(keys)) != len(keys):
            raise ValueError(f"feature {spec.name!r} lists the same name, alias or code twice: {keys}")
        return keys

    @classmethod
    def of_names(
        cls,
        names: Iterable[str],
        categorical: Mapping[str, Iterable[str]] | None = None,
        units: Mapping[str, str] | None = None,
    ) -> FeatureVocabulary:
        """A vocabulary of these names, ordered by name so that the same names always get the same ids, without
        statistics yet (`fit_statistics`). Names in ``categorical`` are categorical with the given levels; every
        other is numeric."""
        categorical = {name: list(levels) for name, levels in (categorical or {}).items()}
        units = units or {}
        return cls(
            FeatureSpec(name=name, kind="categorical", categories=categorical[name], unit=units.get(name))
            if name in categorical
            else FeatureSpec(name=name, unit=units.get(name))
            for name in sorted({str(name) for name in names})
        )

    @classmethod
    def from_events(
        cls,
        patients: Iterable[Mapping[str, Iterable]],
        categorical: Mapping[str, Iterable[str]] | None = None,
        units: Mapping[str, str] | None = None,
        outlier_fence: float = 3.0,
        normalization: ValueNormalization = "robust_zscore",
    ) -> FeatureVocabulary:
        """Build a vocabulary (`of_names`) of the features the training patients measure, with statistics fitted on
        them. Each patient is a mapping with ``feature`` and ``value`` lists; each value of a numeric feature must
        parse as a finite number. ``patients`` is read twice: a one-pass iterator is held in memory for it, a list
        or a `datasets` dataset is not copied.
        """
        if iter(patients) is patients:
            patients = list(patients)
        names = (name for patient in patients for name in patient["feature"])
        return cls.of_names(names, categorical, units).fit_statistics(patients, outlier_fence, normalization)

    def fit_statistics(
        self,
        patients: Iterable[Mapping[str, Iterable]],
        outlier_fence: float = 3.0,
        normalization: ValueNormalization = "robust_zscore",
    ) -> FeatureVocabulary:
        """A copy whose numeric features carry statistics fitted on ``patients`` (the training split only), to be
        normalised by ``normalization`` (see `ValueStatistics.normalize`).

        Events are matched by name, alias or code. A numeric feature absent from ``patients`` keeps no statistics;
        names the vocabulary does not know are an error, since they could be a mapping mistake.
        """
        # Each patient's values are kept as one array per feature, not as Python floats: floats outliving the rows
        # they were read with pin the rows' memory, and a streamed sample of 5,000 long stays took 2 GiB more.
        values_by_id: dict[int, list[np.ndarray]] = {}
        patients_by_id: dict[int, int] = {}
        unknown: dict[str, int] = {}
        for index, patient in enumerate(patients):
            patient_values: dict[int, list[float]] = {}
            seen: set[int] = set()
            for position, (name, value) in enumerate(zip(patient["feature"], patient["value"])):
                feature_id = self._lookup.get(str(name))
                if feature_id is None:
                    unknown[str(name)] = unknown.get(str(name), 0) + 1
                    continue
                seen.add(feature_id)
                if self._features[feature_id - len(SPECIAL_NAMES)].kind == "categorical":
                    continue
                number = parse_number(value)
                if number is None:
                    raise ValueError(
                        f"patient {index}, event {position}: feature {name!r} has value {value!r}, "
                        "which is not a finite number (declare the feature categorical if it is one)"
                    )
                patient_values.setdefault(feature_id, []).append(number)
            for feature_id, numbers in patient_values.items():
                values_by_id.setdefault(feature_id, []).append(np.array(numbers, dtype=np.float64))
            for feature_id in seen:
                patients_by_id[feature_id] = patients_by_id.get(feature_id, 0) + 1
        if unknown:
            listed = ", ".join(f"{name!r} ({count} events)" for name, count in sorted(unknown.items())[:20])
            raise ValueError(f"cannot fit statistics: {len(unknown)} feature names are not in the vocabulary: "
                             f"{listed}")
        fitted = FeatureVocabulary()
        for feature_id, spec in enumerate(self._features, start=len(SPECIAL_NAMES)):
            statistics = spec.statistics
            if feature_id in values_by_id:
                by_patient = values_by_id[feature_id]
                ranges = (np.array([numbers.min() for numbers in by_patient]),
                          np.array([numbers.max() for numbers in by_patient]))
                statistics = ValueStatistics.fit(np.concatenate(by_patient), patients_by_id[feature_id],
                                                 outlier_fence, normalization, ranges,
                                                 max(len(numbers) for numbers in by_patient))
            fitted.add(replace(spec, aliases=list(spec.aliases), statistics=statistics))
        median_only = [spec.name for spec in fitted if spec.statistics is not None and spec.statistics.quantiles
                       and sum(knot is not None for knot in spec.statistics.quantiles) == 1]
        if median_only:
            logger.warning("quantile values: %s seen in too few patients for any knot but the median (each knot "
                           "needs %d beyond it), so every value of theirs reads as the median; their presence still "
                           "counts", median_only, MIN_PATIENTS_BEYOND_A_KNOT)
        return fitted

    # ----- lookup -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of ids, the special ones included: the model's ``vocab_size``."""
        return len(SPECIAL_NAMES) + len(self._features)

    def __iter__(self):
        return iter(self._features)

    def __contains__(self, key: str) -> bool:
        return key in self._lookup

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureVocabulary) and self.to_dict() == other.to_dict()

    @property
    def features(self) -> list[FeatureSpec]:
        return list(self._features)

    def id_of(self, key: str) -> int | None:
        """Feature id for a canonical name, alias or code; ``None`` when unknown."""
        return self._lookup.get(key)

    def spec_of(self, key: str | int) -> FeatureSpec:
        feature_id = key if isinstance(key, int) else self._lookup.get(key)
        if feature_id is None or not len(SPECIAL_NAMES) <= feature_id < len(self):
            raise KeyError(f"unknown feature {key!r}")
        return self._features[feature_id - len(SPECIAL_NAMES)]

    def category_offsets(self) -> dict[int, int]:
        """Feature id -> global id of its first category level (global ids start at 1)."""
        offsets, next_id = {}, 1
        for feature_id, spec in enumerate(self._features, start=len(SPECIAL_NAMES)):
            if spec.kind == "categorical":
                offsets[feature_id] = next_id
                next_id += len(spec.categories)
        return offsets

    @property
    def num_categories(self) -> int:
        """Size of the global category table, reserved id 0 included."""
        return 1 + sum(len(spec.categories) for spec in self._features if spec.kind == "categorical")

    def numeric_mask(self) -> np.ndarray:
        """Feature id -> whether its events carry a numeric value to predict ([PAD], [UNK] and categorical: no),
        for the self-supervised targets."""
        mask = np.zeros(len(self), dtype=bool)
        mask[[feature_id for feature_id, spec in enumerate(self._features, start=len(SPECIAL_NAMES))
              if spec.kind != "categorical"]] = True
        return mask

    def config_kwargs(self) -> dict:
        """The `MedFuseConfig` fields that must agree with this vocabulary."""
        return {
            "vocab_size": len(self),
            "num_categories": self.num_categories,
            "categorical_feature_ids": sorted(self.category_offsets()),
        }

    # ----- combining vocabularies ---------------------------------------------------------------------
    def keys(self) -> Mapping[str, int]:
        """Every name and alias a feature is looked up by, with its id (read-only)."""
        return MappingProxyType(self._lookup)

    def add_alias(self, name: str, alias: str) -> None:
        """Let `alias` (another hospital's name for the feature) find `name`'s feature id."""
        if alias in self._lookup:
            raise ValueError(f"alias {alias!r} already names feature {self.spec_of(alias).name!r}")
        self.spec_of(name).aliases.append(alias)
        self._lookup[alias] = self._lookup[name]

    # ----- serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format_version": VOCABULARY_FORMAT_VERSION,
            "special_tokens": list(SPECIAL_NAMES),
            "features": [spec.to_dict() for spec in self._features],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> FeatureVocabulary:
        version = data.get("format_version")
        if version != VOCABULARY_FORMAT_VERSION:
            raise ValueError(f"unsupported feature vocabulary format_version {version!r}")
        return cls(FeatureSpec(**entry) for entry in data["features"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> FeatureVocabulary:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls.from_dict(data)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: not a valid feature vocabulary ({error})") from error


def parse_number(value) -> float | None:
    """A finite float, or ``None`` for text, NaN or infinity."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def category_key(value: Any) -> str:
    """Category levels are strings; 1, 1.0, '1' and a 0-d tensor or array of 1 (a `with_format("torch")` row) name the
    same level, as levels and as values."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)
