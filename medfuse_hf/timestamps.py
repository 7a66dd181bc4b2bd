"""Clinical timestamps as text, read one way only: in a given `strftime` format, or ISO 8601.

A date such as `03/04/2020` is 3 April in one hospital and 4 March in the next; pandas' "mixed" parsing would pick
one silently. So anything that is a timestamp but not ISO 8601 needs its format, and offsets are all or none.
Shared by the long-format loader and the tokenizer (a flat module, so checkpoints that ship their code carry it).
"""

import re

import pandas as pd

ISO_OFFSET = re.compile(r"(?:[+-]\d{2}:?\d{2}|Z)$")
DAY_MONTH = re.compile(r"^\s*(\d{1,2})[/.-](\d{1,2})[/.-]\d{2,4}")


def parse_timestamps(text: pd.Series, time_format: str | None, where: str, places: pd.Series) -> pd.Series:
    """Timestamps in `time_format`, else ISO 8601; NaT where the text is no timestamp at all. Offsets are converted
    to UTC (naive UTC out); a column where only some stamps carry an offset, a date whose day and month could be
    swapped (`03/04/2020`) or another unambiguous non-ISO form without `time_format` is an error naming the place."""
    parseable = pd.to_datetime(text, format="mixed", errors="coerce", utc=True).notna()
    has_offset = text.str.contains(ISO_OFFSET) & parseable
    naive = parseable & ~has_offset
    if has_offset.any() and naive.any():
        raise ValueError(
            f"{places[has_offset].iloc[0]} ({where}): time {text[has_offset].iloc[0]!r} has a UTC offset, "
            f"but {places[naive].iloc[0]} ({text[naive].iloc[0]!r}) has none: give every time an offset, or none"
        )
    if time_format:
        stamps = pd.to_datetime(text, format=time_format, errors="coerce", utc=bool(has_offset.any()))
    else:
        stamps = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=bool(has_offset.any()))
        other_form = stamps.isna() & pd.to_datetime(text, format="mixed", errors="coerce", utc=True).notna()
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
