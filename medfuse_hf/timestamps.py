"""Clinical timestamps as text, read one way only: in a given `strftime` format, or ISO 8601.

A date such as `03/04/2020` is 3 April in one hospital and 4 March in the next; pandas' "mixed" parsing would pick
one silently. So anything that is a timestamp but not ISO 8601 needs its format, and offsets are all or none.
A time without an offset is read as UTC unless the load names the time zone of its clocks: then it is placed on
UTC, so that hours across a daylight-saving change are right. Shared by the long-format loader and the tokenizer,
which turns a patient's times into hours here (a flat module, so checkpoints that ship their code carry it).
"""

import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

DURATIONS = (np.timedelta64, datetime.timedelta)  # pandas' Timedelta is a datetime.timedelta

# Spreadsheet day numbers of 1954-2173: as hours they would put a patient's every event 2-11 years after the start of
# the clock, which no stay is. A patient whose times all lie here exported dates as numbers.
SERIAL_DAYS = (20_000.0, 100_000.0)
SERIAL_DAYS_ADVICE = ("these look like spreadsheet serial dates (days since 1899-12-30), not hours. Export the "
                      "times as timestamps, or as hours since an anchor")
# A UTC offset after a time of day: +01:00, +0100, or PostgreSQL's +01 (never a date's own -05)
ISO_OFFSET = re.compile(r"\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s?(?:[+-]\d{2}(?::?\d{2})?|Z)$")
DAY_MONTH = re.compile(r"^\s*(\d{1,2})[/.-](\d{1,2})[/.-]\d{2,4}")
# Why a local clock time names no single instant: the reasons such events are skipped under
REPEATED_HOUR = "local time in the hour repeated when clocks went back (which of the two is unknown)"
SKIPPED_HOUR = "local time in the hour skipped when clocks went forward (no such time)"


def any_form(text: pd.Series) -> pd.Series:
    """Every text pandas can read as a timestamp in some form, in UTC: whether a column holds timestamps at all."""
    return pd.to_datetime(text, format="mixed", errors="coerce", utc=True)


@dataclass
class StampOffsets:
    """Whether a load's timestamps carry UTC offsets, as its first one did. A time without one is read as UTC, so
    events written without offsets against anchors with them, or two tables (or batches) written two ways, would
    shift by the offset, silently: every timestamp of a load, anchors included, must agree."""

    first: tuple[bool, str] | None = None  # (has an offset, where and what)
    time_zone: str | None = None  # the clocks' zone where times carry no offset, which then they must not

    def check(self, has_offset: pd.Series, text: pd.Series, places: pd.Series) -> None:
        if has_offset.empty:
            return
        if self.time_zone is not None and has_offset.any():
            raise ValueError(f"{places[has_offset].iloc[0]}: time {text[has_offset].iloc[0]!r} has a UTC offset, "
                             f"but time_zone {self.time_zone!r} is for times written without one: give every time "
                             "of the load, anchors included, an offset and no time zone, or no offset and the zone")
        if self.first is None:
            self.first = (bool(has_offset.iloc[0]), f"{places.iloc[0]} ({text.iloc[0]!r})")
        differ = has_offset != self.first[0]
        if differ.any():
            this, that = ("has no", "has one") if self.first[0] else ("has a", "has none")
            raise ValueError(f"{places[differ].iloc[0]}: time {text[differ].iloc[0]!r} {this} UTC offset, but "
                             f"{self.first[1]} {that}: give every time of the load, anchors included, an offset or "
                             "none")


def parse_timestamps(text: pd.Series, time_format: str | None, where: str, places: pd.Series,
                     in_any_form: pd.Series | None = None, offsets: StampOffsets | None = None) -> pd.Series:
    """Timestamps in `time_format`, else ISO 8601; NaT where the text is no timestamp at all. Offsets are converted
    to UTC (naive UTC out); a column where only some stamps carry an offset, a date whose day and month could be
    swapped (`03/04/2020`) or another unambiguous non-ISO form without `time_format` is an error naming the place.
    `in_any_form`, the text's `any_form` where the caller has it already, spares the slowest parse; `offsets`, a
    load's record of whether its times carry offsets, is checked against these."""
    in_any_form = any_form(text) if in_any_form is None else in_any_form
    parseable = in_any_form.notna()
    has_offset = text.str.contains(ISO_OFFSET) & parseable
    naive = parseable & ~has_offset
    if has_offset.any() and naive.any():
        raise ValueError(
            f"{places[has_offset].iloc[0]} ({where}): time {text[has_offset].iloc[0]!r} has a UTC offset, "
            f"but {places[naive].iloc[0]} ({text[naive].iloc[0]!r}) has none: give every time an offset, or none"
        )
    if offsets is not None:
        offsets.check(has_offset[parseable], text[parseable], places[parseable])
    if time_format:
        stamps = pd.to_datetime(text, format=time_format, errors="coerce", utc=bool(has_offset.any()))
    else:
        stamps = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=bool(has_offset.any()))
        other_form = stamps.isna() & parseable
        if other_form.any():
            value, place = text[other_form].iloc[0], places[other_form].iloc[0]
            day_month = DAY_MONTH.match(value)
            why = (
                "day and month could be either way round"
                if day_month and max(map(int, day_month.groups())) <= 12
                else "it is not ISO 8601 (2020-04-03 10:00)"
            )
            raise ValueError(
                f"{place} ({where}): time {value!r}: {why}; give its format (--time_format, e.g. '%d/%m/%Y %H:%M')"
            )
    return stamps.dt.tz_convert(None) if has_offset.any() else stamps


def check_time_zone(name: str) -> ZoneInfo:
    """The IANA time zone of that name, or an error that says what one looks like."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"time_zone {name!r} is no IANA time zone (e.g. 'Europe/Berlin', 'America/New_York', "
                         "'UTC')") from None


def refuse_zone_for_hours(time_zone: str | None, where: str) -> None:
    """A time zone places clock times: beside times given as hours it would be ignored, so it is refused."""
    if time_zone is not None:
        raise ValueError(f"{where}: times are numbers of hours, but time_zone {time_zone!r} is for timestamps: "
                         "leave it out")


def local_to_utc(stamps: pd.Series, time_zone: str) -> tuple[pd.Series, dict[str, pd.Series]]:
    """Naive clock times of `time_zone` as naive UTC. A time in the hour repeated when clocks go back could be
    either of two instants, and one in the hour skipped when they go forward is none: both are NaT, with a mask
    under each reason (`REPEATED_HOUR`, `SKIPPED_HOUR`) for the caller to count or refuse. (In a zone whose clocks
    go forward at midnight, such as America/Sao_Paulo until 2019, a date without a time of day is in the skipped
    hour on that day.)"""
    zone = check_time_zone(time_zone)  # the zoneinfo object, which pandas 2 and 3 read alike
    local = stamps.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
    unplaced = local.isna() & stamps.notna()
    skipped = pd.Series(False, index=stamps.index)
    if unplaced.any():  # which of the two: a repeated hour places when told it is summer time, a skipped one never
        as_summer = np.ones(int(unplaced.sum()), dtype=bool)
        skipped[unplaced] = stamps[unplaced].dt.tz_localize(zone, ambiguous=as_summer, nonexistent="NaT").isna()
    return local.dt.tz_convert(None), {REPEATED_HOUR: unplaced & ~skipped, SKIPPED_HOUR: skipped}


def hours_since_start(times: Sequence, anchor: Any, row_labels: Sequence, where: str, max_hours: float,
                      time_zone: str | None = None) -> np.ndarray:
    """One patient's event times as hours: numbers are hours already (minus a numeric `anchor`); text is read as
    timestamps (ISO 8601, as `parse_timestamps` reads them; without an offset, as UTC or as `time_zone`'s clock times)
    and becomes hours since `anchor`, or else since the patient's first event. A mix of the two, an unreadable time,
    a local time no clock can place, a time before the start or more than `max_hours` after it (a unit or year
    mistake) is an error naming `where` and the row. Durations (numpy `timedelta64` of any unit, pandas `Timedelta`,
    `datetime.timedelta`) are hours too, and numpy `datetime64` values timestamps."""
    hours = _durations_as_hours(times, row_labels, where)
    if hours is None and not any(isinstance(time, np.datetime64) for time in times):
        try:
            hours = np.asarray(times, dtype=np.float64)
        except (TypeError, ValueError):
            pass
    if hours is not None and hours.ndim != 1:  # each time a list of one: numbers, but one column too many
        row = next(row for row, time in enumerate(times) if np.ndim(time) != 0)
        raise ValueError(f"{where}, row {row_labels[row]}: time {times[row]!r} is not one number or timestamp")
    if hours is None:  # timestamps
        text = pd.Series([str(time) for time in times], dtype=object)
        is_number = pd.to_numeric(text, errors="coerce").notna().to_numpy()
        if is_number.any():  # hours, and text among them
            row = int(np.flatnonzero(~is_number)[0])
            raise ValueError(f"{where}, row {row_labels[row]}: time {times[row]!r} is neither hours nor a timestamp "
                             "like the others (every time of a patient in hours, or every one a timestamp)")
        places = pd.Series([f"{where}, row {label}" for label in row_labels])
        offsets = StampOffsets(time_zone=time_zone)
        stamps = _on_clock(parse_timestamps(text, None, "time", places, offsets=offsets), times, places, time_zone)
        bad = np.flatnonzero(stamps.isna().to_numpy())
        if bad.size:
            row = bad[0]
            raise ValueError(f"{where}, row {row_labels[row]}: time {times[row]!r} is neither hours nor a timestamp")
        if anchor is None:
            origin = stamps.min()
        else:
            anchor_place = pd.Series([f"{where} (anchor)"])
            origin = _on_clock(parse_timestamps(pd.Series([str(anchor)]), None, "anchor", anchor_place,
                                                offsets=offsets), [anchor], anchor_place, time_zone)[0]
        if pd.isna(origin):
            raise ValueError(f"{where}: anchor time {anchor!r} is no timestamp")
        hours = ((stamps - origin) / pd.Timedelta(hours=1)).to_numpy(dtype=np.float64)
    else:
        refuse_zone_for_hours(time_zone, where)
        hours = hours - _numeric_anchor(anchor, where) if anchor is not None else hours
        if anchor is None and looks_like_serial_days(hours):
            raise ValueError(f"{where}: every time lies between {hours.min():,.2f} and {hours.max():,.2f}: "
                             f"{SERIAL_DAYS_ADVICE} (anchor_times)")
    problems = (
        (~np.isfinite(hours), "is not a finite number"),
        (hours < 0, "lies before the record's start/anchor"),
        (hours > max_hours, f"lies more than {max_hours:.0f} hours after the record's start/anchor"),
    )
    for bad, reason in problems:
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{where}, row {row_labels[row]}: time {times[row]!r} ({hours[row]:.4g} h) {reason}")
    return hours


def looks_like_serial_days(hours: np.ndarray) -> bool:
    """Whether every one of a patient's times, read as hours, lies among spreadsheet day numbers (`SERIAL_DAYS`)."""
    return bool(hours.size) and SERIAL_DAYS[0] <= np.min(hours) and np.max(hours) <= SERIAL_DAYS[1]


def _on_clock(stamps: pd.Series, times: Sequence, places: pd.Series, time_zone: str | None) -> pd.Series:
    """Naive stamps as UTC: as they are, or as `time_zone`'s clock times, where one no clock can place is an error
    naming its place (a tokenizer has no summary to count a skip in)."""
    if time_zone is None:
        return stamps
    stamps, unplaced = local_to_utc(stamps, time_zone)
    for reason, mask in unplaced.items():
        if mask.any():
            row = int(np.flatnonzero(mask.to_numpy())[0])
            raise ValueError(f"{places.iloc[row]}: time {times[row]!r} is a {reason} in {time_zone}: leave the event "
                             "out, or give every time its UTC offset instead of a time zone")
    return stamps


def _durations_as_hours(times: Sequence, row_labels: Sequence, where: str) -> np.ndarray | None:
    """Times given as durations since the record's start, as hours; None when none is a duration. numpy alone would
    cast a `timedelta64` to its count of units (seconds read as hours), so durations never reach its float cast."""
    is_duration = [isinstance(time, DURATIONS) for time in times]
    if not any(is_duration):
        return None
    if not all(is_duration):
        row = is_duration.index(False)
        raise ValueError(f"{where}, row {row_labels[row]}: time {times[row]!r} is no duration like the others (every "
                         "time of a patient a duration, every one a number of hours, or every one a timestamp)")
    return (pd.to_timedelta(list(times)) / pd.Timedelta(hours=1)).to_numpy(dtype=np.float64)


def _numeric_anchor(anchor: Any, where: str) -> float:
    """The anchor of times given as hours: a number of hours or a duration too; a timestamp there is an error, not
    a guess."""
    if isinstance(anchor, DURATIONS):
        return pd.Timedelta(anchor) / pd.Timedelta(hours=1)
    if isinstance(anchor, np.datetime64):  # numpy would cast it to a count of its units
        anchor = str(anchor)
    try:
        return float(anchor)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: times are numbers of hours, but anchor time {anchor!r} is not: give the times as "
                         "timestamps to count hours from a timestamp anchor, or the anchor in hours") from None
