"""The forms a patient may come in, read one way: a list of `(feature, value, time)` tuples, a mapping of
`feature`/`value`/`time` columns, a long-format DataFrame (several patients with a `patient_column`), a `datasets`
batch or `Dataset`. The tokenizer takes any of them and sees only columns and row labels."""

from collections.abc import Mapping, Sequence
from typing import Any

import datasets
import numpy as np
import pandas as pd

IDENTIFYING_KEYS = ("record_id", "patient_id", "subject_id", "stay_id")


def is_triplet(item: Any) -> bool:
    return (
        isinstance(item, (tuple, list))
        and len(item) == 3
        and not isinstance(item[0], (list, tuple, Mapping, pd.DataFrame, np.ndarray))
    )


def as_patient_list(patients: Any, patient_column: str | None) -> tuple[list, bool]:
    """Normalise every accepted input form to a list of patients, and say whether it was a single patient."""
    if isinstance(patients, datasets.Dataset):
        return list(patients), False
    if isinstance(patients, pd.DataFrame):
        if patient_column is None:
            return [patients], True
        return [group for _, group in patients.groupby(patient_column, sort=False)], False
    if isinstance(patients, Mapping):
        if "feature" not in patients:
            raise ValueError(f"a patient mapping needs 'feature', 'value' and 'time' columns, got {sorted(patients)}")
        column = patients["feature"]
        if len(column) and isinstance(column[0], (list, tuple, np.ndarray)):
            keys = list(patients)
            return [dict(zip(keys, row)) for row in zip(*(patients[key] for key in keys))], False
        return [patients], True
    if isinstance(patients, (list, tuple)):
        if not patients:
            raise ValueError("no patients given")
        if is_triplet(patients[0]):
            return [patients], True
        return list(patients), False
    raise TypeError(f"cannot read patients from a {type(patients).__name__}")


def columns_of(patient: Any) -> tuple[Sequence, Sequence, Sequence, list]:
    """(features, values, times, row labels) of one patient in any accepted form."""
    if isinstance(patient, pd.DataFrame):
        missing = {"feature", "value", "time"} - set(patient.columns)
        if missing:
            raise ValueError(f"DataFrame lacks columns {sorted(missing)}; it has {list(patient.columns)}")
        return (patient["feature"].tolist(), patient["value"].tolist(), patient["time"].tolist(),
                patient.index.tolist())
    if isinstance(patient, Mapping):
        features, values, times = (list(patient[key]) for key in ("feature", "value", "time"))
        if not len(features) == len(values) == len(times):
            raise ValueError(
                f"feature, value and time columns differ in length: {len(features)}, {len(values)}, {len(times)}"
            )
        return features, values, times, list(range(len(features)))
    if isinstance(patient, (list, tuple)):
        for row, item in enumerate(patient):
            if not is_triplet(item):
                raise ValueError(f"row {row}: expected a (feature, value, time) triplet, got {item!r}")
        features, values, times = zip(*patient) if patient else ((), (), ())
        return list(features), list(values), list(times), list(range(len(patient)))
    raise TypeError(f"cannot read a patient from a {type(patient).__name__}")


def describe_patient(patient: Any, index: int) -> str:
    """'patient 3 (record_id=132539)': how errors name the patient at fault."""
    if isinstance(patient, Mapping):
        for key in IDENTIFYING_KEYS:
            if key in patient and not isinstance(patient[key], (list, tuple, np.ndarray)):
                return f"patient {index} ({key}={patient[key]})"
    return f"patient {index}"
