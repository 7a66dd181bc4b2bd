"""An event table read in bounded memory: a CSV, a Parquet file or a DataFrame as pandas batches of a million rows
or so, each row with the line (CSV) or row number (Parquet, DataFrame) that messages name.

CSV files are parsed by Arrow's streaming reader, every field as text (ids stay ids, `007` stays `007`). Arrow counts
rows, not lines, so the line of each row is recounted here: a blank line, or a newline inside a quoted field, moves
every later row one line down, and a message must still point at the right line.
"""

import csv
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from .patient_table import LoadSummary
from .release_files import raise_first_non_utf8_byte, utf8_errors_named

DEFAULT_COLUMNS = {"patient_id": "patient_id", "time": "time", "feature": "feature", "value": "value"}
OPTIONAL_COLUMNS = ("unit",)  # read when `columns` names them, or a column has their name
BATCH_ROWS = 1 << 20
OTHER_DELIMITERS = (";", "\t", ",", "|")  # what an export may be separated by, for a hint when a header is one column
CSV_BLOCK_BYTES = 8 << 20  # about 300,000 rows of a four-column export: memory, not speed, sets it
TableSource = str | Path | pd.DataFrame


def event_batches(source: TableSource, columns: Mapping[str, str], summary: LoadSummary,
                  delimiter: str = ",") -> Iterator[pd.DataFrame]:
    """The source's rows in batches: the four needed fields and `unit` (where `columns` names it, or a column is
    called so; else empty), renamed, plus `line`. Columns left unread are noted in the summary: a unit column under
    another name would otherwise mix °F and °C rows silently."""
    name = "events" if isinstance(source, pd.DataFrame) else str(source)
    if isinstance(source, pd.DataFrame):
        header, batches = list(source.columns), _frame_batches(source)
    elif Path(source).suffix == ".parquet":
        parquet = pq.ParquetFile(source)
        header, batches = parquet.schema_arrow.names, _parquet_batches(parquet)
    else:
        header = _csv_header(Path(source), delimiter)
        batches = _csv_batches(Path(source), header, delimiter)
    columns = {**{key: key for key in OPTIONAL_COLUMNS if key in header}, **columns}
    fields = [*DEFAULT_COLUMNS, *(key for key in OPTIONAL_COLUMNS if key in columns)]
    absent = [columns[key] for key in fields if columns[key] not in header]
    if absent:
        raise ValueError(f"{name}: columns {absent} missing; it has {header}{other_delimiter_hint(header, delimiter)}")
    unread = [column for column in header if column not in {columns[key] for key in fields}]
    if unread:
        summary.note(f"columns not read: {unread} (name them in columns=... if they matter)", name)
    rows, names = 0, [columns[key] for key in fields]
    for table, lines in batches:
        if isinstance(table, pd.DataFrame):  # as given: a column of mixed types is the cleaning's to read
            batch = table[names].set_axis(fields, axis=1)
        else:
            batch = table.select(names).rename_columns(fields).to_pandas()
        if "unit" not in batch.columns:  # every row in its feature's unit
            batch = batch.assign(unit="")
        rows += len(batch)
        yield batch.assign(line=lines)
    if rows == 0:
        raise ValueError(f"{name}: no event rows, only a header")


def _frame_batches(frame: pd.DataFrame) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    for start in range(0, len(frame), BATCH_ROWS):
        part = frame.iloc[start:start + BATCH_ROWS].reset_index(drop=True)
        yield part, np.arange(start, start + len(part))


def _parquet_batches(parquet: pq.ParquetFile) -> Iterator[tuple[pa.Table, np.ndarray]]:
    start = 0
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
        yield pa.Table.from_batches([batch]), np.arange(start, start + batch.num_rows)
        start += batch.num_rows


def other_delimiter_hint(header: list[str], delimiter: str) -> str:
    """Where a header read as one column holds another usual separator: the flag that reads it."""
    others = [mark for mark in OTHER_DELIMITERS if mark != delimiter and len(header) == 1 and mark in header[0]]
    if not others:
        return ""
    return f" (one column: are its fields separated by {others[0]!r}? give --delimiter {others[0]!r})"


def _csv_header(path: Path, delimiter: str) -> list[str]:
    with utf8_errors_named(path), path.open(newline="", encoding="utf-8-sig") as file:
        header = next(csv.reader(file, delimiter=delimiter), None)
    if header is None:
        raise ValueError(f"{path}: the file is empty")
    return header


def _csv_batches(path: Path, header: list[str], delimiter: str) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """Arrow record batches of every field as text, with each row's line. A blank line reads as a row of empty
    fields, dropped here after it has been counted as a line; a row with more or fewer fields than the header is an
    error naming its line: pandas would drop the extra field of an unquoted decimal comma (`p1,2.0,potassium,3,9`)."""
    reader_options = dict(
        read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
        parse_options=pa_csv.ParseOptions(delimiter=delimiter, newlines_in_values=True, ignore_empty_lines=False),
        convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(header, pa.string()),
                                              strings_can_be_null=False, quoted_strings_can_be_null=False),
    )
    next_line = 2
    try:
        for batch in pa_csv.open_csv(path, **reader_options):
            # Each row starts a line, but for the lines that newlines inside quoted fields of earlier rows took.
            inside = sum(pc.count_substring(column, "\n").to_numpy(zero_copy_only=False) for column in batch.columns)
            lines = next_line + np.arange(batch.num_rows) + np.concatenate([[0], np.cumsum(inside)[:-1]])
            next_line += batch.num_rows + int(np.sum(inside))
            blank = np.logical_and.reduce([pc.equal(column, "").to_numpy(zero_copy_only=False)
                                           for column in batch.columns])
            table = pa.Table.from_batches([batch])
            yield (table.filter(pa.array(~blank)), lines[~blank]) if blank.any() else (table, lines)
    except pa.ArrowInvalid as error:
        if "utf8" in str(error).lower():
            raise_first_non_utf8_byte(path)
        if "Expected" in str(error) and "columns" in str(error):
            _raise_first_bad_row(path, header, delimiter)
        raise ValueError(f"{path}: {error}") from None


def _raise_first_bad_row(path: Path, header: list[str], delimiter: str) -> None:
    """Arrow names a row by its count of rows; `csv` gives the line it ends on."""
    with path.open(newline="", encoding="utf-8-sig") as file:
        rows = csv.reader(file, delimiter=delimiter)
        next(rows)
        for row in rows:
            if len(row) != len(header) and row:
                raise ValueError(f"{path}, line {rows.line_num}: {len(row)} fields where the header has "
                                 f"{len(header)} (quote values that contain the delimiter, e.g. a decimal comma)")
