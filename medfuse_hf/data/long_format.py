"""A hospital's own event table in long format: one row per observation (patient, time, feature, value).

This is how a hospital brings its data: a CSV or Parquet export of its charted vitals and labs, a mapping of
its local feature names (or item ids) onto the canonical vocabulary, and a labels table. Timestamps become
hours since an anchor column of the labels table (e.g. ICU admission) or else since each patient's first event.

Only numeric observations are loaded (categorical features given as numeric codes, e.g. gender 0/1, work too);
text in the value column of a mapped feature is counted and skipped, never guessed at. Censored lab results
(`<0.01`, `>100`, `GREATER THAN 500`) are kept at their bound and counted under their own reason, or refused.
A CSV row with more or fewer fields than its header is an error naming the file and line, never truncated.
"""

import csv
import logging
import numbers
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, get_args

import datasets
import numpy as np
import pandas as pd

from ..timestamps import SERIAL_DAYS_ADVICE, looks_like_serial_days, parse_timestamps
from ..units import INTO, UnitConversion, same_unit, unit_key
from .clinical_features import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from .patient_table import LoadSummary, PatientTableBuilder
from .release_files import utf8_errors_named

logger = logging.getLogger(__name__)

DEFAULT_COLUMNS = {"patient_id": "patient_id", "time": "time", "feature": "feature", "value": "value"}
OPTIONAL_COLUMNS = ("unit",)  # read when `columns` names them, or a column has their name
TableSource = str | Path | pd.DataFrame
CENSORED = re.compile(r"^\s*(<=|>=|<|>|less than|greater than)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*$",
                      re.IGNORECASE)
CENSORED_KEPT = "censored value, kept at the bound"


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
        label_column: the labels column of a binary outcome: each value must be 0 or 1 (or a key of `label_map`),
            else an error names the patient and line; a missing label leaves the patient unlabeled (None, counted).
        label_map: text label -> 0/1, e.g. `{"yes": 1, "no": 0}`.
        censored: `"bound"` keeps `<x`/`>x`-style results at x (counted), `"refuse"` skips them (counted).
        decimal: the decimal mark of the value column (`","` for European exports).
        time_format: `strftime` format of the timestamps (and anchors), e.g. `"%d/%m/%Y %H:%M"`; else ISO 8601.
            Times are either numbers of hours or timestamps, one kind per column; UTC offsets are converted to UTC.
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
    label_column: str | None = field(default=None, metadata={
        "help": "label column of a Parquet or long-format cohort"})
    label_map: Mapping[str, int] | None = field(default=None, metadata={
        "help": "long-format: text labels to 0/1, e.g. yes=1,no=0"})
    censored: Literal["bound", "refuse"] = field(default="bound", metadata={
        "help": "'<0.01'-style results: kept at the bound (counted) or skipped (counted)"})
    decimal: str = field(default=".", metadata={
        "help": "decimal mark of the value column (',' for European exports)"})
    time_format: str | None = field(default=None, metadata={
        "help": "strftime format of timestamps, e.g. '%d/%m/%Y %H:%M' (default: ISO 8601)"})
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
    """One row per patient with `feature`/`value`/`time` lists plus every column of the labels table.

    Args:
        events: CSV/Parquet path(s) or DataFrame(s) of events; a list is read one table at a time.
        labels: table with one row per patient (the `patient_id` column) and its labels; patients without a row
            are skipped and counted. Without it, every patient with events is kept.
        value_transforms: source feature -> function on its values, e.g. Fahrenheit to Celsius.
        return_summary: also return the `LoadSummary` of what was read, kept and skipped, and why.
        options: how the table is read, `LongFormatOptions`' fields (`columns=...`, `feature_map=...`, ...).
    """
    options = LongFormatOptions(**options)
    known = {**CATEGORICAL_FEATURES, **NUMERIC_FEATURES} if options.feature_map is None else options.feature_map
    spellings = {name_key(name): name for name in known}  # grows with the first spelling of each new name
    columns = {**DEFAULT_COLUMNS, **(options.columns or {})}
    sources = list(events) if isinstance(events, (list, tuple)) else [events]
    label_table = _read_labels(labels, columns["patient_id"]) if labels is not None else None
    if options.label_column is not None:
        label_table = _validated_labels(label_table, options.label_column, options.label_map, labels)
    anchors = _anchors(label_table, options.anchor_column, options.time_format) if options.anchor_column else None
    summary = LoadSummary(source=f"long-format events from {len(sources)} table(s)")
    per_patient: dict[str, list[pd.DataFrame]] = {}
    has_units = False
    for source in sources:
        table, name = _read_table(source, columns, summary)
        has_units |= table["unit"].ne("").any()
        table = table.assign(feature=_spelled_as_known(table, name, spellings, options.name_variants, summary))
        table = _clean(table, name, options, value_transforms or {}, anchors, summary)
        for patient_id, group in table.groupby("patient_id", sort=False):
            per_patient.setdefault(patient_id, []).append(group)
    if has_units:
        summary.units = _convert_units(per_patient, options.unit_conversions or {})
    names = sorted({feature for groups in per_patient.values() for group in groups
                    for feature in group["feature"].unique()})
    code_of = {feature: code for code, feature in enumerate(names)}
    builder = PatientTableBuilder(names)
    patient_ids = list(label_table.index) if label_table is not None else list(per_patient)
    summary.patients_read = len(set(patient_ids) | set(per_patient))
    for patient_id in patient_ids:
        if patient_id not in per_patient:
            summary.skip_patient("labels row but no events", f"patient {patient_id}")
            continue
        group = pd.concat(per_patient.pop(patient_id))
        patient_fields = label_table.loc[patient_id].to_dict() if label_table is not None else {}
        if options.label_column is not None and patient_fields[options.label_column] is None:
            summary.note(f"no {options.label_column!r} label (kept unlabeled)", f"patient {patient_id}")
        builder.add(group["feature"].map(code_of).to_numpy(), group["value"].to_numpy(), group["hours"].to_numpy(),
                    patient_id=patient_id, **{key: _plain(value) for key, value in patient_fields.items()})
        summary.patients_kept += 1
        summary.events_kept += len(group)
    for patient_id in per_patient:  # events but no labels row
        summary.skip_patient("events but no labels row", f"patient {patient_id}")
    return builder.finish(summary, return_summary)


def _read_table(source: TableSource, columns: Mapping[str, str], summary: LoadSummary) -> tuple[pd.DataFrame, str]:
    """The four needed columns and `unit` (where `columns` names it, or a column is called so; else empty), renamed,
    with `line` (the CSV line, or the row number) for messages. Columns left unread are noted in the summary: a
    unit column under another name would otherwise mix °F and °C rows silently."""
    if isinstance(source, pd.DataFrame):
        table, name, first_line = source, "events", 0
    else:
        path = Path(source)
        name = str(path)
        table, first_line = (pd.read_parquet(path), 0) if path.suffix == ".parquet" else (_read_csv(path), 2)
    columns = {**{key: key for key in OPTIONAL_COLUMNS if key in table.columns}, **columns}
    fields = [*DEFAULT_COLUMNS, *(key for key in OPTIONAL_COLUMNS if key in columns)]
    absent = [columns[key] for key in fields if columns[key] not in table.columns]
    if absent:
        raise ValueError(f"{name}: columns {absent} missing; it has {list(table.columns)}")
    if table.empty:
        raise ValueError(f"{name}: no event rows, only a header")
    unread = [column for column in table.columns if column not in {columns[key] for key in fields}]
    if unread:
        summary.note(f"columns not read: {unread} (name them in columns=... if they matter)", name)
    table = table[[columns[key] for key in fields]].set_axis(fields, axis=1)
    if "unit" not in table.columns:  # every row in its feature's unit
        table = table.assign(unit="")
    return table.assign(line=np.arange(len(table)) + first_line), name


def _read_csv(path: Path) -> pd.DataFrame:
    """Every field as text (ids stay ids, `007` stays `007`), a UTF-8 byte-order mark ignored, after checking that
    every row has the header's number of fields: pandas would otherwise drop the extra field of an unquoted decimal
    comma (`p1,2.0,potassium,3,9`), or take a short row's missing value for an empty one."""
    with utf8_errors_named(path), path.open(newline="", encoding="utf-8-sig") as file:
        rows = csv.reader(file)
        header = next(rows, None)
        if header is None:
            raise ValueError(f"{path}: the file is empty")
        for row in rows:
            if len(row) != len(header) and row:
                raise ValueError(f"{path}, line {rows.line_num}: {len(row)} fields where the header has {len(header)}"
                                 " (quote values that contain the delimiter, e.g. a decimal comma)")
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", index_col=False)


def _clean(
    table: pd.DataFrame,
    name: str,
    options: LongFormatOptions,
    value_transforms: Mapping[str, Callable],
    anchors: pd.Series | None,
    summary: LoadSummary,
) -> pd.DataFrame:
    """Map features, parse values and times, and drop (counting each reason) what cannot be an event."""
    summary.events_read += len(table)
    # names arrive stripped and spelled as known (`_spelled_as_known`); item ids 220045 and 220045.0 are one
    table = table.assign(patient_id=_as_text(table["patient_id"]), source_feature=table["feature"])

    def drop(mask: pd.Series, reason: str) -> pd.DataFrame:
        if mask.any():
            summary.skip_event(reason, f"{name}:{table.loc[mask, 'line'].iloc[0]}", int(mask.sum()))
        return table[~mask]

    if options.feature_map is not None:
        table = table.assign(feature=table["source_feature"].map(options.feature_map))
        table = drop(table["feature"].isna(), "feature not in feature_map")
    table = drop(table["value"].isna() | table["value"].astype(str).str.strip().eq(""), "empty value")
    text = table["value"].astype(str).str.strip()
    if options.decimal != ".":
        # 1.234,5 -> 1234.5
        text = text.str.replace(".", "", regex=False).str.replace(options.decimal, ".", regex=False)
    bounds = text.str.extract(CENSORED)[1]
    is_censored = bounds.notna()
    if options.censored == "refuse":
        table = drop(is_censored, "censored value (refused)")
        text, is_censored = text[~is_censored], is_censored[~is_censored]
    elif is_censored.any():
        summary.note(CENSORED_KEPT, f"{name}:{table.loc[is_censored, 'line'].iloc[0]}", int(is_censored.sum()))
        text = text.where(~is_censored, bounds)
    table = table.assign(value=pd.to_numeric(text, errors="coerce"))
    table = drop(~np.isfinite(table["value"]), "non-numeric value")
    for source_feature, transform in value_transforms.items():
        rows = table["source_feature"] == source_feature
        table.loc[rows, "value"] = transform(table.loc[rows, "value"].to_numpy())
    if anchors is not None:
        table = drop(table["patient_id"].map(anchors).isna(), "patient has no anchor time")
    table = table.assign(hours=_hours(table, anchors, options.time_format, name))
    table = drop(table["hours"].isna(), "unparseable time")
    table = drop(table["hours"] < 0, "time before the anchor")
    if options.max_hours is not None:
        table = drop(table["hours"] > options.max_hours, f"time more than {options.max_hours:g} h after the anchor")
    table = drop(table.duplicated(["patient_id", "hours", "feature", "value"]), "duplicate row")
    return table


def _hours(table: pd.DataFrame, anchors: pd.Series | None, time_format: str | None, name: str) -> pd.Series:
    """Hours since the patient's anchor (or first event): numbers are hours already; text is a timestamp. A column
    mixing the two kinds is refused, naming the first row of the rarer kind: one `3:00` among hours is a unit
    mistake, not a row to drop. Rows that are neither are left NaN, for the caller to count."""
    text = table["time"].astype(str).str.strip()
    numeric = pd.to_numeric(text, errors="coerce")
    is_number = numeric.notna()
    is_stamp = ~is_number & pd.to_datetime(text.where(~is_number), format="mixed", errors="coerce", utc=True).notna()
    if is_number.any() and is_stamp.any():
        rarer = is_number if is_number.sum() <= is_stamp.sum() else is_stamp
        line, value = table["line"][rarer].iloc[0], text[rarer].iloc[0]
        raise ValueError(f"{name}:{line}: time {value!r} is "
                         f"{'a number of hours' if rarer is is_number else 'a timestamp'}, "
                         f"but the column holds {int((~rarer & (is_number | is_stamp)).sum())} "
                         f"{'timestamps' if rarer is is_number else 'numbers of hours'}: give every time one way")
    anchors_are_stamps = anchors is not None and pd.api.types.is_datetime64_any_dtype(anchors)
    if not (is_number.any() or is_stamp.any()):  # no row left, or none a time: the caller counts them
        return pd.Series(np.nan, index=table.index)
    if not is_stamp.any():  # hours
        if anchors_are_stamps and is_number.any():
            raise ValueError(f"{name}: times are numbers of hours, but the anchor column holds timestamps: "
                             "give both as timestamps, or both as hours")
        if anchors is None:
            _refuse_serial_days(table, numeric, name)
        return numeric if anchors is None else numeric - table["patient_id"].map(anchors).astype(float)
    if anchors is not None and not anchors_are_stamps:
        raise ValueError(f"{name}: times are timestamps, but the anchor column holds numbers: give both one way")
    stamps = parse_timestamps(text, time_format, "column time", name + ":" + table["line"].astype(str))
    origin = (table["patient_id"].map(anchors) if anchors is not None
              else stamps.groupby(table["patient_id"]).transform("min"))
    return (stamps - origin) / pd.Timedelta(hours=1)


def _refuse_serial_days(table: pd.DataFrame, hours: pd.Series, name: str) -> None:
    """An error naming the first patient whose every time is a spreadsheet day number (`looks_like_serial_days`), and
    how many patients are so: one such patient among others in hours is as wrong as a whole table of them."""
    serial = [patient for patient, times in hours.groupby(table["patient_id"], sort=False)
              if looks_like_serial_days(times.to_numpy())]
    if serial:
        rows = table["patient_id"] == serial[0]
        raise ValueError(f"{name}:{table.loc[rows, 'line'].iloc[0]}: patient {serial[0]!r} (and {len(serial) - 1} "
                         f"other(s)): every time lies between {hours[rows].min():,.2f} and {hours[rows].max():,.2f}: "
                         f"{SERIAL_DAYS_ADVICE} (anchor_column)")


# Letters of other scripts drawn like Latin ones, as pasted names carry them: Cyrillic а, е, о, р, с, у, х, і, ј, ѕ.
LOOKALIKES = str.maketrans("аеорсухіјѕАВЕКМНОРСТУХІЈЅ", "aeopcyxijsABEKMHOPCTYXIJS")
ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))


def name_key(name: str) -> str:
    """What two spellings of one feature name share: `SODIUM`, `ѕodium` (Cyrillic ѕ) and `sodium\u200b` are sodium."""
    return unicodedata.normalize("NFKC", str(name)).translate(ZERO_WIDTH).translate(LOOKALIKES).casefold().strip()


def _spelled_as_known(
    table: pd.DataFrame, name: str, spellings: dict[str, str], policy: str, summary: LoadSummary
) -> pd.Series:
    """The feature column with each variant spelling of a known name replaced by that name (see `name_variants`)."""
    features = _as_text(table["feature"]).str.strip()
    renamed = {}
    for spelling in features.unique():
        control = [character for character in spelling if unicodedata.category(character) == "Cc"]
        if control:
            line = table.loc[features == spelling, "line"].iloc[0]
            raise ValueError(f"{name}:{line}: feature {spelling!r} holds the control character {control[0]!r}, which "
                             "no feature name has (a quoting or export error): correct the export")
        canonical = spellings.setdefault(name_key(spelling), spelling)
        if canonical != spelling:
            renamed[spelling] = canonical
    for spelling, canonical in renamed.items():
        rows = features == spelling
        place = f"{name}:{table.loc[rows, 'line'].iloc[0]}"
        if policy == "refuse":
            raise ValueError(f"{place}: feature {spelling!r} differs from {canonical!r} only in case, Unicode form or "
                             "look-alike letters: correct it, or map it with feature_map")
        logger.warning("%s: feature %r read as %r (%d rows)", place, spelling, canonical, int(rows.sum()))
        summary.note(f"feature {spelling!r} read as {canonical!r}", place, int(rows.sum()))
    return features.replace(renamed) if renamed else features


def _convert_units(
    per_patient: dict[str, list[pd.DataFrame]], conversions: Mapping[str, Mapping[str, UnitConversion]]
) -> dict[str, str]:
    """Each feature's unit across every table (units compared up to spaces, Unicode look-alikes and the litre's
    case; a declared unit and `into` match as a checkpoint's units do, by `same_unit`); rows in a declared unit are
    converted into the other. Returns feature -> unit. A row without a unit is taken to be in its feature's unit."""
    groups = [group for patient_groups in per_patient.values() for group in patient_groups]
    if not groups:
        return {}
    rows = pd.concat([group[["feature", "unit"]] for group in groups])
    rows = rows.assign(key=rows["unit"].astype(str).str.strip().map(lambda unit: unit_key(unit) if unit else ""))
    counts = rows[rows["key"] != ""].groupby(["feature", "key"]).agg(unit=("unit", "first"), rows=("unit", "size"))
    units, converting = {}, {}
    for feature, found in counts.groupby(level="feature"):
        found = found.droplevel("feature")
        by_unit = conversions.get(feature, {})
        into = by_unit.get(INTO)
        declared = {key: conversion for key in found.index
                    if (conversion := _declared_conversion(found.loc[key, "unit"], by_unit)) is not None}
        kept = [key for key in found.index if key not in declared]
        if into is None:
            one_unit_left = len(kept) == 1
        else:  # the unit named by `into`, or none left at all: the table need not hold the unit it converts into
            one_unit_left = not kept or (len(kept) == 1 and same_unit(found.loc[kept[0], "unit"], into))
        if not one_unit_left:
            seen = ", ".join(f"{found.loc[key, 'unit']!r} ({found.loc[key, 'rows']:,} rows)" for key in found.index)
            target, example = f"into {into!r}" if into else "all but one of them", (kept or list(found.index))[-1]
            raise ValueError(f"feature {feature!r} is recorded in {seen}: declare how to convert {target}, "
                             f"e.g. unit_conversions={{{feature!r}: "
                             f"{{{found.loc[example, 'unit']!r}: scale or (scale, offset)}}}}")
        units[feature] = into or found.loc[kept[0], "unit"]
        converting.update({(feature, key): conversion for key, conversion in declared.items()})
    for group in groups:
        keys = group["unit"].astype(str).str.strip().map(lambda unit: unit_key(unit) if unit else "")
        for (feature, key), conversion in converting.items():
            scale, offset = (conversion, 0.0) if isinstance(conversion, numbers.Real) else conversion
            rows_in_unit = (group["feature"] == feature) & (keys == key)
            group.loc[rows_in_unit, "value"] = group.loc[rows_in_unit, "value"] * float(scale) + float(offset)
    return units


def _declared_conversion(unit: str, by_unit: Mapping[str, UnitConversion]) -> UnitConversion | None:
    """The conversion declared for a table's unit, matched as checkpoints' units are (`same_unit`): a declaration in
    mg/dL applies to a feed that writes MG/DL."""
    return next((conversion for declared, conversion in by_unit.items()
                 if declared != INTO and same_unit(unit, declared)), None)


def _as_text(column: pd.Series) -> pd.Series:
    """Ids as text: a DataFrame's integer or float ids (220045, 220045.0) become "220045", as a CSV's are."""
    if pd.api.types.is_float_dtype(column) and (column.dropna() % 1 == 0).all():
        column = column.astype("Int64")
    return column.astype(str)


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
        line = f", line {position + 2}" if not isinstance(source, pd.DataFrame) else f", row {position}"
        raise ValueError(f"{name}{line}: patient {table.index[position]!r} has {label_column} "
                         f"'{raw.iloc[position]}'; a binary label must be 0 or 1 (map other values with label_map, "
                         "e.g. yes=1,no=0)")
    values = [None if pd.isna(value) else int(value) for value in labels]
    return table.assign(**{label_column: pd.Series(values, index=table.index, dtype=object)})


def _read_labels(labels: TableSource, id_column: str) -> pd.DataFrame:
    name = "labels" if isinstance(labels, pd.DataFrame) else str(labels)
    if isinstance(labels, pd.DataFrame):
        table = labels
    elif str(labels).endswith(".parquet"):
        table = pd.read_parquet(labels)
    else:
        with utf8_errors_named(labels):
            table = pd.read_csv(labels, encoding="utf-8-sig")
    if id_column not in table.columns:
        raise ValueError(f"{name}: patient id column {id_column!r} missing; it has {list(table.columns)}")
    table = table.assign(**{id_column: _as_text(table[id_column])})
    duplicated = table[id_column].duplicated()
    if duplicated.any():
        raise ValueError(f"{name}: patient {table[id_column][duplicated].iloc[0]!r} has more than one labels row")
    return table.set_index(id_column)


def _anchors(labels: pd.DataFrame | None, anchor_column: str, time_format: str | None) -> pd.Series:
    """Each patient's time zero: hours, or timestamps parsed as the events' are; an unparseable one names its
    patient."""
    if labels is None or anchor_column not in labels.columns:
        raise ValueError(f"anchor_column {anchor_column!r} must be a column of the labels table")
    raw = labels[anchor_column]
    numeric = pd.to_numeric(raw, errors="coerce")
    if numeric.notna().all():
        return numeric
    text = raw.astype(str).str.strip()
    stamps = parse_timestamps(text, time_format, f"anchor column {anchor_column!r}",
                              "patient " + labels.index.to_series().map(repr))
    bad = stamps.isna() & raw.notna()
    if bad.any():
        raise ValueError(f"anchor column {anchor_column!r}: patient {labels.index[bad.to_numpy()][0]!r} has anchor "
                         f"{text[bad].iloc[0]!r}, which is no time")
    return stamps


def _plain(value):
    """Arrow-friendly scalars: numpy numbers to Python, NaN and NaT to None, timestamps to ISO text."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value.item() if isinstance(value, np.generic) else value
