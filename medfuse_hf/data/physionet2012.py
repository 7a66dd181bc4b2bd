"""PhysioNet/CinC Challenge 2012 (ICU in-hospital mortality, "P12") from its official release files.

Reads `set-{a,b,c}.tar.gz` (or the extracted `set-X/` folders) and `Outcomes-X.txt` as downloaded from
https://physionet.org/content/challenge-2012/1.0.0/. Each record file has lines `HH:MM,Parameter,Value` covering
the first 48 h in the ICU; its first lines at 00:00 are static descriptors (RecordID, Age, Gender, Height,
ICUType, Weight).

Choices, documented once here:
- Descriptors become time-0 events (canonical `age`, `gender`, `height`, `icu_type`, `weight`), so the model sees
  them like any observation, and are also kept as scalar columns for analysis. `gender` and `icu_type` are
  categorical.
- `-1` means "missing" in this release and is never fed as a value: such rows are skipped and counted.
- Records with no time series after the descriptors (12 in the release) are skipped and counted, which gives the
  11,988 stays that papers report.
- Every other skip (malformed line, empty parameter as in 2,403 rows of set-c, unknown parameter, non-numeric
  value, time outside 0-48 h, exact duplicate row, record without outcome) is counted in a `LoadSummary` with the
  file and line of its first occurrences. Rows out of time order are kept and sorted, and counted too.
"""

import re
from collections.abc import Iterable
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from ..feature_vocabulary import parse_number
from .clinical_features import PHYSIONET2012_NAMES
from .patient_table import LoadSummary, PatientTableBuilder
from .release_files import find_release, iter_release_files, utf8_errors_named

SETS = ("a", "b", "c")
OBSERVATION_MINUTES = 48 * 60
CLOCK = re.compile(r"\d+:[0-5]\d")  # hours:minutes since ICU admission
DESCRIPTORS = ("RecordID", "Age", "Gender", "Height", "ICUType", "Weight")
STATIC_FIELDS = {"Age": "age", "Gender": "gender", "Height": "height", "ICUType": "icu_type", "Weight": "weight"}
OUTCOME_FIELDS = {
    "SAPS-I": "saps_i",
    "SOFA": "sofa",
    "Length_of_stay": "length_of_stay",
    "Survival": "survival",
    "In-hospital_death": "in_hospital_death",
}
CANONICAL_NAMES = list(dict.fromkeys(PHYSIONET2012_NAMES.values()))
CODE_OF_PARAMETER = {parameter: CANONICAL_NAMES.index(name) for parameter, name in PHYSIONET2012_NAMES.items()}


def load_physionet2012(
    path: str | Path, sets: Iterable[str] | None = None, return_summary: bool = False
) -> datasets.Dataset | tuple[datasets.Dataset, LoadSummary]:
    """One row per ICU stay: `record_id`, `set`, the `feature`/`value`/`time` event lists (canonical names,
    hours since ICU admission), static descriptors, the label `in_hospital_death` and the extra targets
    `saps_i`, `sofa`, `length_of_stay`, `survival` (`None` where the release has -1).

    `path` holds the archives (or extracted folders) and outcome files; `sets=None` loads every set present.
    """
    root = Path(path)
    present = [name for name in SETS if _release_of(root, name) is not None]
    if sets is None:
        sets = present
    sets = list(dict.fromkeys(name.removeprefix("set-") for name in ([sets] if isinstance(sets, str) else sets)))
    missing = [name for name in sets if name not in present]
    if not sets or missing:
        raise FileNotFoundError(
            f"{root}: no PhysioNet 2012 set-{'/'.join(missing or SETS)} archive (set-X.tar.gz) or folder (set-X/)"
        )
    summary = LoadSummary(source=f"PhysioNet 2012 sets {', '.join(sets)} in {root}")
    builder = PatientTableBuilder(CANONICAL_NAMES)
    for name in sets:
        outcomes = _read_outcomes(root / f"Outcomes-{name}.txt")
        for where, text in iter_release_files(_release_of(root, name), ".txt"):
            _add_record(builder, summary, name, where, text, outcomes)
    return builder.finish(summary, return_summary)


def _release_of(root: Path, name: str) -> Path | None:
    return find_release(root, f"set-{name}.tar.gz", f"set-{name}")


def _read_outcomes(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path}: outcome file missing; the label comes from it")
    with utf8_errors_named(path):
        outcomes = pd.read_csv(path)
    absent = {"RecordID", *OUTCOME_FIELDS} - set(outcomes.columns)
    if absent:
        raise ValueError(f"{path}: columns {sorted(absent)} missing; found {list(outcomes.columns)}")
    label = outcomes["In-hospital_death"]
    bad = ~label.isin([0, 1, -1])  # -1: the release's "unknown"
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"{path}, line {row + 2}: RecordID {outcomes['RecordID'].iloc[row]} has In-hospital_death "
                         f"{label.iloc[row]}; the label must be 0 or 1 (-1: unknown)")
    if outcomes["RecordID"].duplicated().any():
        raise ValueError(f"{path}: RecordID {outcomes['RecordID'][outcomes['RecordID'].duplicated()].iloc[0]} "
                         "appears twice")
    return outcomes.set_index("RecordID")


def _add_record(
    builder: PatientTableBuilder, summary: LoadSummary, set_name: str, where: str, text: str, outcomes: pd.DataFrame
) -> None:
    summary.patients_read += 1
    lines = text.splitlines()
    if not lines or lines[0].lstrip("\ufeff").strip() != "Time,Parameter,Value":  # a byte-order mark is no header
        summary.skip_patient("missing 'Time,Parameter,Value' header", f"{where}:1")
        return
    record_id = int(Path(where.split(":")[-1]).stem) if Path(where.split(":")[-1]).stem.isdigit() else None
    codes, values, minutes = [], [], []
    statics: dict[str, float] = {}
    seen: set[tuple[int, int, float]] = set()
    num_series_events, previous_minute = 0, 0
    for line_number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        summary.events_read += 1
        place = f"{where}:{line_number}"
        parts = line.split(",")
        if len(parts) != 3:
            summary.skip_event("malformed line", place)
            continue
        time_text, parameter, value_text = parts
        if not CLOCK.fullmatch(time_text):  # "-00:30" or "00:75" is no time since admission
            summary.skip_event("unparseable time", place)
            continue
        hours, _, mins = time_text.partition(":")
        minute = int(hours) * 60 + int(mins)
        if parameter == "RecordID":
            written = parse_number(value_text)
            if written is None or record_id not in (None, int(written)):  # the file's name and its line disagree
                summary.skip_patient(f"RecordID {value_text!r} is not the file's", place)
                return
            record_id = int(written)
            summary.events_read -= 1  # an identifier, not an observation
            continue
        if not parameter:
            summary.skip_event("empty parameter", place)
            continue
        code = CODE_OF_PARAMETER.get(parameter)
        if code is None:
            summary.skip_event(f"unknown parameter {parameter!r}", place)
            continue
        try:
            value = float(value_text)
        except ValueError:
            value = float("nan")
        if not np.isfinite(value):
            summary.skip_event("non-numeric value", place)
            continue
        if value == -1:
            summary.skip_event("missing value (-1)", place)
            continue
        if not 0 <= minute <= OBSERVATION_MINUTES:
            summary.skip_event("time outside the 48 h window", place)
            continue
        if (minute, code, value) in seen:
            summary.skip_event("duplicate row", place)
            continue
        seen.add((minute, code, value))
        if minute < previous_minute:
            summary.note("out of time order (kept, sorted)", place)
        previous_minute = max(previous_minute, minute)
        if parameter in STATIC_FIELDS and minute == 0 and STATIC_FIELDS[parameter] not in statics:
            statics[STATIC_FIELDS[parameter]] = value
        else:
            num_series_events += 1
        codes.append(code)
        values.append(value)
        minutes.append(minute)
    if num_series_events == 0:
        summary.skip_patient("no time series after the descriptors", where)
        return
    if record_id not in outcomes.index:
        summary.skip_patient("no outcome in Outcomes file", where)
        return
    outcome = outcomes.loc[record_id]
    targets = {field: (None if pd.isna(outcome[column]) or outcome[column] == -1 else int(outcome[column]))
               for column, field in OUTCOME_FIELDS.items()}  # -1 or a blank: unknown
    builder.add(
        np.asarray(codes),
        np.asarray(values),
        np.asarray(minutes) / 60.0,
        record_id=record_id,
        set=set_name,
        **{field: statics.get(field) for field in STATIC_FIELDS.values()},
        **targets,
    )
    summary.patients_kept += 1
    summary.events_kept += len(codes)
