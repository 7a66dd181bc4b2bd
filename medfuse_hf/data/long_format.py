"""A hospital's own event table in long format: one row per observation (patient, time, feature, value).

This is how a hospital brings its data: a CSV or Parquet export of its charted vitals and labs, a mapping of
its local feature names (or item ids) onto the canonical vocabulary, and a labels table. Timestamps become
hours since an anchor column of the labels table (e.g. ICU admission) or else since each patient's first event.

Only numeric observations are loaded (categorical features given as numeric codes, e.g. gender 0/1, work too);
text in the value column of a mapped feature is counted and skipped, never guessed at. Censored lab results
(`<0.01`, `>100`, `GREATER THAN 500`) are kept at their bound and counted under their own reason, or refused.
A CSV row with more or fewer fields than its header is an error naming the file and line, never truncated.

Tables of any size load in bounded memory: they are read a batch at a time (`event_batches`), cleaned batch by batch
(`event_cleaning`), kept and sorted on disk by DuckDB (`event_store`), and returned as a memory-mapped Arrow file.
"""

import glob
import logging
import numbers
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, get_args

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
from datasets.fingerprint import get_temporary_cache_files_directory

from ..progress import progress_bar
from ..timestamps import (
    ISO_OFFSET,
    StampOffsets,
    check_time_zone,
    local_to_utc,
    parse_timestamps,
    refuse_zone_for_hours,
)
from ..units import INTO, UnitConversion, same_unit
from .clinical_features import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from .event_batches import DEFAULT_COLUMNS, TableSource, event_batches, other_delimiter_hint
from .event_cleaning import (
    BatchContext,
    FeatureSpellings,
    TimeKinds,
    blank,
    clean_batch,
    max_hours_reason,
    name_key,
    patient_ids_as_text,
)
from .event_store import EventStore, write_patient_rows
from .patient_table import PATIENT_TABLE_COLUMNS, LoadSummary
from .release_files import utf8_errors_named

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class LongFormatOptions:
    """How a hospital's long-format export is read: one declaration for `load_long_format`, the recipes' flags
    (`recipe_config.add_long_format_arguments`, whose help is each field's `help`) and the cohort requests and run
    records built from them.

    Args:
        columns: where each field lives: keys `patient_id`, `time`, `feature`, `value` (and `unit`) -> source column
            names. A column called `unit` is read as the unit without being named.
        feature_map: source feature name or item id (as text) -> canonical name. Unmapped features are skipped
            and counted; without a map, source names are used as they are.
        anchor_column: labels column holding each patient's time zero (timestamps).
        max_hours: events later than this after the anchor are skipped and counted.
        end_column: labels column holding each patient's end time (an ICU discharge): later events, a later stay's,
            are skipped and counted; with `anchor_column`. A blank end keeps every event.
        label_column: the labels column of a binary outcome: each value must be 0 or 1 (or a key of `label_map`),
            else an error names the patient and line; a missing label leaves the patient unlabeled (None, counted).
        label_map: text label -> 0/1, e.g. `{"yes": 1, "no": 0}`.
        censored: `"bound"` keeps `<x`/`>x`-style results at x (counted), `"refuse"` skips them (counted).
        decimal: the decimal mark of the value column (`","` for European exports); hours may then be written
            `2,5` or `2.5`.
        delimiter: the field separator of CSV tables, events and labels alike (`";"` for many European exports).
        time_format: `strftime` format of the timestamps (and anchors), e.g. `"%d/%m/%Y %H:%M"`; else ISO 8601.
            Times are either numbers of hours or timestamps, one kind per column; UTC offsets are converted to UTC.
        time_zone: the IANA zone (`"Europe/Berlin"`) of the wall clocks that wrote timestamps without a UTC offset.
            They are placed on UTC, so that a stay across a daylight-saving change keeps its true hours (read as UTC,
            they would be an hour off). Events in the hour repeated when clocks go back, or skipped when they go
            forward, name no single instant: skipped and counted (an anchor there skips its patient, counted).
        unit_conversions: with a unit column, feature -> {unit: conversion} into the feature's other unit, as the
            transfer code takes them: `{"temperature": {"°F": (5 / 9, -160 / 9)}}`; `"into": unit` names the unit
            to convert into. A feature recorded in two units without a conversion is an error naming both units and
            their row counts; the unit each feature's values end up in is in the summary's `units`.
        name_variants: a feature name equal to a known one (the feature map's, the clinical catalogue's, or the
            first spelling seen) up to case, Unicode compatibility forms, zero-width characters or Cyrillic
            look-alike letters is read as it, with a warning and a counted note (`"merge"`), or refused.
    """

    columns: Mapping[str, str] | None = field(default=None, metadata={
        "help": "where the fields live, e.g. patient_id=SUBJECT_ID,time=CHARTTIME,feature=ITEMID,value=VALUE"})
    feature_map: Mapping[str, str] | None = field(default=None, metadata={
        "help": "CSV: source item (name or id), canonical name"})
    anchor_column: str | None = field(default=None, metadata={
        "help": "column of the patients/labels table holding each patient's time zero"})
    max_hours: float | None = field(default=None, metadata={
        "help": "events later than this after the anchor are skipped, counted"})
    end_column: str | None = field(default=None, metadata={
        "help": "column of the patients/labels table holding each patient's end time (e.g. ICU discharge): later "
                "events are skipped, counted (with --anchor_column); '' for none, where a model was trained with one"})
    label_column: str | None = field(default=None, metadata={
        "help": "label column of a Parquet or long-format cohort"})
    label_map: Mapping[str, int] | None = field(default=None, metadata={
        "help": "long-format: text labels to 0/1, e.g. yes=1,no=0"})
    censored: Literal["bound", "refuse"] = field(default="bound", metadata={
        "help": "'<0.01'-style results: kept at the bound (counted) or skipped (counted)"})
    decimal: str = field(default=".", metadata={
        "help": "decimal mark of values and hours (',' for European exports)"})
    delimiter: str = field(default=",", metadata={
        "help": "field separator of CSV tables (';' for many European exports)"})
    time_format: str | None = field(default=None, metadata={
        "help": "strftime format of timestamps, e.g. '%d/%m/%Y %H:%M' (default: ISO 8601)"})
    time_zone: str | None = field(default=None, metadata={
        "help": "IANA zone of timestamps written without a UTC offset, e.g. Europe/Berlin: read as its local "
                "clock times, so that hours across a daylight-saving change are right (default: read as UTC)"})
    unit_conversions: Mapping[str, Mapping[str, UnitConversion]] | None = field(default=None, metadata={
        "help": "JSON: feature -> {unit: scale or [scale, offset]}, for a unit column"})
    name_variants: Literal["merge", "refuse"] = field(default="merge", metadata={
        "help": "a name equal to a known feature up to case, Unicode form or look-alike letters: read as it "
                "(logged) or refused"})

    def __post_init__(self) -> None:
        for name in ("censored", "name_variants"):
            choices = get_args(LongFormatOptions.__annotations__[name])
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.time_zone is not None:
            check_time_zone(self.time_zone)
        if len(self.delimiter) != 1 or self.delimiter in "\"\r\n":
            raise ValueError(f"delimiter must be one character other than a quote or line break, got "
                             f"{self.delimiter!r}")

    @classmethod
    def from_settings(cls, settings: Mapping) -> "LongFormatOptions":
        """The options among a recipe's flags (`vars(args)`) or a run's recorded settings; unset ones default."""
        names = {option.name for option in fields(cls)}
        return cls(**{key: value for key, value in settings.items() if key in names and value is not None})

    def as_kwargs(self) -> dict:
        """For `load_long_format(events, labels, **options.as_kwargs())`."""
        return {option.name: getattr(self, option.name) for option in fields(LongFormatOptions)}


def load_long_format(
    events: TableSource | Sequence[TableSource],
    labels: TableSource | None = None,
    *,
    value_transforms: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
    return_summary: bool = False,
    **options,
) -> datasets.Dataset | tuple[datasets.Dataset, LoadSummary]:
    """One row per patient with `feature`/`value`/`time` lists plus every column of the labels table, as an Arrow
    file on disk that `datasets` memory-maps (in its temporary cache, removed when the process ends).

    Args:
        events: CSV/Parquet path(s), glob(s) or DataFrame(s) of events; a list is read one table at a time.
        labels: table with one row per patient (the `patient_id` column) and its labels; patients without a row
            are skipped and counted. Without it, every patient with events is kept.
        value_transforms: source feature -> function on its values, e.g. Fahrenheit to Celsius.
        return_summary: also return the `LoadSummary` of what was read, kept and skipped, and why.
        options: how the table is read, `LongFormatOptions`' fields (`columns=...`, `feature_map=...`, ...).
    """
    options = LongFormatOptions(**options)
    known = {**CATEGORICAL_FEATURES, **NUMERIC_FEATURES} if options.feature_map is None else options.feature_map
    spellings = FeatureSpellings(_spelling_keys(known), options.name_variants)
    columns = {**DEFAULT_COLUMNS, **(options.columns or {})}
    sources = _expanded(list(events) if isinstance(events, (list, tuple)) else [events])
    label_table = _read_labels(labels, columns["patient_id"], options.delimiter) if labels is not None else None
    if options.label_column is not None:
        label_table = _validated_labels(label_table, options.label_column, options.label_map, labels)
    summary = LoadSummary(source=f"long-format events from {len(sources)} table(s)")
    offsets = StampOffsets(time_zone=options.time_zone)
    anchors, unplaced_anchors = (_anchors(label_table, options, offsets, summary) if options.anchor_column
                                 else (None, set()))
    end_hours = None
    if options.end_column:  # "" (predict.py's --end_column ''): no end, whatever the model was trained with
        if anchors is None:
            raise ValueError(f"end_column {options.end_column!r} ends each patient's events after its anchor: give "
                             "anchor_column too")
        ends, unplaced_ends = _anchors(label_table, options, offsets, summary, role="end")
        anchors = anchors.mask(anchors.index.isin(unplaced_ends))  # counted as skipped: their events go too
        unplaced_anchors |= unplaced_ends
        end_hours = _hours_between(anchors, ends, options.end_column)
    tables_by_time_kind: dict[str, str] = {}
    folder = Path(tempfile.mkdtemp(prefix="long-format-", dir=get_temporary_cache_files_directory()))
    store = EventStore(folder, patient_order=None if label_table is None else list(label_table.index))
    read_patients: set[str] = set()  # with rows in some table, kept or not
    try:
        with progress_bar(desc=f"reading {len(sources)} table(s)", unit=" rows", unit_scale=True) as bar:
            for source in sources:
                name = "events" if isinstance(source, pd.DataFrame) else str(source)
                context = BatchContext(
                    name=name, feature_map=options.feature_map, censored=options.censored, decimal=options.decimal,
                    time_format=options.time_format, time_zone=options.time_zone, max_hours=options.max_hours,
                    value_transforms=value_transforms or {}, anchors=anchors, end_hours=end_hours,
                    spellings=spellings, time_kinds=TimeKinds(), offsets=offsets, summary=summary,
                    patients_read=read_patients)
                store.begin_table(name)
                for batch in event_batches(source, columns, summary, options.delimiter):
                    store.add(clean_batch(batch, context))
                    bar.update(len(batch))
                context.time_kinds.refuse_a_mix(name)
                _one_clock(context.time_kinds, name, tables_by_time_kind)
        if anchors is None:  # time zero is each patient's first event, known only now
            store.count_from_first_timestamps()
            store.refuse_serial_days()
            if options.max_hours is not None:
                store.drop_later_than(options.max_hours, max_hours_reason(options.max_hours), summary)
        store.note_conflicting_values("values that differ at one patient, feature and time (all kept)", summary)
        summary.units, conversions, summary.events_without_unit = _unit_plan(
            store.unit_counts(), options.unit_conversions or {}, unmapped=options.feature_map is None)
        for feature, count in summary.events_without_unit.items():
            summary.note("events without a unit, read in the unit their feature's other events give",
                         f"{feature}: {count:,} in {summary.units[feature]}", count)
        patients = _patients_by_rank(store.ranked_patients, store.patients_with_events(), label_table,
                                     options.label_column, summary, counted=unplaced_anchors, read=read_patients)
        dataset = write_patient_rows(store.sorted_events(conversions), patients, folder / "patients.arrow",
                                     store.sources, summary)
    finally:
        store.close()
    summary.log()
    return (dataset, summary) if return_summary else dataset


def _one_clock(kinds: TimeKinds, name: str, tables_by_kind: dict[str, str]) -> None:
    """Every table's times one way: one table in hours and another in timestamps cannot be put on one clock (an
    anchor column refuses the mismatch table by table; without one, the hours would stay as given and the timestamps
    count from the patient's first)."""
    kind = "timestamps" if kinds.stamps else "numbers of hours" if kinds.numbers else None
    if kind is not None:
        tables_by_kind.setdefault(kind, name)
    if len(tables_by_kind) > 1:
        raise ValueError(f"{tables_by_kind['numbers of hours']} gives its times as numbers of hours and "
                         f"{tables_by_kind['timestamps']} as timestamps: give every table's times one way")


def _spelling_keys(known: Mapping[str, str]) -> dict[str, str]:
    """Each known name by what its spellings share (`name_key`). Names are read up to case, so a feature map with
    `pH -> ph` and `PH -> phosphate` cannot be followed: refused, never pH read as phosphate. So are a name mapped to
    nothing and a canonical name spelled two ways (`sodium`, `Sodium`)."""
    keys: dict[str, str] = {}
    canonical_names: dict[str, str] = {}
    for name, canonical in known.items():
        if not str(canonical).strip():
            raise ValueError(f"feature_map maps {name!r} to an empty name")
        spelled = canonical_names.setdefault(name_key(canonical), canonical) if isinstance(canonical, str) else None
        if spelled is not None and spelled != canonical:
            raise ValueError(f"feature_map maps to {spelled!r} and to {canonical!r}, one name spelled two ways: they "
                             "would be two features")
        other = keys.setdefault(name_key(name), name)
        if other != name and known[other] != canonical:
            raise ValueError(f"feature_map maps {other!r} to {known[other]!r} and {name!r} to {canonical!r}, but "
                             "feature names are read up to case and look-alike letters: map both to one name, or "
                             "tell them apart in the export")
    return keys


def matching_files(pattern: str | Path) -> list[str]:
    """The files a path or a glob names, `~` expanded, a glob's matches in name order; empty if nothing is there. The
    one reading of a file flag: the recipes check their flags with it, and the loaders then read what it found."""
    path = os.path.expanduser(str(pattern))
    if Path(path).exists():
        return [path]
    return sorted(glob.glob(path)) if glob.has_magic(path) else []


def _expanded(sources: list[TableSource]) -> list[TableSource]:
    """Each glob (`export/chartevents-*.parquet`) as the files it matches, in name order; a glob that matches
    nothing is an error naming it, never an empty cohort. A missing plain file is left for its reader to name. A file
    given twice (by a glob and by name, or as `export/../export/jan.csv`) is an error: its events would count twice,
    and duplicates are only told apart within one table."""
    expanded, given_as = [], {}
    for source in sources:
        if isinstance(source, pd.DataFrame):
            expanded.append(source)
            continue
        if matches := matching_files(source):
            files = matches
        elif glob.has_magic(str(source)):
            raise FileNotFoundError(f"{source}: no file matches this pattern")
        else:
            files = [source]
        for file in files:
            resolved = Path(file).expanduser().resolve()
            if resolved in given_as:
                raise ValueError(f"{file}: given twice (also as {given_as[resolved]}); its events would count twice")
            given_as[resolved] = source
        expanded += files
    return expanded


def _patients_by_rank(
    ranked: list[str], with_events: list[str], label_table: pd.DataFrame | None, label_column: str | None,
    summary: LoadSummary, counted: set[str] = frozenset(), read: set[str] = frozenset(),
) -> pa.Table:
    """A row per rank (`EventStore.ranked_patients`): `patient_id` and the labels table's fields. A patient on one
    side only is skipped and counted (unless `counted` already, for another reason); the rows of patients without
    events stay, never written, so that each rank stays its row. A patient of the tables (`read`) none of whose
    events was kept is counted too, with or without a labels table: `predict.py` would otherwise leave it out of its
    risks unnamed."""
    has_events = set(with_events)
    listed = set() if label_table is None else set(label_table.index)
    summary.patients_read = len(has_events | listed | read)
    for patient_id in sorted(read - has_events - counted):
        unlisted = label_table is not None and patient_id not in listed  # its events left out for want of a row
        summary.skip_patient("events but no labels row" if unlisted else "no event kept", f"patient {patient_id}")
    if label_table is None:
        return pa.table({"patient_id": pa.array(ranked, pa.string())})
    if has_events and len(label_table) and has_events.isdisjoint(label_table.index):
        raise ValueError(f"no patient of the labels table has events, and no patient with events has a labels row: "
                         f"ids such as {sorted(label_table.index)[:3]} there and {sorted(has_events)[:3]} in the "
                         "events; are they written the same way in both (leading zeros, a prefix)?")
    for patient_id in label_table.index:
        if patient_id not in has_events and patient_id not in read and patient_id not in counted:
            summary.skip_patient("listed (labels or patients table) but no events", f"patient {patient_id}")
    for patient_id in with_events:
        if patient_id not in label_table.index:
            summary.skip_patient("events but no labels row", f"patient {patient_id}")
    if label_column is not None:
        unlabeled = label_table.index[label_table[label_column].isna() & label_table.index.isin(has_events)]
        for patient_id in unlabeled:
            summary.note(f"no {label_column!r} label (kept unlabeled)", f"patient {patient_id}")
    return pa.table({"patient_id": pa.array(list(label_table.index), pa.string()),
                     **{column: pa.array([_plain(value) for value in label_table[column]])
                        for column in label_table.columns}})


def _unit_plan(
    counts: pd.DataFrame, conversions: Mapping[str, Mapping[str, UnitConversion]], unmapped: bool = False
) -> tuple[dict[str, str], dict[tuple[str, str], tuple[float, float]], dict[str, int]]:
    """Each feature's unit across every table (`counts`: rows by feature and unit key, as `EventStore.unit_counts`
    gives them; units compared up to spaces, Unicode look-alikes and the litre's case; a declared unit and `into`
    match as a checkpoint's units do, by `same_unit`), and the conversion of each declared unit into it. Returns
    feature -> unit, (feature, unit key) -> (scale, offset), and feature -> its rows without a unit. Such a row is
    taken to be in its feature's unit, where the feature has one (and counted: a model's units cannot be checked on
    it); where other rows are converted into it, it could be either, and is refused.
    `unmapped` (no feature map): a conflict of a feature that is no catalogue name, a raw item, says to map first."""
    units, converting, unitless = {}, {}, {}
    for feature, found in counts.set_index(["feature", "key"]).groupby(level="feature", sort=True):
        found = found.droplevel("feature")
        without_unit = int(found.loc["", "rows"]) if "" in found.index else 0
        found = found.drop("", errors="ignore")
        if found.empty:
            continue
        by_unit = conversions.get(feature, {})
        into = by_unit.get(INTO)
        declared = {key: conversion for key in found.index
                    if (conversion := _declared_conversion(found.loc[key, "unit"], by_unit)) is not None}
        kept = []  # the undeclared units, one of each that `same_unit` calls one (MG/DL, mg/dl), as cased as written
        for key in sorted((key for key in found.index if key not in declared),
                          key=lambda key: found.loc[key, "unit"].isupper()):
            if not any(same_unit(found.loc[key, "unit"], found.loc[other, "unit"]) for other in kept):
                kept.append(key)
        if into is None:
            one_unit_left = len(kept) == 1
        else:  # the unit named by `into`, or none left at all: the table need not hold the unit it converts into
            one_unit_left = not kept or (len(kept) == 1 and same_unit(found.loc[kept[0], "unit"], into))
        if not one_unit_left:
            seen = ", ".join(f"{found.loc[key, 'unit']!r} ({found.loc[key, 'rows']:,} rows)" for key in found.index)
            target, example = f"into {into!r}" if into else "all but one of them", (kept or list(found.index))[-1]
            raw_item = unmapped and feature not in {**CATEGORICAL_FEATURES, **NUMERIC_FEATURES}
            raise ValueError(f"feature {feature!r} is recorded in {seen}: declare how to convert {target}, "
                             f"e.g. unit_conversions={{{feature!r}: "
                             f"{{{found.loc[example, 'unit']!r}: scale or (scale, offset)}}}}"
                             + (f". {feature!r} is no clinical feature name: an export's items are usually mapped "
                                "to canonical names first (feature_map, --feature_map), which also leaves the "
                                "unmapped ones out" if raw_item else ""))
        units[feature] = into or found.loc[kept[0], "unit"]
        if without_unit and declared:
            converted = ", ".join(repr(found.loc[key, "unit"]) for key in declared)
            raise ValueError(f"feature {feature!r}: {without_unit:,} rows have no unit, while rows in {converted} are "
                             f"converted into {units[feature]!r}; a row without one could be in either. Give every "
                             "row of it a unit")
        if without_unit:
            unitless[feature] = without_unit
        for key, conversion in declared.items():
            scale, offset = (conversion, 0.0) if isinstance(conversion, numbers.Real) else conversion
            converting[(feature, key)] = (float(scale), float(offset))
    return units, converting, unitless


def _declared_conversion(unit: str, by_unit: Mapping[str, UnitConversion]) -> UnitConversion | None:
    """The conversion declared for a table's unit, matched as checkpoints' units are (`same_unit`): a declaration in
    mg/dL applies to a feed that writes MG/DL."""
    return next((conversion for declared, conversion in by_unit.items()
                 if declared != INTO and same_unit(unit, declared)), None)


def _validated_labels(
    table: pd.DataFrame | None, label_column: str, label_map: Mapping[str, int] | None, source: TableSource
) -> pd.DataFrame:
    """The binary label as 0/1 (None where missing): any other value is an error naming the patient and line."""
    name = "labels" if isinstance(source, pd.DataFrame) else str(source)
    if table is None or label_column not in table.columns:
        raise ValueError(f"{name}: label column {label_column!r} missing"
                         + ("" if table is None else f"; it has {list(table.columns)}"))
    mapping = {**{"0": 0, "1": 1, "0.0": 0, "1.0": 1},
               **{str(k).strip().lower(): int(v) for k, v in (label_map or {}).items()}}
    raw = table[label_column]
    missing = raw.isna() | raw.astype(str).str.strip().eq("")
    labels = raw.astype(str).str.strip().str.lower().map(mapping)
    bad = labels.isna() & ~missing
    if bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        patient = table.index[position]
        raise ValueError(f"{name}, {_place(source, position, len(table))}: patient {patient!r} has {label_column} "
                         f"'{raw.iloc[position]}'; a binary label must be 0 or 1 (map other values with label_map, "
                         "e.g. yes=1,no=0)")
    values = [None if pd.isna(value) else int(value) for value in labels]
    return table.assign(**{label_column: pd.Series(values, index=table.index, dtype=object)})


def _read_labels(labels: TableSource, id_column: str, delimiter: str = ",") -> pd.DataFrame:
    """The table of one row per patient, indexed by id, its rows in the file's order."""
    name = "labels" if isinstance(labels, pd.DataFrame) else str(labels)
    if isinstance(labels, pd.DataFrame):
        table = labels.reset_index(drop=True)
    elif str(labels).endswith(".parquet"):
        table = pd.read_parquet(labels)
    else:
        # ids as text, as the events' are read: "007" stays "007", never 7; each column's type inferred from the
        # whole file (low_memory=False), or a column of numbers then text would hold both, which Arrow refuses
        with utf8_errors_named(labels):
            table = pd.read_csv(labels, encoding="utf-8-sig", dtype={id_column: str}, sep=delimiter, low_memory=False)
    if id_column not in table.columns:
        raise ValueError(f"{name}: patient id column {id_column!r} missing; it has {list(table.columns)}"
                         f"{other_delimiter_hint(list(table.columns), delimiter)}")
    if reused := [str(column) for column in table.columns if column in PATIENT_TABLE_COLUMNS and column != id_column]:
        raise ValueError(f"{name}: column {reused[0]!r} is a name the patient table gives its own column (the patient "
                         f"ids, read from {id_column!r}, or the events): rename or drop it")
    no_id = blank(table[id_column]).to_numpy()
    if no_id.any():
        raise ValueError(f"{name}, {_place(labels, int(np.flatnonzero(no_id)[0]), len(table))}: no patient id")
    ids = patient_ids_as_text(table[id_column])
    duplicated = ids.duplicated().to_numpy()
    if duplicated.any():
        position = int(np.flatnonzero(duplicated)[0])
        raise ValueError(f"{name}, {_place(labels, position, len(table))}: patient {ids.iloc[position]!r} has more "
                         "than one labels row")
    return table.assign(**{id_column: ids}).set_index(id_column)


def _place(source: TableSource, position: int, rows: int) -> str:
    """Where the `position`-th of a table's `rows` is: "line 7" of a CSV, whose blank lines pandas skipped but its
    reader counts; "row 5" of a table in memory, a Parquet file, or a CSV whose lines are not its rows one to one (a
    field over two lines; compressed). Read again only to name a fault."""
    if not isinstance(source, pd.DataFrame) and Path(source).suffix == ".csv":
        with open(source, encoding="utf-8-sig") as text:
            lines = [number for number, line in enumerate(text, start=1) if number > 1 and line.strip()]
        if len(lines) == rows:
            return f"line {lines[position]}"
    return f"row {position}"


def _anchors(labels: pd.DataFrame | None, options: LongFormatOptions, offsets: StampOffsets,
             summary: LoadSummary, role: str = "anchor") -> tuple[pd.Series, set[str]]:
    """Each patient's time zero (`role` "anchor", from `anchor_column`) or end time ("end", from `end_column`):
    hours, or timestamps parsed as the events' are (whether they carry UTC offsets recorded in `offsets`, which the
    events' must match; local clock times put on UTC); an unparseable one names its patient. Also the patients
    skipped (counted) because theirs names no single instant."""
    column = getattr(options, f"{role}_column")
    if labels is None:
        raise ValueError(f"{role}_column {column!r} is read from a table of one row per patient: give it (the "
                         "labels, or predict.py's --patients)")
    if column not in labels.columns:
        raise ValueError(f"{role}_column {column!r} is not a column of the labels or patients table; it has "
                         f"{list(labels.columns)}")
    raw = labels[column]
    places = "patient " + labels.index.to_series().map(repr) + f" ({role} column {column!r})"
    if pd.api.types.is_datetime64_any_dtype(raw):  # a Parquet timestamp column: already times, UTC out as parsed
        offsets.check(pd.Series(raw.dt.tz is not None, index=raw.index), raw.astype(str), places)
        stamps = raw.dt.tz_convert("UTC").dt.tz_localize(None) if raw.dt.tz is not None else raw
        return _on_utc(stamps, raw.astype(str), places, options.time_zone, summary, role)
    if pd.api.types.is_timedelta64_dtype(raw):  # durations are hours (pd.to_numeric would read their nanoseconds)
        raw = raw / pd.Timedelta(hours=1)
    numeric = pd.to_numeric(raw, errors="coerce")
    in_time_format = options.time_format is not None and pd.to_datetime(  # 202004031000 in %Y%m%d%H%M: a time
        raw.astype(str).str.strip(), format=options.time_format, errors="coerce").notna().any()
    if not in_time_format and numeric[~blank(raw)].notna().all():  # hours; a blank anchor: its events counted
        if numeric.notna().any():
            refuse_zone_for_hours(options.time_zone, f"{role} column {column!r}")
        return numeric, set()
    text = raw.astype(str).str.strip()
    stamps = parse_timestamps(text, options.time_format, f"{role} column {column!r}",
                              "patient " + labels.index.to_series().map(repr))
    bad = stamps.isna() & raw.notna()
    if bad.any():
        raise ValueError(f"{role} column {column!r}: patient {labels.index[bad.to_numpy()][0]!r} has {role} "
                         f"{text[bad].iloc[0]!r}, which is no time")
    present = stamps.notna()
    offsets.check(text[present].str.contains(ISO_OFFSET), text[present], places[present])
    return _on_utc(stamps, text, places, options.time_zone, summary, role)


def _hours_between(anchors: pd.Series, ends: pd.Series, end_column: str) -> pd.Series:
    """Each patient's end as hours after its anchor, both hours or both times; an end before its anchor is refused
    by patient (a mixed-up column), a blank one is NaN (no end)."""
    if ends.isna().all():  # a column of blanks (patients still in the unit): no end to any
        return pd.Series(np.nan, index=ends.index)
    anchor_is_time, end_is_time = (pd.api.types.is_datetime64_any_dtype(times) for times in (anchors, ends))
    if anchor_is_time != end_is_time:
        raise ValueError(f"end_column {end_column!r} holds {'times' if end_is_time else 'hours'} where the anchors "
                         f"are {'times' if anchor_is_time else 'hours'}: give both alike")
    hours = (ends - anchors) / pd.Timedelta(hours=1) if end_is_time else ends - anchors
    if (before := hours < 0).any():
        raise ValueError(f"end_column {end_column!r}: patient {hours.index[before.to_numpy()][0]!r} ends before its "
                         "anchor")
    return hours


def _on_utc(stamps: pd.Series, text: pd.Series, places: pd.Series, time_zone: str | None,
            summary: LoadSummary, role: str = "anchor") -> tuple[pd.Series, set[str]]:
    """Naive anchors (or end times) as UTC: as they are, or read as `time_zone`'s clock times; one that names no
    single instant skips its patient (counted, and returned), whose events are then counted as having no anchor."""
    if time_zone is None:
        return stamps, set()
    stamps, unplaced = local_to_utc(stamps, time_zone)
    anchorless = pd.Series(False, index=stamps.index)
    for reason, mask in unplaced.items():
        for place, value in zip(places[mask], text[mask]):
            summary.skip_patient(f"{role} is a {reason}", f"{place}: {value!r}")
        anchorless |= mask
    return stamps, set(stamps.index[anchorless])


def _plain(value):
    """Arrow-friendly scalars: numpy numbers to Python, NaN and NaT to None, timestamps to ISO text."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value.item() if isinstance(value, np.generic) else value
