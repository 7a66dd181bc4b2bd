"""Cleaned events of every table, kept on disk by DuckDB, an embedded engine, and written out one patient per row.

A hospital's export is hundreds of millions of rows: more than memory. DuckDB (a `pip install`, no server) stores the
rows compressed, and sorts and aggregates them within `memory_limit`, spilling to disk beyond it. Everything that needs
a patient's every event happens here: time zero at the patient's first timestamp, the spreadsheet-date check, units
across tables, and the patient-by-patient stream, sorted by time, that `write_patient_rows` turns into an Arrow file.
"""

from collections.abc import Iterator, Mapping
from pathlib import Path

import datasets
import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from datasets.arrow_writer import ArrowWriter

from ..progress import progress_bar
from ..timestamps import SERIAL_DAYS, SERIAL_DAYS_ADVICE
from ..units import unit_key
from .patient_table import LoadSummary

NANOSECONDS_PER_HOUR = 3_600_000_000_000
STREAM_ROWS = 1 << 20
SORT_EVENTS = 4_000_000  # events sorted at a time: DuckDB's sort then fits its memory limit at any table size
EVENT_COLUMNS = "source SMALLINT, seq BIGINT, line BIGINT, patient_id VARCHAR, patient_rank INTEGER, " \
                "feature VARCHAR, value DOUBLE, hours DOUBLE, stamp_ns BIGINT, unit VARCHAR, unit_key VARCHAR"


class EventStore:
    """The events of one load, in a DuckDB database under `folder` (deleted by `close`). Each patient's place in
    the result (`patient_rank`) is set as its rows arrive: its row in `patient_order` (the labels table's order),
    or else the order in which patients were first read; patients outside `patient_order` have none."""

    def __init__(self, folder: Path, patient_order: list[str] | None = None, memory_limit: str = "256MB"):
        self.folder = Path(folder)
        self.connection = duckdb.connect(str(self.folder / "events.duckdb"), config={
            "memory_limit": memory_limit, "temp_directory": str(self.folder / "spill"),
            "preserve_insertion_order": False})
        self.connection.execute("SET enable_progress_bar = false")  # the loader's summary says what was read
        self.connection.execute(f"CREATE TABLE events ({EVENT_COLUMNS})")
        self.sources: list[str] = []
        self.rows = 0
        self._unit_keys: dict[str, str] = {"": ""}
        self._fixed_order = patient_order is not None
        self.rank_of: dict[str, int] = {patient: rank for rank, patient in enumerate(patient_order or [])}
        self._first_read: dict[str, None] = {}  # patients with events, in the order first read
        self._rows_deleted = False

    def begin_table(self, name: str) -> None:
        """The batches added from now on are `name`'s (a repeated row counts as one only within one table)."""
        self.sources.append(name)

    def add(self, events: pd.DataFrame) -> None:
        """A cleaned batch (`event_cleaning.clean_batch`) of the current table; rows keep their order by `seq`."""
        units = events["unit"].fillna("").astype(str).str.strip()  # a Parquet null: no unit, as a CSV's blank
        for unit in units.unique():
            self._unit_keys.setdefault(unit, unit_key(unit) if unit else "")
        for patient in events["patient_id"].unique():
            if patient not in self._first_read:
                self._first_read[patient] = None
                if not self._fixed_order:
                    self.rank_of[patient] = len(self.rank_of)
        batch = pa.Table.from_pandas(events.assign(
            source=len(self.sources) - 1, seq=np.arange(self.rows, self.rows + len(events)), unit=units,
            unit_key=units.map(self._unit_keys), patient_rank=events["patient_id"].map(self.rank_of).astype("Int32"),
        )[["source", "seq", "line", "patient_id", "patient_rank", "feature", "value", "hours", "stamp_ns", "unit",
           "unit_key"]], preserve_index=False)
        self.connection.register("batch", batch)
        self.connection.execute("INSERT INTO events SELECT * FROM batch")
        self.connection.unregister("batch")
        self.rows += len(events)

    def count_from_first_timestamps(self) -> None:
        """Hours of timestamps without an anchor, since the patient's first timestamp in any table."""
        self.connection.execute(f"""
            UPDATE events SET hours = (events.stamp_ns - first.stamp_ns) / {NANOSECONDS_PER_HOUR}.0
            FROM (SELECT patient_id, min(stamp_ns) AS stamp_ns FROM events WHERE stamp_ns IS NOT NULL
                  GROUP BY patient_id) AS first
            WHERE events.patient_id = first.patient_id AND events.stamp_ns IS NOT NULL""")

    def refuse_serial_days(self) -> None:
        """An error naming the first patient whose every time, given as a number of hours without an anchor, is a
        spreadsheet day number (`timestamps.looks_like_serial_days`), and how many patients are so."""
        serial = self.connection.execute(f"""
            SELECT patient_id, min(hours), max(hours), arg_min(source, seq), arg_min(line, seq)
            FROM events WHERE stamp_ns IS NULL GROUP BY patient_id
            HAVING min(hours) >= {SERIAL_DAYS[0]} AND max(hours) <= {SERIAL_DAYS[1]} ORDER BY min(seq)""").fetchall()
        if serial:
            patient, low, high, source, line = serial[0]
            raise ValueError(f"{self.sources[source]}:{line}: patient {patient!r} (and {len(serial) - 1} other(s)): "
                             f"every time lies between {low:,.2f} and {high:,.2f}: {SERIAL_DAYS_ADVICE} "
                             "(anchor_column)")

    def drop_later_than(self, max_hours: float, reason: str, summary: LoadSummary) -> None:
        count, source, line = self.connection.execute(
            "SELECT count(*), arg_min(source, seq), arg_min(line, seq) FROM events WHERE hours > ?", [max_hours]
        ).fetchone()
        if count:
            summary.skip_event(reason, f"{self.sources[source]}:{line}", count)
            self.connection.execute("DELETE FROM events WHERE hours > ?", [max_hours])
            self._rows_deleted = True

    def note_conflicting_values(self, reason: str, summary: LoadSummary) -> None:
        """Count the values that differ at one patient, feature and time: all are kept (a repeated measurement, or a
        correction the export left beside the original), and noted for a person to see."""
        count, source, line = self.connection.execute("""
            SELECT sum(values_there), arg_min(source, first), arg_min(line, first) FROM (
                SELECT count(DISTINCT value) AS values_there, min(seq) AS first, arg_min(source, seq) AS source,
                       arg_min(line, seq) AS line
                FROM events GROUP BY patient_id, feature, hours HAVING count(DISTINCT value) > 1)""").fetchone()
        if count:
            summary.note(reason, f"{self.sources[source]}:{line}", int(count))

    @property
    def ranked_patients(self) -> list[str]:
        """The patient of each rank, in rank order."""
        return list(self.rank_of)

    def patients_with_events(self) -> list[str]:
        """Patients that have events, in the order their first event was read."""
        if not self._rows_deleted:
            return list(self._first_read)
        rows = self.connection.execute("SELECT patient_id FROM events GROUP BY patient_id ORDER BY min(seq)")
        return [patient for (patient,) in rows.fetchall()]

    def unit_counts(self) -> pd.DataFrame:
        """Rows by feature and unit (compared by `units.unit_key`), with the unit as first written; rows without a
        unit under the key ''."""
        return self.connection.execute("""
            SELECT feature, unit_key AS key, arg_min(unit, seq) AS unit, count(*) AS rows FROM events
            GROUP BY feature, unit_key ORDER BY feature, unit_key""").df()

    def sorted_events(self, conversions: Mapping[tuple[str, str], tuple[float, float]]) -> pa.RecordBatchReader:
        """The events of ranked patients, by rank, each patient's by time (ties in the order read), values in the
        unit chosen for their feature (`conversions`: (feature, unit key) -> (scale, offset)). Patients are sorted a
        range of ranks at a time, of about `SORT_EVENTS` events, so that no sort outgrows DuckDB's memory."""
        scales = pa.table({"feature": [feature for feature, _ in conversions],
                           "unit_key": [key for _, key in conversions],
                           "scale": [float(scale) for scale, _ in conversions.values()],
                           "shift": [float(offset) for _, offset in conversions.values()]},
                          schema=pa.schema([("feature", pa.string()), ("unit_key", pa.string()),
                                            ("scale", pa.float64()), ("shift", pa.float64())]))
        self.connection.register("conversions", scales)

        def ranked(low: int, high: int) -> duckdb.DuckDBPyRelation:
            return self.connection.sql(f"""
                SELECT e.patient_rank, e.feature,
                       CASE WHEN c.scale IS NULL THEN e.value ELSE e.value * c.scale + c.shift END AS value,
                       e.hours, e.source, e.line, e.seq
                FROM events e LEFT JOIN conversions c USING (feature, unit_key)
                WHERE e.patient_rank BETWEEN {low} AND {high}
                ORDER BY e.patient_rank, e.hours, e.seq""")

        counts = self.connection.execute("""
            SELECT patient_rank, count(*) FROM events WHERE patient_rank IS NOT NULL
            GROUP BY patient_rank ORDER BY patient_rank""").fetchnumpy()
        ranks, events = counts["patient_rank"], np.cumsum(counts["count_star()"])

        def batches() -> Iterator[pa.RecordBatch]:
            for low, high in _rank_ranges(ranks, events, SORT_EVENTS):
                with ranked(low, high).to_arrow_reader(batch_size=STREAM_ROWS) as reader:
                    yield from reader

        return pa.RecordBatchReader.from_batches(ranked(0, -1).to_arrow_table().schema, batches())

    def close(self) -> None:
        self.connection.close()
        for path in (self.folder / "events.duckdb", self.folder / "events.duckdb.wal"):
            path.unlink(missing_ok=True)


def _rank_ranges(ranks: np.ndarray, cumulative_events: np.ndarray, events_per_range: int) -> list[tuple[int, int]]:
    """Consecutive ranges of ranks holding about `events_per_range` events each (one patient at least)."""
    ranges, start = [], 0
    while start < len(ranks):
        before = cumulative_events[start - 1] if start else 0
        end = max(start, int(np.searchsorted(cumulative_events, before + events_per_range, side="right")) - 1)
        ranges.append((int(ranks[start]), int(ranks[end])))
        start = end + 1
    return ranges


def write_patient_rows(
    events: pa.RecordBatchReader, patients: pa.Table, path: Path, sources: list[str], summary: LoadSummary
) -> datasets.Dataset:
    """One row per patient (`patients`' columns, then `feature`/`value`/`time` lists) from events sorted by patient
    rank (the row of `patients`), written as the Arrow file `datasets` memory-maps. A row repeated within one table
    (same patient, time, feature and value) is dropped and counted."""
    with ArrowWriter(path=str(path)) as writer, progress_bar(total=len(patients), desc="writing", unit=" patients",
                                                             unit_scale=True) as bar:
        # held: the last patient of a batch, whose events may go on in the next
        held, written = events.schema.empty_table(), 0
        for batch in events:
            table = pa.concat_tables([held, pa.Table.from_batches([batch])])
            ranks = table.column("patient_rank").to_numpy()
            complete = int(np.searchsorted(ranks, ranks[-1])) if len(ranks) else 0
            held = table.slice(complete)
            if complete:
                writer.write_table(_patient_rows(table.slice(0, complete), patients, sources, summary))
                written += 1
                bar.update(len(np.unique(ranks[:complete])))
        if held.num_rows or not written:  # the last patient; or an empty table that still has the columns
            writer.write_table(_patient_rows(held, patients, sources, summary))
            bar.update(min(held.num_rows, 1))
        writer.finalize()
    return datasets.Dataset.from_file(str(path))


def _patient_rows(events: pa.Table, patients: pa.Table, sources: list[str], summary: LoadSummary) -> pa.Table:
    """Whole patients' events as one row each, repeated rows dropped (counted, with the first one read)."""
    rank, hours, value, source, seq = (events.column(name).to_numpy() for name in
                                       ("patient_rank", "hours", "value", "source", "seq"))
    feature = events.column("feature").combine_chunks()
    repeated = _repeated_rows(rank, hours, source, feature, value, seq)
    if repeated.any():
        first = int(np.flatnonzero(repeated)[np.argmin(seq[repeated])])
        line = events.column("line")[first].as_py()
        summary.skip_event("duplicate row", f"{sources[source[first]]}:{line}", int(repeated.sum()))
    kept = ~repeated
    rank, hours, value = rank[kept], hours[kept], value[kept]
    starts = np.flatnonzero(np.concatenate([[True], rank[1:] != rank[:-1]])) if len(rank) else np.array([], int)
    offsets = pa.array(np.concatenate([starts, [len(rank)]]).astype(np.int32))
    rows = patients.take(pa.array(rank[starts], pa.int64()))
    summary.patients_kept += len(starts)
    summary.events_kept += len(rank)
    return rows.append_column("feature", pa.ListArray.from_arrays(offsets, feature.filter(pa.array(kept)))) \
        .append_column("value", pa.ListArray.from_arrays(offsets, pa.array(value, pa.float64()))) \
        .append_column("time", pa.ListArray.from_arrays(offsets, pa.array(hours.astype(np.float32))))


def _repeated_rows(rank, hours, source, feature: pa.Array, value, seq) -> np.ndarray:
    """Which rows repeat an earlier row of the same table (patient, time, feature and value): the events are sorted
    by patient and time, so only rows sharing both with a neighbour can be repeats, and only those are sorted."""
    tied = np.zeros(len(rank), dtype=bool)
    if len(rank) > 1:
        same_time = (rank[1:] == rank[:-1]) & (hours[1:] == hours[:-1])
        tied[1:] |= same_time
        tied[:-1] |= same_time
    repeated = np.zeros(len(rank), dtype=bool)
    if not tied.any():
        return repeated
    rows = np.flatnonzero(tied)
    codes = pc.dictionary_encode(feature.take(pa.array(rows))).indices.to_numpy(zero_copy_only=False)
    keys = (rank[rows], hours[rows], source[rows], codes, value[rows])
    order = np.lexsort((seq[rows], *reversed(keys)))
    same = np.logical_and.reduce([key[order][1:] == key[order][:-1] for key in keys])
    repeated[rows[order[1:][same]]] = True
    return repeated
