"""PhysioNet/CinC Challenge 2019 (early sepsis prediction, "P19") from its official release files.

Reads `training_setA.zip` / `training_setB.zip` (or folders of `.psv` files) as downloaded from
https://physionet.org/content/challenge-2019/1.0.0/. Each patient file is an hourly grid, `|`-separated, with
`NaN` where nothing was measured; set A and set B come from two different hospital systems.

Choices, documented once here:
- Only observed cells become events, at `time` = `ICULOS` (hours since ICU admission), with canonical names
  shared with PhysioNet 2012 (`clinical_features.PHYSIONET2019_NAMES`).
- `Age` and `Gender` become one event each at the first hour, and `Unit1`/`Unit2` (medical/surgical ICU flags)
  become the `icu_type` event with P12's codes (3 medical, 4 surgical), so P12 checkpoints read them. They are
  also scalar columns, with `HospAdmTime` as `hospital_admission_hours`.
- `sepsis` (the patient-level label) is 1 when any hour has `SepsisLabel` 1; the per-hour labels are kept in
  `sepsis_label` beside `hours`. In this release the hourly label turns 1 six hours *before* clinical onset;
  `sepsis_onset_hour` is the earliest hour labelled 1. `observation_hours=H` keeps only the events of the first H
  ICU hours (`ICULOS` ≤ H; `ICULOS` counts from 1), the early-prediction setting; the labels are left whole, so
  filter on `sepsis_onset_hour` as your protocol requires.
- Malformed lines, non-numeric cells, unknown columns, duplicated hours and hours out of order are counted in
  a `LoadSummary` with file and line; a truncated archive is an error.
"""

from collections.abc import Iterable
from pathlib import Path

import datasets
import numpy as np

from .clinical_features import PHYSIONET2019_NAMES
from .patient_table import LoadSummary, PatientTableBuilder
from .release_files import find_release, iter_release_files

SETS = {"A": "training_setA", "B": "training_setB"}
ICU_TYPE_OF_UNIT = {"Unit1": 3.0, "Unit2": 4.0}  # medical, surgical ICU in PhysioNet 2012's icu_type codes
BOOKKEEPING_COLUMNS = ("Unit1", "Unit2", "HospAdmTime", "ICULOS", "SepsisLabel")
ONCE_PER_PATIENT = ("Age", "Gender")
# The top code of age: "90 or older" is 90 in P12 and hospital A, 100 in hospital B; one code for one group.
OLDEST_CODED_AGE, OLDEST_CODED_AGE_B = 90.0, 100.0
CANONICAL_NAMES = [*dict.fromkeys(PHYSIONET2019_NAMES.values()), "icu_type"]
ICU_TYPE_CODE = CANONICAL_NAMES.index("icu_type")
CODE_OF_COLUMN = {name: CANONICAL_NAMES.index(canonical) for name, canonical in PHYSIONET2019_NAMES.items()}


def load_physionet2019(
    path: str | Path,
    sets: Iterable[str] | None = None,
    observation_hours: float | None = None,
    return_summary: bool = False,
) -> datasets.Dataset | tuple[datasets.Dataset, LoadSummary]:
    """One row per patient: `patient_id`, `hospital` ("A"/"B"), `feature`/`value`/`time` events, `age`,
    `gender`, `icu_type`, `hospital_admission_hours`, `sepsis`, `sepsis_onset_hour`, and the hourly `hours` /
    `sepsis_label` lists. `sets=None` loads every set present in `path`.
    """
    root = Path(path)
    present = [name for name in SETS if _release_of(root, name) is not None]
    sets = present if sets is None else list(dict.fromkeys(name.upper().removeprefix("TRAINING_SET")
                                                       for name in ([sets] if isinstance(sets, str) else sets)))
    missing = [name for name in sets if name not in present]
    if not sets or missing:
        raise FileNotFoundError(f"{root}: no PhysioNet 2019 training_set{'/'.join(missing or SETS)}.zip or folder")
    summary = LoadSummary(source=f"PhysioNet 2019 sets {', '.join(sets)} in {root}")
    builder = PatientTableBuilder(CANONICAL_NAMES)
    for hospital in sets:
        for where, text in iter_release_files(_release_of(root, hospital), ".psv"):
            _add_patient(builder, summary, hospital, where, text, observation_hours)
    return builder.finish(summary, return_summary)


def _release_of(root: Path, hospital: str) -> Path | None:
    return find_release(root, f"{SETS[hospital]}.zip", SETS[hospital])


def _parse_grid(text: str, where: str, summary: LoadSummary) -> tuple[list[str], np.ndarray, list[int]] | None:
    """(columns, hourly grid, file line of each grid row); malformed lines are skipped and counted."""
    lines = text.splitlines()
    if not lines:
        summary.skip_patient("empty file", where)
        return None
    columns = lines[0].split("|")
    if twice := sorted({name for name in columns if columns.count(name) > 1}):
        summary.skip_patient(f"header names {twice[0]!r} twice", f"{where}:1")
        return None
    try:  # one grid row per line (loadtxt would skip a blank line, and read "#" as a comment, unnumbered)
        grid = np.loadtxt(lines[1:], delimiter="|", dtype=np.float64, ndmin=2, comments=None)
        if grid.shape == (len(lines) - 1, len(columns)):
            return columns, grid, list(range(2, len(lines) + 1))
    except ValueError:
        pass
    rows, line_numbers = [], []  # slow path, line by line, only for files the fast path rejected
    for line_number, line in enumerate(lines[1:], start=2):
        if not line.strip():  # no row, as in P12's files
            continue
        cells = line.split("|")
        try:
            if len(cells) != len(columns):
                raise ValueError("malformed line")
            rows.append([float(cell) for cell in cells])
            line_numbers.append(line_number)
        except ValueError as error:
            # An unreadable line counts as one event read and skipped, so the summary's totals add up.
            summary.events_read += 1
            reason = "malformed line" if str(error) == "malformed line" else "non-numeric value"
            summary.skip_event(reason, f"{where}:{line_number}")
    return columns, np.asarray(rows, dtype=np.float64).reshape(len(rows), len(columns)), line_numbers


def _add_patient(
    builder: PatientTableBuilder,
    summary: LoadSummary,
    hospital: str,
    where: str,
    text: str,
    observation_hours: float | None,
) -> None:
    summary.patients_read += 1
    parsed = _parse_grid(text, where, summary)
    if parsed is None:
        return
    columns, grid, line_numbers = parsed
    absent = [name for name in ("ICULOS", "SepsisLabel") if name not in columns]
    if absent:
        summary.skip_patient(f"columns {absent} missing", f"{where}:1")
        return
    column = {name: index for index, name in enumerate(columns)}
    hours = grid[:, column["ICULOS"]]
    if not np.isfinite(hours).all():  # its events' times, and the cut-off, would be unknown
        first = np.flatnonzero(~np.isfinite(hours))[0]
        summary.skip_patient("an hour without ICULOS", f"{where}:{line_numbers[first]}")
        return
    ages = grid[:, column["Age"]] if "Age" in column else np.array([])
    if (ages == OLDEST_CODED_AGE_B).any():  # hospital B codes "90 or older" as 100, P12 and hospital A as 90
        grid[ages == OLDEST_CODED_AGE_B, column["Age"]] = OLDEST_CODED_AGE
        summary.note("age 100 ('90 or older') read as 90", where)
    for row in np.flatnonzero(np.diff(hours) < 0) + 1:
        summary.note("hours out of order (kept, sorted)", f"{where}:{line_numbers[row]}")
    raw_label = grid[:, column["SepsisLabel"]]
    bad = np.flatnonzero(~np.isin(raw_label, (0.0, 1.0)))  # NaN too: a label is never guessed
    if bad.size:
        raise ValueError(f"{where}:{line_numbers[bad[0]]}: SepsisLabel {raw_label[bad[0]]:g}; "
                         "the hourly label must be 0 or 1")
    sepsis_label = raw_label.astype(int)
    # All measurement cells at once: (row, column) of every observed cell, Age/Gender only at their first row.
    measured = [index for name, index in column.items() if name not in BOOKKEEPING_COLUMNS]
    infinite = np.isinf(grid[:, measured])
    if infinite.any():  # read as a measurement, but no value: counted, not silently left out
        summary.events_read += int(infinite.sum())
        summary.skip_event("infinite value", f"{where}:{line_numbers[np.nonzero(infinite)[0][0]]}",
                           int(infinite.sum()))
    observed = np.isfinite(grid[:, measured])
    for position, index in enumerate(measured):
        if columns[index] in ONCE_PER_PATIENT:
            observed[:, position] &= np.cumsum(observed[:, position]) == 1
    rows, positions = np.nonzero(observed)
    summary.events_read += rows.size
    code_of = np.array([CODE_OF_COLUMN.get(columns[index], -1) for index in measured])
    codes = code_of[positions]
    _, first_of_hour = np.unique(hours, return_index=True)
    duplicated = np.ones(len(grid), dtype=bool)
    duplicated[first_of_hour] = False
    after_cutoff = hours > observation_hours if observation_hours is not None else np.zeros(len(grid), dtype=bool)
    keep = np.ones(rows.size, dtype=bool)
    unknown = [(f"unknown column {columns[measured[p]]!r}", positions == p) for p in np.unique(positions[codes < 0])]
    for reason, bad in (
        *unknown,
        ("duplicate hour", duplicated[rows]),
        ("after the observation_hours cut-off", after_cutoff[rows]),
    ):
        bad &= keep
        if bad.any():
            summary.skip_event(reason, f"{where}:{line_numbers[rows[np.flatnonzero(bad)[0]]]}", int(bad.sum()))
            keep &= ~bad
    codes, values, times = ([codes[keep]], [grid[rows[keep], np.asarray(measured)[positions[keep]]]],
                            [hours[rows[keep]]])
    icu_type = _icu_type(grid, column, ~after_cutoff)
    if icu_type is not None:
        summary.events_read += 1
        codes.append(np.array([ICU_TYPE_CODE]))
        values.append(np.array([icu_type]))
        times.append(hours[~after_cutoff][:1])
    if not sum(len(chunk) for chunk in codes):
        summary.skip_patient("no observations" + (" before the cut-off" if observation_hours else ""), where)
        return
    codes, values, times = np.concatenate(codes), np.concatenate(values), np.concatenate(times)
    onset = np.flatnonzero(sepsis_label == 1)
    builder.add(
        codes,
        values,
        times,
        patient_id=Path(where.split(":")[-1]).stem,
        hospital=hospital,
        age=_first_observed(grid, column, "Age"),
        gender=_first_observed(grid, column, "Gender"),
        icu_type=icu_type,
        hospital_admission_hours=_first_observed(grid, column, "HospAdmTime"),
        sepsis=int(onset.size > 0),
        sepsis_onset_hour=float(hours[onset].min()) if onset.size else None,  # rows may be out of order
        hours=hours.astype(np.float32).tolist(),
        sepsis_label=sepsis_label.tolist(),
    )
    summary.patients_kept += 1
    summary.events_kept += len(codes)


def _first_observed(grid: np.ndarray, column: dict[str, int], name: str) -> float | None:
    if name not in column:
        return None
    observed = grid[np.isfinite(grid[:, column[name]]), column[name]]
    return float(observed[0]) if observed.size else None


def _icu_type(grid: np.ndarray, column: dict[str, int], rows: np.ndarray) -> float | None:
    for name, code in ICU_TYPE_OF_UNIT.items():
        if name in column and (grid[rows, column[name]] == 1).any():
            return code
    return None
