"""One batch of a long-format table made into events: names spelled as known, features mapped, values and times
parsed, and what cannot be an event dropped with its reason counted. What needs a patient's every event (time zero
without an anchor, spreadsheet dates, duplicates) waits for `event_store`, where the events are grouped."""

import logging
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..timestamps import StampOffsets, any_form, local_to_utc, parse_timestamps, refuse_zone_for_hours
from .patient_table import LoadSummary

logger = logging.getLogger(__name__)

CENSORED = re.compile(r"^\s*(<=|>=|<|>|less than|greater than)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*$",
                      re.IGNORECASE)
CENSORED_KEPT = "censored value, kept at the bound"
# Under a decimal comma, "1.015" is a thousand and fifteen (a grouped thousands point), but a point-decimal value
# (a specific gravity) looks the same: read as the load's convention says, and counted, so a reader can check.
THOUSANDS_POINT = "value with one thousands point, read as thousands under --decimal , ('1.015' as 1015)"
THOUSANDS_GROUPED = r"\s*[+-]?[1-9]\d{0,2}(?:\.\d{3})+(?:,\d*)?\s*"  # 1.234 and 1.234.567,8 under a decimal comma
ONE_THOUSANDS_GROUP = r"\s*[+-]?[1-9]\d{0,2}\.\d{3}\s*"  # 1.015: a thousand and fifteen, or 1.015 with a point
# Letters of other scripts drawn like Latin ones, as pasted names carry them: Cyrillic а, е, о, р, с, у, х, і, ј, ѕ.
LOOKALIKES = str.maketrans("аеорсухіјѕАВЕКМНОРСТУХІЈЅ", "aeopcyxijsABEKMHOPCTYXIJS")
ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))


def name_key(name: str) -> str:
    """What two spellings of one feature name share: `SODIUM`, `ѕodium` (Cyrillic ѕ) and `sodium\u200b` are sodium."""
    return unicodedata.normalize("NFKC", str(name)).translate(ZERO_WIDTH).translate(LOOKALIKES).casefold().strip()


@dataclass
class FeatureSpellings:
    """The known spelling of each feature name (the feature map's, the catalogue's, or the first seen), and what
    to do with a variant (`"merge"` or `"refuse"`, see `LongFormatOptions.name_variants`)."""

    known: dict[str, str]  # name_key -> spelling
    policy: str
    warned: set[str] = field(default_factory=set)

    def apply(self, batch: pd.DataFrame, name: str, summary: LoadSummary) -> pd.Series:
        """The batch's feature column with each variant spelling of a known name replaced by that name."""
        features = as_text(batch["feature"]).str.strip()
        renamed = {}
        for spelling in features.unique():
            control = [character for character in spelling if unicodedata.category(character) == "Cc"]
            if control:
                line = batch.loc[features == spelling, "line"].iloc[0]
                raise ValueError(f"{name}:{line}: feature {spelling!r} holds the control character {control[0]!r}, "
                                 "which no feature name has (a quoting or export error): correct the export")
            canonical = self.known.setdefault(name_key(spelling), spelling)
            if canonical != spelling:
                renamed[spelling] = canonical
        for spelling, canonical in renamed.items():
            rows = features == spelling
            place = f"{name}:{batch.loc[rows, 'line'].iloc[0]}"
            if self.policy == "refuse":
                raise ValueError(f"{place}: feature {spelling!r} differs from {canonical!r} only in case, Unicode "
                                 "form or look-alike letters: correct it, or map it with feature_map")
            if spelling not in self.warned:
                self.warned.add(spelling)
                logger.warning("%s: feature %r read as %r", place, spelling, canonical)
            summary.note(f"feature {spelling!r} read as {canonical!r}", place, int(rows.sum()))
        return features.replace(renamed) if renamed else features


@dataclass
class TimeKinds:
    """How many of a table's times are numbers of hours and how many timestamps, with the first of each: a column
    mixing the two is refused once the whole table is read, naming the first row of the rarer kind (one `3:00` among
    hours is a unit mistake, not a row to drop)."""

    numbers: int = 0
    stamps: int = 0
    first: dict[str, tuple[int, str]] = field(default_factory=dict)  # kind -> (line, text)

    def count(self, kind: str, mask: pd.Series, text: pd.Series, lines: pd.Series) -> None:
        setattr(self, kind, getattr(self, kind) + int(mask.sum()))
        if mask.any() and kind not in self.first:
            self.first[kind] = (lines[mask].iloc[0], text[mask].iloc[0])

    @property
    def mixed(self) -> bool:
        return self.numbers > 0 and self.stamps > 0

    def refuse_a_mix(self, name: str) -> None:
        if self.mixed:
            rarer, other = ("numbers", "stamps") if self.numbers <= self.stamps else ("stamps", "numbers")
            line, value = self.first[rarer]
            raise ValueError(f"{name}:{line}: time {value!r} is "
                             f"{'a number of hours' if rarer == 'numbers' else 'a timestamp'}, "
                             f"but the column holds {getattr(self, other)} "
                             f"{'timestamps' if rarer == 'numbers' else 'numbers of hours'}: give every time one way")


@dataclass
class BatchContext:
    """What cleaning a batch needs besides the batch: the table's name, the loader's options, the patients'
    anchors (hours or timestamps) where given, and the tallies shared across batches: among them every patient with
    a row in some table, kept or not (`patients_read`), so that one whose every event is skipped is counted too."""

    name: str
    feature_map: Mapping[str, str] | None
    censored: str
    decimal: str
    time_format: str | None
    time_zone: str | None
    max_hours: float | None
    value_transforms: Mapping[str, Callable[[np.ndarray], np.ndarray]]
    anchors: pd.Series | None
    end_hours: pd.Series | None  # each patient's end (`end_column`) as hours after its anchor; NaN: none
    spellings: FeatureSpellings
    time_kinds: TimeKinds
    offsets: StampOffsets
    summary: LoadSummary
    patients_read: set[str]


def clean_batch(batch: pd.DataFrame, context: BatchContext) -> pd.DataFrame:
    """The batch's events: `patient_id`, `feature`, `value`, `hours`, `stamp_ns`, `unit` and `line`. Without an
    anchor, a timestamp's hours count from the patient's first event, which a later batch may hold: such rows keep
    their timestamp (`stamp_ns`, nanoseconds) and no hours yet, and `max_hours` waits for them too."""
    summary, name = context.summary, context.name
    summary.events_read += len(batch)
    no_patient, no_feature = blank(batch["patient_id"]), blank(batch["feature"])
    for reason, mask in (("empty patient id", no_patient), ("empty feature name", no_feature & ~no_patient)):
        if mask.any():
            summary.skip_event(reason, f"{name}:{batch.loc[mask, 'line'].iloc[0]}", int(mask.sum()))
    batch = batch[~(no_patient | no_feature)]
    features = context.spellings.apply(batch, name, summary)
    table = batch.assign(patient_id=patient_ids_as_text(batch["patient_id"]), feature=features)
    context.patients_read.update(table["patient_id"].unique())
    table = table.assign(source_feature=table["feature"])

    def drop(mask: pd.Series, reason: str) -> pd.DataFrame:
        if mask.any():
            summary.skip_event(reason, f"{name}:{table.loc[mask, 'line'].iloc[0]}", int(mask.sum()))
        return table[~mask]

    if context.feature_map is not None:
        table = table.assign(feature=table["source_feature"].map(context.feature_map))
        table = drop(table["feature"].isna(), "feature not in feature_map")
    raw, one_group = table["value"], None
    if pd.api.types.is_numeric_dtype(raw):  # a DataFrame's or Parquet file's numbers
        table = drop(raw.isna(), "empty value")
    else:
        text = raw.astype(str).str.strip()
        table = drop(raw.isna() | text.eq(""), "empty value")
        text = text[table.index]
        numbers, bounds = _numbers(text, context.decimal)
        _refuse_the_other_decimal_mark(text, numbers, table["line"], context)
        if context.decimal != ".":
            one_group = text.str.fullmatch(ONE_THOUSANDS_GROUP)
        if len(bounds) and context.censored == "refuse":
            table = drop(table.index.to_series().isin(bounds.index), "censored value (refused)")
            numbers = numbers[table.index]
        elif len(bounds):
            summary.note(CENSORED_KEPT, f"{name}:{table.loc[bounds.index[0], 'line']}", len(bounds))
            numbers[bounds.index] = bounds
        table = table.assign(value=numbers)
    table = table.assign(value=table["value"].astype(float))
    table = drop(~np.isfinite(table["value"]), "non-numeric value")
    for source_feature, transform in context.value_transforms.items():
        rows = table["source_feature"] == source_feature
        if rows.any():
            table.loc[rows, "value"] = transform(table.loc[rows, "value"].to_numpy())
    if context.anchors is not None:
        table = drop(table["patient_id"].map(context.anchors).isna(), "patient has no anchor time")
    hours, stamp_ns, unplaced = _hours(table, context)
    table = table.assign(hours=hours, stamp_ns=stamp_ns)
    for reason, mask in unplaced.items():
        table = drop(mask[table.index], reason)
    table = drop(table["hours"].isna() & table["stamp_ns"].isna(), "unparseable time")
    table = drop(np.isinf(table["hours"]), "time not a finite number")  # "inf": a number, but no time
    table = drop(table["hours"] < 0, "time before the anchor")
    if context.max_hours is not None and context.anchors is not None:
        table = drop(table["hours"] > context.max_hours, max_hours_reason(context.max_hours))
    if context.end_hours is not None:
        ends = table["patient_id"].map(context.end_hours).astype("float64")  # typed even for an empty batch
        table = drop(table["hours"] > ends, "time after the patient's end time")
    if one_group is not None and (kept := one_group[table.index]).any():  # counted among the values kept
        summary.note(THOUSANDS_POINT, f"{name}:{table.loc[kept, 'line'].iloc[0]}", int(kept.sum()))
    return table[["patient_id", "feature", "value", "hours", "stamp_ns", "unit", "line"]]


def blank(column: pd.Series) -> pd.Series:
    """Null, or text of spaces only: no patient id or feature name at all."""
    return column.isna() | column.astype(str).str.strip().eq("")


def max_hours_reason(max_hours: float) -> str:
    return f"time more than {max_hours:g} h after the anchor"


def _numbers(text: pd.Series, decimal: str) -> tuple[pd.Series, pd.Series]:
    """The text as numbers (NaN where none), and the bounds of censored results (`<0.01`, `GREATER THAN 500`) by
    row. Only rows that are no plain number meet the censored pattern, so a clean export is parsed at C speed."""
    if decimal != ".":  # 1.234,5 -> 1234.5; a dot that groups no thousands (7.4, 0.125) is no number here, never 74
        grouped = text.str.fullmatch(THOUSANDS_GROUPED, na=False)
        stray = text.str.contains(".", regex=False, na=False) & ~grouped
        text = text.str.replace(".", "", regex=False).str.replace(decimal, ".", regex=False).mask(stray)
    numbers = as_numbers(text)
    failed = numbers.isna()
    bounds = text[failed].str.extract(CENSORED)[1].dropna() if failed.any() else text.iloc[:0]
    return numbers, pd.to_numeric(bounds).astype(float)


# A value written with the other decimal mark: "3,9" where the table is read with a point, "3.9" where with a comma
# (whose own thousands grouping, "1.234", is a number there). It is a whole export's convention far more often than
# a typo, so it is refused, not skipped: a skip would lose every non-integer value. Decimal mark read -> the other
# mark's pattern, its name, the ways out.
OTHER_DECIMAL_MARK = {
    ".": (r"\s*[+-]?\d+,\d+\s*", "comma", "give --decimal , (or export the values without a thousands separator)"),
    ",": (r"\s*[+-]?\d+\.\d+\s*", "point", "give --decimal . (or export every value with a decimal comma)"),
}


def _refuse_the_other_decimal_mark(text: pd.Series, numbers: pd.Series, lines: pd.Series,
                                   context: BatchContext) -> None:
    pattern, mark, ways_out = OTHER_DECIMAL_MARK[context.decimal]
    other = numbers.isna() & text.str.fullmatch(pattern, na=False)
    if other.any():
        first = other.idxmax()
        raise ValueError(f"{context.name}, line {lines[first]}: value {text[first]!r} has a decimal {mark}, unlike "
                         f"the load's decimal {context.decimal!r} ({int(other.sum())} such values in this batch): "
                         f"{ways_out}")


def _hours(table: pd.DataFrame, context: BatchContext) -> tuple[pd.Series, pd.Series, dict[str, pd.Series]]:
    """Hours since the patient's anchor: numbers and durations are hours already; text is a timestamp (local clock
    time put on UTC where the load names its `time_zone`). Without an anchor, numbers stay as they are and timestamps
    are returned as `stamp_ns` for the store to count from the patient's first one. Rows that are neither are NaN in
    both, for the caller to count; local times that name no single instant are NaN too, with a mask under each
    reason."""
    none = pd.Series(np.nan, index=table.index)
    pending = pd.Series(pd.NA, index=table.index, dtype="Int64")
    time = table["time"]
    if pd.api.types.is_timedelta64_dtype(time):  # a duration column (Parquet, a DataFrame): hours since the start
        time = time / pd.Timedelta(hours=1)
    text = time.astype(str).str.strip()
    # Under a decimal comma, hours may be written 2,5 or, where a script computed them, 2.5: both are read as 2.5.
    numeric = as_numbers(text if context.decimal == "." else text.str.replace(context.decimal, ".", regex=False))
    is_number = numeric.notna()
    in_any_form = any_form(text[~is_number]).reindex(table.index)  # NaT for the numbers
    if context.time_format and is_number.any():  # "202004031000" in --time_format %Y%m%d%H%M: no 2e11 hours
        formatted = pd.to_datetime(text[is_number], format=context.time_format, errors="coerce", utc=True)
        in_any_form = in_any_form.combine_first(formatted)
        is_number &= in_any_form.isna()
    is_stamp = in_any_form.notna()
    kinds, lines = context.time_kinds, table["line"]
    kinds.count("numbers", is_number, text, lines)
    kinds.count("stamps", is_stamp, text, lines)
    if kinds.mixed:  # refused once the whole table has been read, naming the rarer kind
        return none, pending, {}
    anchors = context.anchors
    anchors_are_stamps = anchors is not None and pd.api.types.is_datetime64_any_dtype(anchors)
    if not (is_number.any() or is_stamp.any()):  # no row a time: the caller counts them
        return none, pending, {}
    if not is_stamp.any():  # hours
        if anchors_are_stamps:
            raise ValueError(f"{context.name}: times are numbers of hours, but the anchor column holds timestamps: "
                             "give both as timestamps, or both as hours")
        refuse_zone_for_hours(context.time_zone, context.name)
        return (numeric if anchors is None else numeric - table["patient_id"].map(anchors).astype(float)), pending, {}
    if anchors is not None and not anchors_are_stamps:
        raise ValueError(f"{context.name}: times are timestamps, but the anchor column holds numbers: give both one "
                         "way")
    stamps = parse_timestamps(text, context.time_format, "column time", context.name + ":" + lines.astype(str),
                              in_any_form, context.offsets)
    unplaced = {}
    if context.time_zone is not None:
        stamps, unplaced = local_to_utc(stamps, context.time_zone)
    if anchors is not None:
        return (stamps - table["patient_id"].map(anchors)) / pd.Timedelta(hours=1), pending, unplaced
    nanoseconds = pd.Series(stamps.dt.as_unit("ns").to_numpy().view("int64"), index=table.index, dtype="Int64")
    return none, nanoseconds.where(stamps.notna()), unplaced


def as_numbers(text: pd.Series) -> pd.Series:
    """Stripped text as float64, NaN where it is no number. Arrow's cast reads a column of plain numbers several
    times faster than pandas; a column with anything else in it goes to `pd.to_numeric`."""
    try:
        numbers = pc.cast(pa.array(text, pa.string()), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pd.to_numeric(text, errors="coerce").astype(float)
    return pd.Series(numbers.to_numpy(zero_copy_only=False), index=text.index)


def as_text(column: pd.Series) -> pd.Series:
    """Ids as text: a DataFrame's integer or float ids (220045, 220045.0) become "220045", as a CSV's are, also in a
    column of mixed types, where 7 and 7.0 would otherwise be two patients; spaces around an id are no part of it."""
    if pd.api.types.is_float_dtype(column) and (column.dropna() % 1 == 0).all():
        column = column.astype("Int64")
    elif column.dtype == object:
        column = column.map(lambda raw: str(int(raw)) if isinstance(raw, float) and raw.is_integer() else raw)
    return column.astype(str).str.strip()


def patient_ids_as_text(column: pd.Series) -> pd.Series:
    """Patient ids as text (`as_text`), the text "7.0" included: pandas writes it for the ids of a float column (one
    with a gap), and a lab table written so must meet the chart table's "7". Leading zeros stay ("007"); feature
    names keep their points ("038.0" is an ICD code)."""
    text = as_text(column)
    if text.str.contains(".", regex=False).any():  # one cheap pass where no id has a point
        text = text.str.replace(r"^(\d+)\.0+$", r"\1", regex=True)
    return text
