"""Malformed hospital exports: each is a clear error that names the file and line (or patient), or a counted skip
with its reason. Never a silently wrong value, label or feature."""

import pandas as pd
import pytest

from medfuse_hf.data import load_long_format, load_physionet2012
from medfuse_hf.timestamps import REPEATED_HOUR, SKIPPED_HOUR

HEADER = "patient_id,time,feature,value\n"


def load_csv(tmp_path, body: str, header: str = HEADER, **kwargs):
    path = tmp_path / "events.csv"
    path.write_bytes((header + body).encode("utf-8"))
    return load_long_format(path, return_summary=True, **kwargs)


@pytest.mark.parametrize(
    "body, message",
    [
        ("p1,2.0,potassium,3,9\n", r"events.csv, line 2: 5 fields where the header has 4"),  # unquoted decimal comma
        ("p1,1.0,sodium,140\np1,2.0,potassium,3,9\n", r"events.csv, line 3: 5 fields"),
        ("p1,2.0,potassium\n", r"events.csv, line 2: 3 fields where the header has 4"),
        ("p1,1.0,sodium,140\np2,2.0\n", r"events.csv, line 3: 2 fields"),
        ('p1,1.0,note,"multi\nline"\np2,2.0,x\n', r"events.csv, line 4: 3 fields"),  # a quoted newline counts its line
        ("", r"events.csv: no event rows, only a header"),
    ],
)
def test_ragged_and_empty_tables_are_errors_naming_file_and_line(tmp_path, body, message):
    with pytest.raises(ValueError, match=message):
        load_csv(tmp_path, body)


def test_an_empty_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"events.csv: the file is empty"):
        load_csv(tmp_path, "", header="")


def test_a_quoted_decimal_comma_and_the_decimal_option_keep_the_value(tmp_path):
    dataset, _ = load_csv(tmp_path, 'p1,2.0,potassium,"3,9"\n', decimal=",")
    assert dataset[0]["value"] == [3.9]


def test_values_that_differ_at_one_patient_feature_and_time_are_kept_and_noted(tmp_path):
    rows = "p1,1.0,sodium,140\np1,1.0,sodium,150\np1,1.0,sodium,140\np1,2.0,sodium,141\n"  # a repeat, a second value
    dataset, summary = load_csv(tmp_path, rows)
    assert dataset[0]["value"] == [140.0, 150.0, 141.0] and summary.skipped_events == {"duplicate row": 1}
    assert summary.notes == {"values that differ at one patient, feature and time (all kept)": 2}


@pytest.mark.parametrize("decimal, text, message", [
    (".", "3,9", r"line 3: value '3,9' has a decimal comma, unlike the load's decimal '\.' \(2 such values in this "
                 r"batch\): give --decimal ,"),
    (".", "1,234", "line 3: value .1,234. has a decimal comma"),  # or 1234? not to be guessed
    (",", "7.4", r"line 3: value '7.4' has a decimal point, unlike the load's decimal ',' .*: give --decimal \."),
    (",", "0.125", r"line 3: value '0.125' has a decimal point"),  # no thousands grouping starts with 0: never 125
])
def test_a_value_with_the_other_decimal_mark_is_an_error_not_a_skip(tmp_path, decimal, text, message):
    """Skipped, it would take every non-integer value of an export written the other way out of the cohort."""
    with pytest.raises(ValueError, match=f"events.csv, {message}"):
        load_csv(tmp_path, f'p1,1.0,potassium,4\np1,2.0,potassium,"{text}"\np1,3.0,sodium,"{text}"\n', decimal=decimal)


def test_a_value_with_one_thousands_point_under_a_decimal_comma_is_read_as_thousands_and_counted(tmp_path):
    """'1.015' is 1015 where the export writes a decimal comma, but a specific gravity written with a point looks the
    same: read by the load's convention, and counted with its line, never silently."""
    dataset, summary = load_csv(tmp_path, 'p1,1,platelets,"1.015"\np1,2,sodium,"1.234,5"\np1,3,sodium,"3,9"\n',
                                decimal=",")
    assert dataset[0]["value"] == [1015.0, 1234.5, 3.9]
    note = "value with one thousands point, read as thousands under --decimal , ('1.015' as 1015)"
    assert summary.notes == {note: 1} and summary.examples[note][0].endswith("events.csv:2")


def test_a_semicolon_export_with_decimal_commas_reads_with_its_delimiter(tmp_path):
    """The usual European export: fields separated by ';' so that a decimal comma (in values and hours alike) needs no
    quotes; its labels table too."""
    (tmp_path / "labels.csv").write_text("patient_id;died\np1;1\n")
    dataset, _ = load_csv(tmp_path, "p1;1;potassium;3,9\np1;2,5;sodium;140\n",
                          header="patient_id;time;feature;value\n", labels=tmp_path / "labels.csv",
                          label_column="died", delimiter=";", decimal=",")
    assert dataset[0]["value"] == [3.9, 140.0] and dataset[0]["time"] == [1.0, 2.5] and dataset[0]["died"] == 1


def test_a_semicolon_export_read_with_commas_names_the_delimiter_flag(tmp_path):
    with pytest.raises(ValueError, match=r"missing; it has \['patient_id;time;feature;value'\] \(one column: are its "
                                         r"fields separated by ';'\? give --delimiter ';'\)"):
        load_csv(tmp_path, "p1;1.0;potassium;3.9\n", header="patient_id;time;feature;value\n")


def test_an_anchor_column_that_is_not_there_names_the_columns_that_are(tmp_path):
    (tmp_path / "stays.csv").write_text("patient_id,INTIME\np1,2020-01-01T00:00\n")
    with pytest.raises(ValueError, match=r"'IN_TIME' is not a column of the .*table; it has \['INTIME'\]"):
        load_csv(tmp_path, "p1,2020-01-01T01:00,sodium,140\n", labels=tmp_path / "stays.csv", anchor_column="IN_TIME")
    with pytest.raises(ValueError, match=r"anchor_column 'INTIME' is read from a table of one row per patient"):
        load_csv(tmp_path, "p1,2020-01-01T01:00,sodium,140\n", anchor_column="INTIME")


def test_a_tab_delimiter_can_be_given_as_a_shell_passes_it():
    import argparse

    from medfuse_hf.training.recipe_config import field_separator

    assert field_separator("\\t") == field_separator("tab") == "\t" and field_separator(";") == ";"
    with pytest.raises(argparse.ArgumentTypeError, match="give one character"):
        field_separator(";;")


@pytest.mark.parametrize("text, kept", [("7,4", 7.4), ("1.234,5", 1234.5), ("1.234", 1234.0), ("12.34.5", None)])
def test_with_a_decimal_comma_a_dot_only_groups_thousands(tmp_path, text, kept):
    """A number that is neither (12.34.5) is a counted skip."""
    dataset, summary = load_csv(tmp_path, f'p1,1.0,potassium,"{text}"\np1,2.0,potassium,"4,1"\n', decimal=",")
    assert dataset[0]["value"] == ([kept, 4.1] if kept is not None else [4.1])
    assert summary.skipped_events.get("non-numeric value", 0) == (kept is None)


def test_a_byte_order_mark_does_not_hide_the_first_column(tmp_path):
    dataset, _ = load_csv(tmp_path, "p1,1.0,sodium,140\n", header="\ufeff" + HEADER)
    assert dataset["patient_id"] == ["p1"]


@pytest.mark.parametrize(
    "text, bound",
    [
        ("<0.01", 0.01),
        (">100", 100.0),
        ("<=5", 5.0),
        (">= 7.5", 7.5),
        ("LESS THAN 2", 2.0),
        ("GREATER THAN 500", 500.0),
        ("greater than 1e3", 1000.0),
        (" < 3 ", 3.0),
    ],
)
def test_censored_values_are_kept_at_their_bound_and_counted(tmp_path, text, bound):
    dataset, summary = load_csv(tmp_path, f'p1,1.0,troponin,"{text}"\n')
    assert dataset[0]["value"] == [bound]
    assert summary.notes["censored value, kept at the bound"] == 1
    assert summary.examples["censored value, kept at the bound"] == [f"{tmp_path / 'events.csv'}:2"]


def test_censored_values_can_be_refused(tmp_path):
    dataset, summary = load_csv(tmp_path, "p1,1.0,troponin,<0.01\np1,2.0,troponin,0.5\n", censored="refuse")
    assert dataset[0]["value"] == [0.5] and summary.skipped_events["censored value (refused)"] == 1


@pytest.mark.parametrize("text", ["see comment", "<", "> high", "1..2", "nan", "inf", "--3", "3 4"])
def test_text_that_is_no_number_is_a_counted_skip(tmp_path, text):
    dataset, summary = load_csv(tmp_path, f'p1,1.0,troponin,"{text}"\np1,2.0,troponin,0.5\n')
    assert dataset[0]["value"] == [0.5] and summary.skipped_events["non-numeric value"] == 1


@pytest.mark.parametrize("name", ["sodium ", " sodium", "\tsodium"])
def test_surrounding_whitespace_is_not_a_new_feature(tmp_path, name):
    dataset, _ = load_csv(tmp_path, f'p1,1.0,sodium,140\np1,2.0,"{name}",141\n')
    assert dataset[0]["feature"] == ["sodium", "sodium"]


@pytest.mark.parametrize("ids", [[220045, 50983], [220045.0, 50983.0]])
def test_integer_and_float_item_ids_from_a_dataframe_are_ids(ids):
    events = pd.DataFrame({"patient_id": [7, 7], "time": [0.0, 1.0], "feature": ids, "value": [80.0, 140.0]})
    dataset = load_long_format(events, feature_map={"220045": "heart_rate", "50983": "sodium"})
    assert dataset["patient_id"] == ["7"] and dataset[0]["feature"] == ["heart_rate", "sodium"]


def labels_case(tmp_path, labels: str, **kwargs):
    events = pd.DataFrame(
        {"patient_id": ["a", "b", "c"], "time": [0.0] * 3, "feature": ["hr"] * 3, "value": [80.0] * 3}
    )
    path = tmp_path / "labels.csv"
    path.write_text("patient_id,died\n" + labels)
    return load_long_format(events, labels=path, label_column="died", return_summary=True, **kwargs)


@pytest.mark.parametrize(
    "labels, line, value",
    [
        ("a,0\nb,2\nc,1\n", 3, "2"),
        ("a,yes\nb,no\nc,1\n", 2, "yes"),
        ("a,0\nb,1\nc,-1\n", 4, "-1"),
        ("a,0.5\nb,1\nc,0\n", 2, "0.5"),
        ("a,true\nb,1\nc,0\n", 2, "true"),
        ("a,0\n\nb,1\n   \nc,2\n", 6, "2"),  # blank lines, of spaces too, are lines of the file
    ],
)
def test_a_label_other_than_0_or_1_names_the_patient_and_line(tmp_path, labels, line, value):
    with pytest.raises(
        ValueError, match=rf"labels.csv, line {line}: patient '.' has died '?{value}'?; a binary label"
    ):
        labels_case(tmp_path, labels)


def test_ids_are_read_alike_in_the_events_and_the_labels(tmp_path):
    """Leading zeros and spaces: '007' in both files is one patient, as ' p1' and 'p1' are."""
    (tmp_path / "events.csv").write_text(HEADER + "007,0.0,hr,80\n p1,1.0,hr,81\np1 ,2.0,hr,82\n")
    (tmp_path / "labels.csv").write_text("patient_id,died\n007,1\np1,0\n")
    dataset, summary = load_long_format(tmp_path / "events.csv", labels=tmp_path / "labels.csv", label_column="died",
                                        return_summary=True)
    assert dataset["patient_id"] == ["007", "p1"] and dataset["died"] == [1, 0] and not summary.skipped_patients
    assert dataset[1]["value"] == [81.0, 82.0]


@pytest.mark.parametrize("column", ["patient_id", "time", "row"])
def test_a_labels_column_named_like_the_patient_tables_own_is_refused(tmp_path, column):
    """Ids read from `stay_id` beside a `patient_id` column: the table's ids would have been replaced by that column
    (risks written against other patients); `time` or `row` would clash with the events' lists or the row tag."""
    (tmp_path / "events.csv").write_text("stay_id,time,feature,value\n100,0.0,hr,80\n200,1.0,hr,81\n")
    (tmp_path / "stays.csv").write_text(f"stay_id,{column},died\n100,200,1\n200,100,0\n")
    with pytest.raises(ValueError, match=f"stays.csv: column '{column}' is a name the patient table gives its own "
                                         r"column \(the patient ids, read from 'stay_id', or the events\)"):
        load_long_format(tmp_path / "events.csv", labels=tmp_path / "stays.csv", label_column="died",
                         columns={"patient_id": "stay_id"})


def test_labels_that_match_no_patient_with_events_are_an_error_not_an_empty_cohort(tmp_path):
    (tmp_path / "labels.csv").write_text("patient_id,died\n007,1\n008,0\n")
    events = pd.DataFrame({"patient_id": ["7", "8"], "time": [0.0, 1.0], "feature": ["hr"] * 2, "value": [80.0] * 2})
    with pytest.raises(ValueError, match=r"no patient of the labels table has events.*\['007', '008'\].*\['7', '8'\]"):
        load_long_format(events, labels=tmp_path / "labels.csv", label_column="died")


def test_an_infinite_time_is_a_counted_skip_with_its_line(tmp_path):
    dataset, summary = load_csv(tmp_path, "p1,1.0,sodium,140\np1,inf,sodium,141\np1,-Infinity,sodium,142\n")
    assert dataset[0]["time"] == [1.0] and summary.skipped_events == {"time not a finite number": 2}
    assert summary.examples["time not a finite number"] == [f"{tmp_path / 'events.csv'}:3"]  # the first, by line


def test_a_row_without_a_patient_or_a_feature_is_a_counted_skip_and_a_labels_row_without_an_id_an_error(tmp_path):
    events = pd.DataFrame({"patient_id": ["p1", None, " ", "p1", "p1"], "time": [0.0, 1.0, 2.0, 3.0, 4.0],
                           "feature": ["hr", "hr", "hr", None, "hr"], "value": [80.0] * 5})
    dataset, summary = load_long_format(events, return_summary=True)
    assert dataset["patient_id"] == ["p1"] and dataset[0]["time"] == [0.0, 4.0]
    assert summary.skipped_events == {"empty patient id": 2, "empty feature name": 1}
    (tmp_path / "labels.csv").write_text("patient_id,died\np1,0\n,1\n")
    with pytest.raises(ValueError, match=r"labels.csv, line 3: no patient id"):
        load_long_format(events, labels=tmp_path / "labels.csv", label_column="died")


def test_a_label_map_turns_text_labels_into_0_and_1(tmp_path):
    dataset, _ = labels_case(tmp_path, "a,yes\nb,No\nc,yes\n", label_map={"yes": 1, "no": 0})
    assert dataset["died"] == [1, 0, 1]


def test_a_missing_label_is_counted_unlabeled_and_keeps_the_column_integer(tmp_path):
    dataset, summary = labels_case(tmp_path, "a,0\nb,\nc,1\n")
    assert dataset["died"] == [0, None, 1]
    assert dataset.features["died"].dtype == "int64"
    assert summary.notes["no 'died' label (kept unlabeled)"] == 1


def write_p12(tmp_path, record: str, outcome: int = 0):
    folder = tmp_path / "set-a"
    folder.mkdir()
    (folder / "132539.txt").write_bytes(record.encode("utf-8"))
    (tmp_path / "Outcomes-a.txt").write_text(
        f"RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death\n132539,6,1,5,-1,{outcome}\n"
    )


RECORD = "Time,Parameter,Value\n00:00,RecordID,132539\n00:00,Age,54\n00:07,HR,73\n"


def test_p12_reads_a_record_behind_a_byte_order_mark(tmp_path):
    write_p12(tmp_path, "\ufeff" + RECORD)
    assert load_physionet2012(tmp_path)["record_id"] == [132539]


def test_p12_refuses_an_outcome_that_is_not_0_or_1(tmp_path):
    write_p12(tmp_path, RECORD, outcome=2)
    with pytest.raises(ValueError, match=r"Outcomes-a.txt, line 2: RecordID 132539 has In-hospital_death 2"):
        load_physionet2012(tmp_path)


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "p1,03/04/2020 10:00,hr,80\np1,05/04/2020 10:00,hr,81\n",
            r"events.csv:2 \(column time\): time '03/04/2020 10:00': day and month could be either way round",
        ),
        ("p1,13/04/2020 10:00,hr,80\n", r"events.csv:2 \(column time\): time '13/04/2020 10:00': it is not ISO 8601"),
        (
            "p1,2020-04-03T10:00+01:00,hr,80\np1,2020-04-03T11:00,hr,81\n",
            r"events.csv:2 \(column time\): time '2020-04-03T10:00\+01:00' has a UTC offset, but .*events.csv:3",
        ),
        (
            "p1,1.0,hr,80\np1,2.0,hr,81\np1,3:00,hr,82\np1,4.5,hr,83\n",
            r"events.csv:4: time '3:00' is a timestamp, but the column holds 3 numbers of hours",
        ),
        (
            "p1,2020-04-03 10:00,hr,80\np1,2020-04-03 11:00,hr,81\np1,5,hr,82\n",
            r"events.csv:4: time '5' is a number of hours, but the column holds 2 timestamps",
        ),
    ],
)
def test_times_that_could_be_read_two_ways_are_errors_naming_the_row(tmp_path, body, message):
    with pytest.raises(ValueError, match=message):
        load_csv(tmp_path, body)


def test_a_time_format_reads_day_first_dates(tmp_path):
    dataset, _ = load_csv(
        tmp_path, "p1,03/04/2020 10:00,hr,80\np1,05/04/2020 10:00,hr,81\n", time_format="%d/%m/%Y %H:%M"
    )
    assert dataset[0]["time"] == [0.0, 48.0]  # 3 to 5 April, not 4 March to 4 May


def test_a_time_format_of_digits_only_reads_timestamps_not_numbers_of_hours(tmp_path):
    dataset, _ = load_csv(tmp_path, "p1,202004031000,hr,80\np1,202004031130,hr,81\n", time_format="%Y%m%d%H%M")
    assert dataset[0]["time"] == [0.0, 1.5]  # not 202,004,031,000 hours, which float32 would merge
    (tmp_path / "labels.csv").write_text("patient_id,admitted\np1,202004030900\n")  # the anchors written so too
    dataset, _ = load_csv(tmp_path, "p1,202004031000,hr,80\n", time_format="%Y%m%d%H%M",
                          labels=tmp_path / "labels.csv", anchor_column="admitted")
    assert dataset[0]["time"] == [1.0]


def test_utc_offsets_are_converted_to_utc(tmp_path):
    dataset, _ = load_csv(tmp_path, "p1,2020-04-03T10:00+02:00,hr,80\np1,2020-04-03T10:00+01:00,hr,81\n")
    assert dataset[0]["time"] == [0.0, 1.0]  # 08:00 and 09:00 UTC


def test_a_time_zone_keeps_true_hours_across_daylight_saving_and_counts_times_no_clock_can_place(tmp_path):
    """Berlin's clocks went back at 03:00 on 25 October 2020: 00:30 to 03:30 local is 4 hours, not 3. 02:30 came
    twice that night (which one is unknown), and 02:30 on 29 March never came: both skipped and counted."""
    night = "p1,2020-10-25 00:30,hr,80\np1,2020-10-25 02:30,hr,81\np1,2020-10-25 03:30,hr,82\n"
    spring = "p2,2020-03-29 01:30,hr,70\np2,2020-03-29 02:30,hr,71\np2,2020-03-29 03:30,hr,72\n"
    dataset, summary = load_csv(tmp_path, night + spring, time_zone="Europe/Berlin")
    assert [dataset[0]["time"], dataset[1]["time"]] == [[0.0, 4.0], [0.0, 1.0]]
    assert summary.skipped_events == {REPEATED_HOUR: 1, SKIPPED_HOUR: 1}
    assert summary.examples[REPEATED_HOUR][0].endswith("events.csv:3")
    assert summary.examples[SKIPPED_HOUR][0].endswith("events.csv:6")
    as_utc, _ = load_csv(tmp_path, night)
    assert as_utc[0]["time"] == [0.0, 2.0, 3.0]  # without the zone: read as UTC, an hour short


def test_a_time_zone_puts_anchors_on_utc_and_skips_a_patient_whose_anchor_no_clock_can_place(tmp_path):
    (tmp_path / "events.csv").write_text(HEADER + "p1,2020-10-25 04:00,hr,80\np2,2020-10-25 04:00,hr,81\n")
    labels = pd.DataFrame({"patient_id": ["p1", "p2"], "admitted": ["2020-10-25 00:00", "2020-10-25 02:15"]})
    typed = labels.assign(admitted=pd.to_datetime(labels["admitted"]))  # as a Parquet timestamp column holds them
    for anchors in (labels, typed):
        dataset, summary = load_long_format(tmp_path / "events.csv", labels=anchors, anchor_column="admitted",
                                            time_zone="Europe/Berlin", return_summary=True)
        assert dataset["patient_id"] == ["p1"] and dataset[0]["time"] == [5.0]  # 22:00 to 03:00 UTC
        assert summary.skipped_patients == {f"anchor is a {REPEATED_HOUR}": 1}  # counted once, under its reason
        assert summary.skipped_events == {"patient has no anchor time": 1}
    with pytest.raises(ValueError, match=r"anchor column 'admitted': times are numbers of hours, but time_zone"):
        load_long_format(tmp_path / "events.csv", labels=labels.assign(admitted=[0.0, 1.0]), anchor_column="admitted",
                         time_zone="Europe/Berlin")


@pytest.mark.parametrize(
    "body, time_zone, message",
    [
        ("p1,2020-01-01T09:00+01:00,hr,80\n", "Europe/Berlin",
         r"events.csv:2: time '2020-01-01T09:00\+01:00' has a UTC offset, but time_zone 'Europe/Berlin' is for times "
         "written without one"),
        ("p1,5,hr,80\n", "Europe/Berlin", r"events.csv: times are numbers of hours, but time_zone 'Europe/Berlin'"),
        ("p1,2020-01-01 09:00,hr,80\n", "Europe/Berln", r"time_zone 'Europe/Berln' is no IANA time zone"),
    ],
)
def test_a_time_zone_that_cannot_apply_is_refused(tmp_path, body, time_zone, message):
    with pytest.raises(ValueError, match=message):
        load_csv(tmp_path, body, time_zone=time_zone)


def test_times_with_and_without_offsets_are_refused_across_tables_and_anchors(tmp_path):
    """A time without an offset is read as UTC: beside one with +01:00 in another table, or an anchor with one, it
    would be an hour off, silently."""
    (tmp_path / "a.csv").write_text(HEADER + "p1,2020-01-01T09:00+01:00,hr,80\n")
    (tmp_path / "b.csv").write_text(HEADER + "p1,2020-01-01 10:00,hr,81\n")
    with pytest.raises(ValueError, match=r"b.csv:2: time '2020-01-01 10:00' has no UTC offset, but .*a.csv:2 .* one"):
        load_long_format([tmp_path / "a.csv", tmp_path / "b.csv"])
    labels = pd.DataFrame({"patient_id": ["p1"], "admitted": ["2020-01-01T08:00+01:00"]})
    with pytest.raises(ValueError, match=r"has no UTC offset, but patient 'p1' \(anchor column 'admitted'\)"):
        load_long_format(tmp_path / "b.csv", labels=labels, anchor_column="admitted")
    aware = pd.DataFrame({"patient_id": ["p1"], "admitted": pd.to_datetime(["2020-01-01 08:00"]).tz_localize("UTC")})
    dataset = load_long_format(tmp_path / "a.csv", labels=aware, anchor_column="admitted")
    assert dataset[0]["time"] == [0.0]  # a timestamp-typed anchor (as Parquet stores one) is a time, not a number


def test_tables_in_hours_and_in_timestamps_are_refused_and_a_blank_numeric_anchor_is_counted(tmp_path):
    (tmp_path / "hours.csv").write_text(HEADER + "p1,5,hr,80\n")
    (tmp_path / "stamps.csv").write_text(HEADER + "p1,2020-01-01 10:00,hr,81\n")
    with pytest.raises(ValueError, match=r"hours.csv gives its times as numbers of hours and .*stamps.csv as "
                                         r"timestamps"):
        load_long_format([tmp_path / "hours.csv", tmp_path / "stamps.csv"])
    events = pd.DataFrame({"patient_id": ["p1", "p2"], "time": [5.0, 6.0], "feature": ["hr"] * 2, "value": [80.0] * 2})
    labels = pd.DataFrame({"patient_id": ["p1", "p2"], "admitted": [1.0, None]})
    dataset, summary = load_long_format(events, labels=labels, anchor_column="admitted", return_summary=True)
    assert dataset["patient_id"] == ["p1"] and dataset[0]["time"] == [4.0]
    assert summary.skipped_events == {"patient has no anchor time": 1}


def test_postgres_short_offsets_are_offsets(tmp_path):
    """PostgreSQL writes timestamptz as 2020-04-03 10:00:00+02; a date's own -05 is no offset."""
    dataset, _ = load_csv(tmp_path, "p1,2020-04-03 10:00:00+02,hr,80\np1,2020-04-03 10:00:00+01,hr,81\n")
    assert dataset[0]["time"] == [0.0, 1.0]
    dataset, _ = load_csv(tmp_path, "p1,2020-04-03,hr,80\np1,2020-04-05,hr,81\n")
    assert dataset[0]["time"] == [0.0, 48.0]


def anchored(tmp_path, times: str, anchor: str):
    events = tmp_path / "events.csv"
    events.write_text(HEADER + times)
    labels = pd.DataFrame({"patient_id": ["p1"], "admitted": [anchor]})
    return load_long_format(events, labels=labels, anchor_column="admitted")


def test_hours_with_a_timestamp_anchor_are_an_error_not_a_lost_table(tmp_path):
    with pytest.raises(ValueError, match="times are numbers of hours, but the anchor column holds timestamps"):
        anchored(tmp_path, "p1,1.0,hr,80\n", "2020-04-03 08:00")


def test_an_unparseable_anchor_names_its_patient(tmp_path):
    with pytest.raises(
        ValueError, match=r"anchor column 'admitted': patient 'p1' has anchor 'yesterday', which is no time"
    ):
        anchored(tmp_path, "p1,2020-04-03 10:00,hr,80\n", "yesterday")


UNIT_HEADER = "patient_id,time,feature,value,unit\n"
TEMPERATURES = "p1,1.0,temperature,98.6,°F\np1,2.0,temperature,37.5,°C\np2,1.0,temperature,36.0,°C\n"


def test_a_feature_in_two_units_is_an_error_naming_both_and_their_rows(tmp_path):
    conflict = r"feature 'temperature' is recorded in '°C' \(2 rows\), '°F' \(1 rows\)"
    with pytest.raises(ValueError, match=conflict) as error:
        load_csv(tmp_path, TEMPERATURES, header=UNIT_HEADER, columns={"unit": "unit"})
    assert "feature_map" not in str(error.value)  # a clinical feature's name: nothing to map


def test_a_raw_item_id_in_two_units_points_to_the_feature_map_first(tmp_path):
    """An export read without --feature_map: its first unit conflict is often an item no model knows anyway."""
    with pytest.raises(ValueError, match=r"'51274' is no clinical feature name: .* \(feature_map, --feature_map\)"):
        load_csv(tmp_path, "p1,1.0,51274,12,SEC\np1,2.0,51274,13,SECONDS\n", header=UNIT_HEADER)


def test_a_declared_conversion_brings_every_row_into_one_unit(tmp_path):
    dataset, summary = load_csv(
        tmp_path,
        TEMPERATURES,
        header=UNIT_HEADER,
        columns={"unit": "unit"},
        unit_conversions={"temperature": {"°F": (5 / 9, -160 / 9)}},
    )
    assert dataset[0]["value"] == pytest.approx([37.0, 37.5]) and summary.units == {"temperature": "°C"}


def test_a_row_without_a_unit_is_its_features_unit_unless_other_rows_are_converted(tmp_path):
    """Beside °F rows converted into °C, a bare 99.5 could be either: refused, never kept as 99.5 °C."""
    kwargs = dict(header=UNIT_HEADER, columns={"unit": "unit"})
    dataset, _ = load_csv(tmp_path, "p1,1.0,temperature,37.5,°C\np1,2.0,temperature,36.6,\n", **kwargs)
    assert dataset[0]["value"] == [37.5, 36.6]
    with pytest.raises(ValueError, match=r"feature 'temperature': 1 rows have no unit, while rows in '°F' are "
                                         r"converted into '°C'"):
        load_csv(tmp_path, TEMPERATURES + "p2,2.0,temperature,99.5,\n", **kwargs,
                 unit_conversions={"temperature": {"°F": (5 / 9, -160 / 9)}})


def test_a_null_unit_in_parquet_is_no_unit_as_a_blank_one_in_a_csv(tmp_path):
    events = pd.DataFrame({"patient_id": ["a", "a", "b"], "time": [1.0, 2.0, 1.0], "feature": ["creatinine"] * 3,
                           "value": [1.0, 2.0, 3.0], "unit": ["mg/dL", None, None]})
    events.to_parquet(tmp_path / "events.parquet")
    events.to_csv(tmp_path / "events.csv", index=False)
    for table in ("events.parquet", "events.csv"):
        dataset, summary = load_long_format(str(tmp_path / table), return_summary=True)
        assert dataset["value"] == [[1.0, 2.0], [3.0]] and summary.units == {"creatinine": "mg/dL"}
        # read in the unit the other row gives, and counted: a model's unit cannot be checked on them
        assert summary.events_without_unit == {"creatinine": 2}
        assert summary.notes["events without a unit, read in the unit their feature's other events give"] == 2


def test_a_conversion_into_a_named_unit_needs_every_other_unit_declared(tmp_path):
    """`into` names the unit rows end in, which the table need not hold: a checkpoint's (base excess in mEq/L is
    mmol/L, but only a declaration may say so)."""
    body = "p1,1.0,base_excess,-2,MEQ/L\np2,1.0,base_excess,1,MEQ/L\np2,2.0,base_excess,0.5,mmol/L\n"
    dataset, summary = load_csv(tmp_path, body, header=UNIT_HEADER, columns={"unit": "unit"},
                                unit_conversions={"base_excess": {"MEQ/L": 1.0, "into": "mmol/L"}})
    assert summary.units == {"base_excess": "mmol/L"} and dataset[1]["value"] == pytest.approx([1.0, 0.5])
    with pytest.raises(ValueError, match=r"declare how to convert into 'mmol/L'"):
        load_csv(tmp_path, body + "p2,3.0,base_excess,1,mEq/dL\n", header=UNIT_HEADER, columns={"unit": "unit"},
                 unit_conversions={"base_excess": {"MEQ/L": 1.0, "into": "mmol/L"}})


def test_declarations_and_into_match_a_feed_that_writes_units_in_capitals(tmp_path):
    """MIMIC-III and HL7 v2 feeds write `MMOL/L`; a conversion written against the checkpoint's `mmol/L` and `mEq/L`
    must still apply, not ask for a second declaration."""
    body = "p1,1.0,base_excess,-2,MEQ/L\np2,1.0,base_excess,0.5,MMOL/L\n"
    dataset, summary = load_csv(tmp_path, body, header=UNIT_HEADER, columns={"unit": "unit"},
                                unit_conversions={"base_excess": {"mEq/L": 2.0, "into": "mmol/L"}})
    assert summary.units == {"base_excess": "mmol/L"}
    assert dataset[0]["value"] == pytest.approx([-4.0]) and dataset[1]["value"] == pytest.approx([0.5])


def test_units_that_differ_only_in_spelling_are_one_unit(tmp_path):
    _, summary = load_csv(
        tmp_path,
        "p1,1.0,creatinine,1.1,mg/dL\np1,2.0,creatinine,1.2,mg/dl\np1,3.0,creatinine,1.0, mg/dL\n"
        "p1,4.0,creatinine,0.9,MG/DL\n",  # a feed in capitals has lost the case: one unit, as checkpoints compare them
        header=UNIT_HEADER,
        columns={"unit": "unit"},
    )
    assert summary.units == {"creatinine": "mg/dL"}


def test_an_item_recorded_in_two_lab_units_is_refused(tmp_path):
    body = "p1,1.0,urobilinogen,0.2,EU/dL\np1,2.0,urobilinogen,1.0,mg/dL\n"
    with pytest.raises(ValueError, match=r"'EU/dL' \(1 rows\), 'mg/dL' \(1 rows\)"):
        load_csv(tmp_path, body, header=UNIT_HEADER, columns={"unit": "unit"})


def test_a_table_left_empty_by_the_feature_map_is_no_error(tmp_path):
    """One of many per-patient tables may hold only items the map leaves out."""
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text(HEADER + "p1,2020-04-03 10:00,hr,80\n")
    second.write_text(HEADER + "p2,2020-04-03 10:00,unmapped,1\n")
    labels = pd.DataFrame({"patient_id": ["p1", "p2"], "admitted": ["2020-04-03 09:00", "2020-04-03 09:00"]})
    dataset = load_long_format(
        [first, second], labels=labels, anchor_column="admitted", feature_map={"hr": "heart_rate"}
    )
    assert dataset["patient_id"] == ["p1"] and dataset[0]["time"] == [1.0]


@pytest.mark.parametrize(
    "variant", ["SODIUM", "Sodium", "sodium\u200b", "ѕodium", "sοdium".replace("ο", "о"), "ｓｏｄｉｕｍ"]
)
def test_a_variant_spelling_of_a_known_feature_is_read_as_it_and_counted(tmp_path, variant):
    dataset, summary = load_csv(tmp_path, f'p1,1.0,sodium,140\np1,2.0,"{variant}",141\n')
    assert dataset[0]["feature"] == ["sodium", "sodium"]
    assert summary.notes[f"feature {variant!r} read as 'sodium'"] == 1


def test_variants_of_a_name_the_catalogue_lacks_follow_its_first_spelling(tmp_path):
    dataset, _ = load_csv(tmp_path, "p1,1.0,Ward_Score,3\np1,2.0,WARD_SCORE,4\n")
    assert dataset[0]["feature"] == ["Ward_Score", "Ward_Score"]


def test_variant_spellings_can_be_refused(tmp_path):
    with pytest.raises(ValueError, match=r"events.csv:3: feature 'SODIUM' differs from 'sodium' only in case"):
        load_csv(tmp_path, "p1,1.0,sodium,140\np1,2.0,SODIUM,141\n", name_variants="refuse")


def test_a_feature_map_key_is_matched_up_to_case(tmp_path):
    dataset, summary = load_csv(tmp_path, "p1,1.0,Na,140\np1,2.0,NA,141\n", feature_map={"Na": "sodium"})
    assert dataset[0]["feature"] == ["sodium", "sodium"] and summary.skipped_events == {}


@pytest.mark.parametrize("feature_map, message", [
    ({"pH": "ph", "PH": "phosphate"}, "maps 'pH' to 'ph' and 'PH' to 'phosphate', but feature names are read"),
    ({"220045": "heart_rate", "220046": " "}, "maps '220046' to an empty name"),
    ({"pH": "ph", "PH": "PH"}, "maps to 'ph' and to 'PH', one name spelled two ways"),
])
def test_a_feature_map_that_could_not_be_followed_is_refused(tmp_path, feature_map, message):
    """Matched up to case, pH and PH are one key: pH 7.4 was read as phosphate."""
    with pytest.raises(ValueError, match=message):
        load_csv(tmp_path, "p1,1.0,pH,7.4\np1,2.0,PH,3.5\n", feature_map=feature_map)
    dataset, _ = load_csv(tmp_path, "p1,1.0,pH,7.4\np1,2.0,PH,7.3\n", feature_map={"pH": "ph", "PH": "ph"})
    assert dataset[0]["feature"] == ["ph", "ph"]


def test_spreadsheet_serial_dates_are_not_taken_for_hours(tmp_path):
    with pytest.raises(ValueError, match="look like spreadsheet serial dates"):
        load_csv(tmp_path, "p1,45292.375,hr,80\np1,45292.5,hr,81\n")  # 2024-01-01 09:00 and 12:00 in Excel
    dataset, _ = load_csv(tmp_path, "p1,0.5,hr,80\np1,3.0,hr,81\n")  # hours since admission still are hours
    assert dataset[0]["time"] == [0.5, 3.0]


def test_a_patient_in_spreadsheet_serial_dates_among_patients_in_hours_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"events.csv:4: patient 'p2' \(and 0 other\(s\)\): every time lies between "
                                         r"45,292.38 and 45,292.50: these look like spreadsheet serial dates"):
        load_csv(tmp_path, "p1,0.5,hr,80\np1,3.0,hr,81\np2,45292.375,hr,80\np2,45292.5,hr,81\n")


@pytest.mark.parametrize("where", ["events", "labels", "p12 record", "p12 outcomes"])
def test_a_file_that_is_not_utf8_is_an_error_naming_file_and_line(tmp_path, where):
    latin1 = "p1,1.0,temp °C,37\n".encode("latin-1")  # a Latin-1 export: '°' is the single byte 0xB0
    if where.startswith("p12"):
        write_p12(tmp_path, RECORD)
        if where == "p12 record":
            (tmp_path / "set-a" / "132539.txt").write_bytes(RECORD.encode() + "00:09,Temp °C,37\n".encode("latin-1"))
        else:
            (tmp_path / "Outcomes-a.txt").write_bytes((tmp_path / "Outcomes-a.txt").read_bytes() + b"\xb0\n")
        name, line = ("set-a/132539.txt", 5) if where == "p12 record" else ("Outcomes-a.txt", 3)
        with pytest.raises(ValueError, match=rf"{name}, line {line}: byte 0xB0 is not UTF-8"):
            load_physionet2012(tmp_path)
        return
    events, labels = tmp_path / "events.csv", tmp_path / "labels.csv"
    events.write_bytes(HEADER.encode() + (latin1 if where == "events" else b"p1,1.0,hr,80\n"))
    labels.write_bytes(b"patient_id,died\np1,0\n" + ("p2 °,1\n".encode("latin-1") if where == "labels" else b""))
    name, line = ("events.csv", 2) if where == "events" else ("labels.csv", 3)
    with pytest.raises(ValueError, match=rf"{name}, line {line}: byte 0xB0 is not UTF-8: .* iconv"):
        load_long_format(events, labels=labels, label_column="died")


def test_a_column_called_unit_is_read_without_being_mapped(tmp_path):
    body = "p1,1.0,temperature,98.6,°F\np1,2.0,temperature,37.0,°C\n"
    with pytest.raises(ValueError, match=r"feature 'temperature' is recorded in '°C' \(1 rows\), '°F' \(1 rows\)"):
        load_csv(tmp_path, body, header="patient_id,time,feature,value,unit\n")
    dataset, summary = load_csv(tmp_path, body, header="patient_id,time,feature,value,unit\n",
                                unit_conversions={"temperature": {"°F": (5 / 9, -160 / 9)}})
    assert dataset[0]["value"] == pytest.approx([37.0, 37.0]) and summary.units == {"temperature": "°C"}


def test_columns_left_unread_are_reported_in_the_summary(tmp_path):
    _, summary = load_csv(tmp_path, "p1,1.0,hr,80,ward 3,ok\n",
                          header="patient_id,time,feature,value,location,status\n")
    assert summary.notes == {"columns not read: ['location', 'status'] (name them in columns=... if they matter)": 1}
    assert "columns not read" in str(summary)


@pytest.mark.parametrize("name", ['"sod\nium"', "sod\tium", "sodium\x00"])
def test_a_control_character_inside_a_feature_name_is_an_error_naming_the_line(tmp_path, name):
    with pytest.raises(ValueError, match=r"events.csv:3: feature .* holds the control character"):
        load_csv(tmp_path, f"p1,1.0,sodium,140\np1,2.0,{name},141\n")


@pytest.mark.parametrize("flag, name, content, message", [
    ("--feature_map", "absent.csv", None, "absent.csv: cannot be read (No such file or directory)"),
    ("--feature_map", "latin1.csv", "source,feature\nNa\xef,sodium\n".encode("latin-1"), "not UTF-8 text"),
    ("--feature_map", "twice.csv", "source,feature\n220045,heart_rate\n220045,pulse\n", "'220045' is mapped twice"),
    ("--unit_conversions", "absent.json", None, "absent.json: cannot be read (No such file or directory)"),
    ("--unit_conversions", "broken.json", '{"temperature": {"°F": [0.5556, -17.7778]}', "not JSON (Expecting"),
    ("--unit_conversions", "list.json", '[["temperature", "°F", 0.5556]]', "give an object of feature -> {unit"),
    ("--unit_conversions", "flat.json", '{"temperature": 0.5556}', "give an object of feature -> {unit"),
    ("--labels", "all_stay.csv", None, "all_stay.csv: no such file"),
    ("--events", "*/event.csv", None, "*/event.csv: no file matches this pattern"),  # a quoted glob, as YAML gives it
])
def test_a_flag_file_that_cannot_be_read_is_refused_with_the_flags_naming_it(tmp_path, capsys, flag, name, content,
                                                                              message):
    """Read when the flags are parsed, before any data: a usage error naming the file, never a traceback from
    pandas or json."""
    from conftest import load_script

    path = tmp_path / name
    if content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    (export := tmp_path / "export.csv").write_text(HEADER + "p1,1.0,sodium,140\n")
    recipe = load_script("recipes/make_pretraining_corpus.py")
    with pytest.raises(SystemExit) as stopped:
        recipe.main(["--dataset", "long-format", "--events", str(export), "--data_description", "x", flag,
                     str(path), "--output_dir", str(tmp_path / "corpus")])
    assert stopped.value.code == 2 and f"{flag}: {path}" in (error := capsys.readouterr().err) and message in error
