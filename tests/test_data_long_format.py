import json

import pandas as pd
import pytest

from medfuse_hf.data import load_long_format
from medfuse_hf.data.event_cleaning import CENSORED_KEPT
from medfuse_hf.data.splits import load_split
from medfuse_hf.training.cohorts import load_cohort
from medfuse_hf.training.recipe_config import existing_table

COLUMNS = {"patient_id": "SUBJECT_ID", "time": "CHARTTIME", "feature": "ITEMID", "value": "VALUE"}
FEATURE_MAP = {"220045": "heart_rate", "50983": "sodium", "223761": "temperature"}
EVENTS = """SUBJECT_ID,CHARTTIME,ITEMID,VALUE,VALUEUOM
1,2130-01-01 09:00:00,220045,80,bpm
1,2130-01-01 10:30:00,50983,141,mEq/L
1,2130-01-01 10:30:00,50983,141,mEq/L
1,2130-01-01 11:00:00,223761,98.6,?F
1,2130-01-01 07:00:00,220045,77,bpm
1,2130-01-03 12:00:00,220045,90,bpm
1,2130-01-01 12:00:00,220045,,bpm
1,2130-01-01 12:00:00,50983,see comment,
1,not a time,220045,88,bpm
1,2130-01-01 12:00:00,917,FEVER,
2,2130-02-01 00:00:00,220045,60,bpm
3,2130-03-01 00:00:00,220045,61,bpm
"""
LABELS = pd.DataFrame({"SUBJECT_ID": [1, 2, 4], "INTIME": ["2130-01-01 08:00", "2130-01-31 23:00", "2130-04-01"],
                       "died": [1, 0, 0]})


def load(tmp_path, **kwargs):
    path = tmp_path / "events.csv"
    path.write_text(EVENTS)
    return load_long_format(
        path, labels=LABELS, columns=COLUMNS, feature_map=FEATURE_MAP, anchor_column="INTIME", max_hours=48,
        value_transforms={"223761": lambda f: (f - 32) * 5 / 9}, return_summary=True, **kwargs,
    )


def test_events_are_mapped_converted_and_anchored(tmp_path):
    dataset, _ = load(tmp_path)
    assert dataset["patient_id"] == ["1", "2"]
    first = dataset[0]
    assert first["feature"] == ["heart_rate", "sodium", "temperature"]
    assert first["time"] == [1.0, 2.5, 3.0]
    assert first["value"] == pytest.approx([80.0, 141.0, 37.0])
    assert first["died"] == 1 and first["INTIME"] == "2130-01-01 08:00"
    assert dataset[1]["time"] == [1.0]


def test_events_after_a_patients_end_time_are_skipped_and_counted(tmp_path):
    """A subject's export holds every stay's events: with the stay's discharge as `end_column`, those after it (a
    later stay's) are left out and counted, a blank end keeps them all, and an end before the anchor is refused."""
    ends = LABELS.assign(OUTTIME=["2130-01-01 10:00", None, "2130-04-02"])
    path = tmp_path / "events.csv"
    path.write_text(EVENTS)
    options = dict(columns=COLUMNS, feature_map=FEATURE_MAP, anchor_column="INTIME", max_hours=48,
                   return_summary=True)
    unmapped = tmp_path / "unmapped.csv"  # a table whose every row is skipped before the end time is read
    unmapped.write_text("SUBJECT_ID,CHARTTIME,ITEMID,VALUE\n1,2130-01-01 09:00:00,999999,1\n")
    dataset, summary = load_long_format([path, unmapped], labels=ends, end_column="OUTTIME", **options)
    assert dataset[0]["feature"] == ["heart_rate"] and dataset[0]["time"] == [1.0]  # 09:00 only, before 10:00
    assert summary.skipped_events["time after the patient's end time"] == 3  # sodium twice, temperature
    assert dataset[1]["time"] == [1.0]  # no end: as without one
    still_in = load_long_format(path, labels=ends.assign(OUTTIME=None), end_column="OUTTIME", **options)[0]
    assert still_in["time"] == load_long_format(path, labels=ends, **options)[0]["time"]  # all blank: no end
    assert load_long_format(path, labels=LABELS, end_column="", **options)[0]["time"] == still_in["time"]
    with pytest.raises(ValueError, match="end_column 'OUTTIME': patient '1' ends before its anchor"):
        load_long_format(path, labels=ends.assign(OUTTIME=["2130-01-01 07:00", None, None]), end_column="OUTTIME",
                         **options)


def test_every_skip_is_counted_with_its_line(tmp_path):
    _, summary = load(tmp_path)
    path = tmp_path / "events.csv"
    expected = {
        "duplicate row": 4,
        "time before the anchor": 6,
        "time more than 48 h after the anchor": 7,
        "empty value": 8,
        "non-numeric value": 9,
        "unparseable time": 10,
        "feature not in feature_map": 11,
        "patient has no anchor time": 13,
    }
    for reason, line in expected.items():
        assert summary.skipped_events[reason] == 1, reason
        assert summary.examples[reason] == [f"{path}:{line}"]
    assert summary.skipped_patients == {"listed (labels or patients table) but no events": 1,  # patient 4
                                        "events but no labels row": 1}  # patient 3, whose event had no anchor
    assert summary.patients_read == 4 and summary.patients_kept == 2
    assert summary.events_kept + sum(summary.skipped_events.values()) == summary.events_read == 12


def test_numeric_hours_and_dataframes_work_without_labels():
    events = pd.DataFrame({"patient_id": ["a", "a", "b"], "time": [0.5, 2.0, 1.0], "feature": ["hr", "na", "hr"],
                           "value": [80, 140, 70]})
    dataset = load_long_format(events)
    assert dataset["patient_id"] == ["a", "b"]
    assert dataset[0]["time"] == [0.5, 2.0] and dataset[0]["feature"] == ["hr", "na"]


def test_durations_are_hours_in_a_dataframe_in_parquet_and_as_anchors(tmp_path):
    hours = pd.DataFrame({"patient_id": ["a", "a", "b"], "time": [0.5, 2.0, 1.0], "feature": ["hr", "na", "hr"],
                          "value": [80, 140, 70]})
    durations = hours.assign(time=pd.to_timedelta(hours["time"], unit="h"))
    durations.to_parquet(tmp_path / "events.parquet")
    for events in (durations, tmp_path / "events.parquet"):
        dataset = load_long_format(events)
        assert dataset[0]["time"] == [0.5, 2.0] and dataset[1]["time"] == [1.0]
    starts = pd.DataFrame({"patient_id": ["a", "b"], "start": pd.to_timedelta([0.5, 0.0], unit="h")})
    assert load_long_format(hours, labels=starts, anchor_column="start")[0]["time"] == [0.0, 1.5]


def test_missing_columns_are_named(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("id,when,what\n1,2,3\n")
    with pytest.raises(ValueError, match=r"events.csv: columns \[.patient_id.*missing"):
        load_long_format(path)


def test_duplicate_label_rows_are_an_error(tmp_path):
    labels = pd.DataFrame({"patient_id": [1, 1], "died": [0, 1]})
    events = pd.DataFrame({"patient_id": [1], "time": [0.0], "feature": ["hr"], "value": [80]})
    with pytest.raises(ValueError, match="labels, row 1: patient '1' has more than one labels row"):
        load_long_format(events, labels=labels)


def test_the_shipped_mimic3_item_map_and_unit_conversions_are_the_catalogues():
    """recipes/configs/mimic3_*, the README's worked example, cannot drift from the catalogue; the Fahrenheit
    temperatures ('?F' is how the demo writes °F) become Celsius as `load_mimic3_benchmark_root` converts them."""
    from pathlib import Path

    from medfuse_hf.data.clinical_features import MIMIC3_ITEMS, NUMERIC_FEATURES
    from medfuse_hf.training.recipe_config import read_feature_map, read_unit_conversions

    configs = Path(__file__).resolve().parents[1] / "recipes" / "configs"
    assert (read_feature_map(str(configs / "mimic3_items.csv"))
            == {str(item): name for item, name in MIMIC3_ITEMS.items()})
    scale, offset = read_unit_conversions(str(configs / "mimic3_unit_conversions.json"))["temperature"]["?F"]
    assert scale * 98.6 + offset == pytest.approx(37.0)
    # every conversion ends in the catalogue's unit, so the demo reaches checkpoints built on the catalogue
    units = {name: unit for name, (unit, _, _) in NUMERIC_FEATURES.items()}
    for feature, by_unit in read_unit_conversions(str(configs / "mimic3_unit_conversions.json")).items():
        assert by_unit["into"] == units[feature], feature


def test_a_long_format_cohort_without_labels_has_none_and_a_labels_table_needs_its_column(tmp_path):
    from medfuse_hf.training import load_cohort

    events = pd.DataFrame({"patient_id": [f"p{i}" for i in range(20)], "time": [1.0] * 20, "feature": ["hr"] * 20,
                           "value": [80.0] * 20})
    events.to_csv(tmp_path / "events.csv", index=False)
    cohort = load_cohort("long-format", events=(str(tmp_path / "events.csv"),))
    assert cohort.label_column is None and sum(len(part) for part in cohort.splits.values()) == 20
    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,died\n" + "".join(f"p{i},0\n" for i in range(20)))
    with pytest.raises(ValueError, match="give --labels with --label_column"):
        load_cohort("long-format", events=(str(tmp_path / "events.csv"),), labels=str(labels))


def test_every_long_format_option_is_a_flag_with_its_default_and_a_bad_one_is_named():
    """One declaration (`LongFormatOptions`) serves the loader, the recipes' flags and their recorded settings."""
    import argparse
    from dataclasses import fields

    from medfuse_hf.data import LongFormatOptions
    from medfuse_hf.training.recipe_config import add_long_format_arguments

    parser = argparse.ArgumentParser()
    add_long_format_arguments(parser)
    defaults = vars(parser.parse_args([]))
    assert {option.name: option.default for option in fields(LongFormatOptions)}.items() <= defaults.items()
    args = parser.parse_args(["--censored", "refuse", "--label_map", "yes=1,no=0", "--max_hours", "48"])
    assert LongFormatOptions.from_settings(vars(args)) == LongFormatOptions(censored="refuse", max_hours=48.0,
                                                                            label_map={"yes": 1, "no": 0})
    with pytest.raises(TypeError, match="unexpected keyword argument 'censor'"):
        load_long_format(pd.DataFrame(), censor="refuse")
    with pytest.raises(ValueError, match=r"censored must be one of \('bound', 'refuse'\), got 'drop'"):
        load_long_format(pd.DataFrame(), censored="drop")


def test_lines_stay_right_after_blank_lines_and_newlines_inside_quoted_fields(tmp_path):
    """Arrow counts rows, not lines: a blank line and a value broken over two lines move every later row down."""
    path = tmp_path / "events.csv"
    path.write_text('patient_id,time,feature,value\np1,1,hr,80\n\np1,2,hr,"see\ncomment"\np1,3,hr,\np1,4,hr,82\n')
    dataset, summary = load_long_format(path, return_summary=True)
    assert summary.examples["non-numeric value"] == [f"{path}:4"]
    assert summary.examples["empty value"] == [f"{path}:6"]
    assert dataset[0]["value"] == [80.0, 82.0] and summary.events_read == 4  # the blank line is no event


def test_a_table_read_in_many_batches_loads_as_in_one(tmp_path, monkeypatch):
    """Patients whose events straddle reading, sorting and writing batches, and repeated rows far apart in the file,
    come out as when the table is one batch; the result is an Arrow file on disk, memory-mapped, not a table in RAM."""
    import numpy as np

    from medfuse_hf.data import event_batches, event_store

    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"patient_id": rng.integers(0, 30, 3000).astype(str), "time": rng.integers(0, 40, 3000),
                         "feature": rng.choice(["heart_rate", "sodium", "glucose"], 3000),
                         "value": rng.integers(60, 70, 3000)})
    rows.to_csv(tmp_path / "events.csv", index=False)
    whole, whole_summary = load_long_format(tmp_path / "events.csv", return_summary=True)
    monkeypatch.setattr(event_batches, "CSV_BLOCK_BYTES", 2000)
    monkeypatch.setattr(event_store, "STREAM_ROWS", 97)
    monkeypatch.setattr(event_store, "SORT_EVENTS", 450)  # patients sorted a few at a time
    batched, summary = load_long_format(tmp_path / "events.csv", return_summary=True)
    assert batched.to_dict() == whole.to_dict()
    assert summary.skipped_events == whole_summary.skipped_events and summary.skipped_events["duplicate row"] > 100
    assert summary.events_kept == whole_summary.events_kept == sum(len(times) for times in whole["time"])
    assert batched.cache_files and batched.cache_files[0]["filename"].endswith(".arrow")


def test_without_an_anchor_time_zero_is_the_patients_first_event_in_any_table(tmp_path):
    (tmp_path / "vitals.csv").write_text("patient_id,time,feature,value\np1,2020-01-01T10:00,heart_rate,80\n")
    (tmp_path / "labs.csv").write_text("patient_id,time,feature,value\np1,2020-01-01T08:30,sodium,140\n")
    dataset = load_long_format([tmp_path / "vitals.csv", tmp_path / "labs.csv"])
    assert dataset[0]["feature"] == ["sodium", "heart_rate"] and dataset[0]["time"] == [0.0, 1.5]


def test_a_row_repeated_within_a_table_is_dropped_but_one_in_two_tables_is_two_events():
    row = {"patient_id": ["a"], "time": [1.0], "feature": ["sodium"], "value": [140.0]}
    dataset, summary = load_long_format([pd.DataFrame(row), pd.concat([pd.DataFrame(row)] * 2)], return_summary=True)
    assert dataset[0]["value"] == [140.0, 140.0] and summary.skipped_events == {"duplicate row": 1}


def test_a_patient_whose_every_event_is_past_max_hours_is_skipped_and_counted():
    events = pd.DataFrame({"patient_id": ["a", "b", "b"], "time": ["2020-01-01T00:00", "2020-01-01T00:00",
                                                                   "2020-01-05T00:00"],
                           "feature": ["sodium"] * 3, "value": [140.0] * 3})
    hours = pd.DataFrame({"patient_id": ["a", "c"], "time": [1.0, 99.0], "feature": ["sodium"] * 2,
                          "value": [140.0] * 2})
    dataset, summary = load_long_format(events, max_hours=48, return_summary=True)
    assert dataset["patient_id"] == ["a", "b"] and dataset[1]["time"] == [0.0]  # b's day-4 event is past 48 h
    dataset, summary = load_long_format(hours, max_hours=48, return_summary=True)  # hours as given: c's all past
    assert dataset["patient_id"] == ["a"] and (summary.patients_read, summary.patients_kept) == (2, 1)
    assert summary.skipped_events == {"time more than 48 h after the anchor": 1}
    assert summary.skipped_patients == {"no event kept": 1}


def test_a_glob_reads_every_table_it_matches_and_one_matching_nothing_is_named(tmp_path):
    for part, patient in enumerate(["a", "b"]):
        (tmp_path / f"chartevents-{part}.csv").write_text(f"patient_id,time,feature,value\n{patient},1,sodium,140\n")
    assert load_long_format(str(tmp_path / "chartevents-*.csv"))["patient_id"] == ["a", "b"]
    with pytest.raises(FileNotFoundError, match=r"labevents-\*\.csv: no file matches"):
        load_long_format(str(tmp_path / "labevents-*.csv"))
    # a table given twice would count every event twice
    again = str(tmp_path / ".." / tmp_path.name / "chartevents-1.csv")
    with pytest.raises(ValueError, match=r"chartevents-1.csv: given twice \(also as .*chartevents-\*\.csv\)"):
        load_long_format([str(tmp_path / "chartevents-*.csv"), again])


def test_paths_from_the_home_folder_are_read_where_the_recipes_flag_check_found_them(tmp_path, monkeypatch):
    """A quoted `~` (a YAML config, a shell that left it) passed the recipes' flag check, which expands it; the loaders
    must read the same files, not report that nothing matches."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "events-0.csv").write_text("patient_id,time,feature,value\na,1,sodium,140\n")
    (tmp_path / "export" / "split.json").write_text('{"train": ["a"], "validation": [], "test": []}')
    assert existing_table("~/export/*.csv") == "~/export/*.csv" and existing_table("~/export/split.json")
    assert load_long_format("~/export/*.csv")["patient_id"] == ["a"]
    assert load_split("~/export/split.json")["train"] == ["a"]


def test_a_dataframe_whose_columns_mix_numbers_and_text_is_read_as_a_csv_would_be():
    events = pd.DataFrame({"patient_id": ["a", "a", "b"], "time": [1, "2", 3.5], "feature": ["sodium"] * 3,
                           "value": [140, "<150", None]})
    dataset, summary = load_long_format(events, return_summary=True)
    assert dataset.to_dict() == {"patient_id": ["a"], "feature": [["sodium", "sodium"]], "value": [[140.0, 150.0]],
                                 "time": [[1.0, 2.0]]}
    assert summary.skipped_events == {"empty value": 1} and summary.notes == {CENSORED_KEPT: 1}


def test_ids_in_a_column_of_mixed_types_are_one_patient_however_written():
    events = pd.DataFrame({"patient_id": [7, 7.0, "7"], "time": [1.0, 2.0, 3.0], "feature": ["sodium"] * 3,
                           "value": [140.0, 141.0, 142.0]})
    dataset = load_long_format(events)
    assert dataset["patient_id"] == ["7"] and dataset[0]["value"] == [140.0, 141.0, 142.0]


def test_a_table_whose_every_event_is_skipped_gives_an_empty_dataset_with_its_columns():
    events = pd.DataFrame({"patient_id": ["a", "b"], "feature": ["hr", "hr"], "value": ["x", "y"], "time": [1.0, 2.0]})
    dataset, summary = load_long_format(events, return_summary=True)
    assert len(dataset) == 0 and set(dataset.column_names) == {"patient_id", "feature", "value", "time"}
    assert summary.skipped_events == {"non-numeric value": 2}
    # without a labels table too, the patients are counted and named: scoring would otherwise drop them unsaid
    assert summary.patients_read == 2 and summary.skipped_patients == {"no event kept": 2}


def test_a_split_file_names_patients_as_the_loader_does_and_a_split_matching_none_is_an_error(tmp_path):
    """Integer ids in the JSON are the patients "1".."6"; a split none of whose ids was loaded stops the run here,
    not deep inside training."""
    rows = [(str(patient), hour, "heart_rate", 80.0 + patient) for patient in range(1, 7) for hour in (0.0, 1.0)]
    pd.DataFrame(rows, columns=["patient_id", "time", "feature", "value"]).to_csv(tmp_path / "events.csv", index=False)
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"train": [1, 2, 3, 4], "validation": [5], "test": [6]}))
    cohort = load_cohort("long-format", events=(str(tmp_path / "events.csv"),), split_file=str(split_file))
    assert {name: part["patient_id"] for name, part in cohort.splits.items()} == {
        "train": ["1", "2", "3", "4"], "validation": ["5"], "test": ["6"]}
    split_file.write_text(json.dumps({"train": [1, 2, 3, 4], "validation": [5], "test": [60]}))
    with pytest.raises(ValueError, match=r"split.json: none of its 'test' ids \(\['60'\]...\) is a patient"):
        load_cohort("long-format", events=(str(tmp_path / "events.csv"),), split_file=str(split_file))
    split_file.write_text(json.dumps({"train": [1, 2, 3, 4], "validation": [5], "tset": [6]}))
    with pytest.raises(ValueError, match=r"holds 'train', 'validation' and 'test', got \['train', 'tset'"):
        load_cohort("long-format", events=(str(tmp_path / "events.csv"),), split_file=str(split_file))


def test_a_split_file_that_lists_a_patient_twice_as_number_and_text_is_refused(tmp_path, caplog):
    """7 in train and "7" in test are one patient: it would be trained and tested on. A loaded patient that no part
    lists is left out with a count."""
    rows = [(str(patient), hour, "heart_rate", 80.0 + patient) for patient in range(1, 8) for hour in (0.0, 1.0)]
    pd.DataFrame(rows, columns=["patient_id", "time", "feature", "value"]).to_csv(tmp_path / "events.csv", index=False)
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"train": [1, 2, 3, 4], "validation": [5], "test": ["4 ", 6]}))
    with pytest.raises(ValueError, match=r"split.json: patient '4' is in both 'train' and 'test'"):
        load_cohort("long-format", events=(str(tmp_path / "events.csv"),), split_file=str(split_file))
    split_file.write_text(json.dumps({"train": [1, 2, 3, 4], "validation": [5], "test": [6]}))
    load_cohort("long-format", events=(str(tmp_path / "events.csv"),), split_file=str(split_file))
    assert "1 patients of the dataset are in no split, and left out (e.g. ['7'])" in caplog.text


def test_a_long_labels_table_whose_extra_column_turns_to_text_late_loads(tmp_path):
    """pandas reads a long CSV in chunks of about 262,000 rows and types each on its own: numbers, then text."""
    rows = 270_000
    labels = pd.DataFrame({"patient_id": [f"p{row}" for row in range(rows)], "died": [1] + [0] * (rows - 1),
                           "ward": [str(row) for row in range(rows - 1)] + ["ICU-3"]})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    (tmp_path / "events.csv").write_text("patient_id,time,feature,value\np0,1,hr,80\np269999,1,hr,90\n")
    dataset = load_long_format(str(tmp_path / "events.csv"), labels=str(tmp_path / "labels.csv"), label_column="died")
    assert dataset["ward"] == ["0", "ICU-3"] and dataset["died"] == [1, 0]


def test_an_id_written_7_in_one_table_and_7_0_in_another_is_one_patient(tmp_path):
    """pandas writes the ids of a float column (one with a gap) as "7.0": that lab table must meet the chart's "7".
    Leading zeros stay: "007" is another id."""
    (tmp_path / "chart.csv").write_text("patient_id,time,feature,value\n7,1,hr,80\n007,1,hr,70\n")
    (tmp_path / "lab.csv").write_text("patient_id,time,feature,value\n7.0,2,sodium,140\n")
    dataset = load_long_format([str(tmp_path / "chart.csv"), str(tmp_path / "lab.csv")])
    assert dataset["patient_id"] == ["7", "007"] and dataset[0]["feature"] == ["hr", "sodium"]


def test_a_mimic_subject_keeps_its_first_stays_events_alone(tmp_path):
    """A subject's events.csv holds every stay and admission; the first stay's row gives the label, so a later
    stay's events (here after the first discharge, within 48 h) would be read under it."""
    from medfuse_hf.data import load_mimic3_benchmark_root

    subject = tmp_path / "root" / "10088"
    subject.mkdir(parents=True)
    (subject / "stays.csv").write_text(
        "SUBJECT_ID,HADM_ID,ICUSTAY_ID,INTIME,OUTTIME,MORTALITY_INHOSPITAL\n"
        "10088,1,11,2130-01-01 08:00:00,2130-01-02 08:00:00,0\n"
        "10088,2,12,2130-01-02 20:00:00,2130-01-05 08:00:00,1\n")
    (subject / "events.csv").write_text(
        "SUBJECT_ID,HADM_ID,ICUSTAY_ID,CHARTTIME,ITEMID,VALUE,VALUEUOM\n"
        "10088,1,11,2130-01-01 09:00:00,220045,80,bpm\n"
        "10088,2,12,2130-01-02 21:00:00,220045,120,bpm\n")
    cohort, summary = load_mimic3_benchmark_root(tmp_path / "root", return_summary=True)
    assert cohort[0]["value"] == [80.0] and cohort[0]["MORTALITY_INHOSPITAL"] == 0
    assert summary.skipped_events["time after the patient's end time"] == 1
