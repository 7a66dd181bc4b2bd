"""Deterministic patient splits, saved as JSON lists of patient ids.

Protocols for PhysioNet 2012 used in papers: the fixed SeFT split (Horn et al. 2020; the MedFuse authors' code
trains on it), STraTS' "set-a is test", and seeded stratified random splits. Normalisation statistics are then
fitted on `train` only (`FeatureVocabulary.fit_statistics`).
"""

import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

logger = logging.getLogger(__name__)

Split = dict[str, list]
SEFT_FILES = {"train": "train_listfile.csv", "validation": "val_listfile.csv", "test": "test_listfile.csv"}


def seft_split(folder: str | Path) -> Split:
    """The SeFT split from its `{train,val,test}_listfile.csv` (rows are Outcomes lines, first column RecordID)."""
    folder = Path(folder)
    split = {}
    for name, file in SEFT_FILES.items():
        path = folder / file
        if not path.exists():
            raise FileNotFoundError(f"{path}: SeFT split file missing")
        split[name] = pd.read_csv(path)["RecordID"].astype(int).tolist()
    check_disjoint(split, str(folder))
    return split


def in_id_order(ids: Sequence, labels: Sequence) -> tuple[list, list]:
    """Ids and their labels sorted by id: what a seeded split draws from, whatever order the data came in."""
    pairs = sorted(zip(ids, labels), key=lambda pair: pair[0])
    return [patient_id for patient_id, _ in pairs], [label for _, label in pairs]


def stratified_split(
    ids: Sequence, labels: Sequence, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> Split:
    """Seeded train/validation/test split keeping the label rate in each part (scikit-learn's stratification). The
    patients are put in the order of their ids first: scikit-learn shuffles in the order given, and a release read
    from its archive lists them otherwise than read from its folder, so the same seed drew another split."""
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must add up to 1, got {fractions}")
    ids, labels = in_id_order(ids, labels)
    try:
        train, rest, _, rest_labels = train_test_split(ids, labels, train_size=fractions[0], stratify=labels,
                                                       random_state=seed)
        validation_share = fractions[1] / (fractions[1] + fractions[2])
        validation, test = train_test_split(rest, train_size=validation_share, stratify=rest_labels,
                                            random_state=seed)
    except ValueError as error:  # scikit-learn's "least populated class": say what the cohort holds, and the way out
        counts = ", ".join(f"{count} of class {label}" for label, count in sorted(Counter(labels).items()))
        raise ValueError(f"{len(ids)} patients ({counts}) are too few to split {fractions} into train, validation "
                         "and test with every class in each: give more patients, or the split itself "
                         "(--split_file)") from error
    return {"train": sorted(train), "validation": sorted(validation), "test": sorted(test)}


def nested_subset(labels: Sequence, fraction: float, seed: int = 0, min_per_class: int = 1) -> list[int]:
    """Positions of a seeded share of the patients, stratified by label and nested across fractions: the 1%
    subset lies inside the 5% one, so a learning curve adds patients instead of redrawing them. Each class keeps
    round(fraction · its size) patients, at least `min_per_class` (or all it has), so a small class can be
    over-represented in the subset."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(labels):  # one permutation per class, the same whatever the fraction
        members = rng.permutation(np.flatnonzero(labels == label))
        keep.extend(members[: max(min_per_class, round(fraction * len(members)))].tolist())
    return sorted(keep)


MIN_VALIDATION_PER_CLASS = 10  # a validation AUPRC from fewer positives would choose epochs at random


def validation_subset(labels: Sequence, fraction: float, seed: int = 0) -> list[int]:
    """A small hospital's validation split: `nested_subset` of the validation stays, but at least
    `MIN_VALIDATION_PER_CLASS` of each class (or all a class has)."""
    return nested_subset(labels, fraction, seed, min_per_class=MIN_VALIDATION_PER_CLASS)


def set_a_test_split(dataset: datasets.Dataset, validation_fraction: float = 0.2, seed: int = 0) -> Split:
    """STraTS' P12 protocol: test = set-a; train/validation = sets b and c, stratified, in the order of their ids (as
    `stratified_split` draws)."""
    rest = dataset.filter(lambda set_name: set_name != "a", input_columns="set")
    ids, labels = in_id_order(rest["record_id"], rest["in_hospital_death"])
    train, validation = train_test_split(ids, test_size=validation_fraction, stratify=labels, random_state=seed)
    test = [record_id for record_id, set_name in zip(dataset["record_id"], dataset["set"]) if set_name == "a"]
    return {"train": sorted(train), "validation": sorted(validation), "test": sorted(test)}


def apply_split(dataset: datasets.Dataset, split: Split, id_column: str = "record_id") -> datasets.DatasetDict:
    """A `DatasetDict` of the split's parts; ids absent from the dataset, and the dataset's patients that no part
    lists, are logged with their count."""
    row_of = {patient_id: row for row, patient_id in enumerate(dataset[id_column])}
    parts = {}
    for name, ids in split.items():
        absent = [patient_id for patient_id in ids if patient_id not in row_of]
        if absent:
            logger.warning("split %r: %d ids not in the dataset (e.g. %s)", name, len(absent), absent[:5])
        parts[name] = dataset.select([row_of[patient_id] for patient_id in ids if patient_id in row_of])
    listed = {patient_id for ids in split.values() for patient_id in ids}
    unlisted = [patient_id for patient_id in row_of if patient_id not in listed]
    if unlisted:
        logger.warning("%d patients of the dataset are in no split, and left out (e.g. %s)", len(unlisted),
                       unlisted[:5])
    return datasets.DatasetDict(parts)


# A split file may name the data its ids are of (a run's `split.json` does, see `training.run_split`): no part.
DATA_SOURCE_KEY = "data_source"


def save_split(split: Split, path: str | Path, data_source: list | None = None) -> None:
    check_disjoint(split, str(path))
    record = split if data_source is None else {DATA_SOURCE_KEY: data_source, **split}
    Path(path).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def load_split(path: str | Path) -> Split:
    split = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))  # `~` as the flag check read it
    split.pop(DATA_SOURCE_KEY, None)
    check_disjoint(split, str(path))
    return split


def check_disjoint(split: Split, where: str) -> None:
    """No patient in two parts of a split (nor twice in one), naming the first that is."""
    seen: dict = {}
    for name, ids in split.items():
        for patient_id in ids:
            if patient_id in seen:
                raise ValueError(f"{where}: patient {patient_id!r} is in both {seen[patient_id]!r} and {name!r}")
            seen[patient_id] = name
