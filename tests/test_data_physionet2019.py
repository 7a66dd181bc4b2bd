import zipfile

import pytest

from medfuse_hf.data import load_physionet2019

COLUMNS = ["HR", "O2Sat", "Temp", "Magnesium", "Age", "Gender", "Unit1", "Unit2", "HospAdmTime", "ICULOS",
           "SepsisLabel"]


def psv(rows):
    return "|".join(COLUMNS) + "\n" + "".join("|".join(row) + "\n" for row in rows)


PATIENT_A = psv([
    ["NaN", "NaN", "NaN", "NaN", "65", "1", "1", "0", "-3.5", "1", "0"],
    ["80", "97", "NaN", "2.1", "65", "1", "1", "0", "-3.5", "2", "0"],
    ["85", "NaN", "37.9", "NaN", "65", "1", "1", "0", "-3.5", "3", "1"],
    ["85", "NaN", "37.9", "NaN", "65", "1", "1", "0", "-3.5", "3", "1"],  # line 5: duplicated hour
    ["90", "NaN", "NaN", "NaN", "65", "1", "1", "0", "-3.5", "4", "1"],
])
PATIENT_B = psv([
    ["70", "99", "NaN", "NaN", "40", "0", "NaN", "NaN", "0", "1", "0"],
    ["72", "NaN", "NaN"],  # line 3: malformed
    ["74", "98", "NaN", "NaN", "40", "0", "NaN", "NaN", "0", "3", "0"],
])


@pytest.fixture
def release(tmp_path):
    with zipfile.ZipFile(tmp_path / "training_setA.zip", "w") as archive:
        archive.writestr("training_setA/p000001.psv", PATIENT_A)
    (tmp_path / "training_setB").mkdir()
    (tmp_path / "training_setB" / "p100001.psv").write_text(PATIENT_B)
    return tmp_path


def test_observed_cells_become_events_with_shared_names(release):
    dataset = load_physionet2019(release)
    a = dataset[0]
    assert (a["patient_id"], a["hospital"], a["sepsis"], a["sepsis_onset_hour"]) == ("p000001", "A", 1, 3.0)
    events = sorted(zip(a["time"], a["feature"], a["value"]))
    assert events == sorted([
        (1.0, "age", 65.0), (1.0, "gender", 1.0), (1.0, "icu_type", 3.0),
        (2.0, "heart_rate", 80.0), (2.0, "spo2", 97.0), (2.0, "magnesium", 2.1),
        (3.0, "heart_rate", 85.0), (3.0, "temperature", 37.9), (4.0, "heart_rate", 90.0),
    ])
    assert a["hours"] == [1.0, 2.0, 3.0, 3.0, 4.0] and a["sepsis_label"] == [0, 0, 1, 1, 1]
    assert (a["age"], a["icu_type"], a["hospital_admission_hours"]) == (65.0, 3.0, -3.5)
    assert dataset[1]["hospital"] == "B" and dataset[1]["icu_type"] is None and dataset[1]["sepsis"] == 0


def test_skips_name_file_and_line(release):
    _, summary = load_physionet2019(release, return_summary=True)
    assert summary.skipped_events["duplicate hour"] == 2
    assert summary.examples["duplicate hour"] == ["training_setA.zip:training_setA/p000001.psv:5"]
    assert summary.skipped_events["malformed line"] == 1
    assert summary.examples["malformed line"] == ["training_setB/p100001.psv:3"]
    assert summary.events_kept + sum(summary.skipped_events.values()) == summary.events_read


def test_early_prediction_keeps_only_hours_before_the_cutoff(release):
    dataset = load_physionet2019(release, sets=["A"], observation_hours=3)
    assert max(dataset[0]["time"]) == 3 and dataset[0]["sepsis"] == 1  # ICULOS 1, 2, 3: the first 3 hours
    assert len(dataset) == 1


def test_unknown_columns_are_counted(tmp_path):
    (tmp_path / "training_setA").mkdir()
    (tmp_path / "training_setA" / "p1.psv").write_text("HR|Sodium_x|ICULOS|SepsisLabel\n80|140|1|0\n")
    dataset, summary = load_physionet2019(tmp_path, return_summary=True)
    assert dataset[0]["feature"] == ["heart_rate"]
    assert summary.skipped_events["unknown column 'Sodium_x'"] == 1


def test_corrupt_archive_is_an_error(tmp_path):
    (tmp_path / "training_setA.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="training_setA.zip: truncated or corrupt archive"):
        load_physionet2019(tmp_path)


def hourly(hours: int, first_septic_hour: int | None = None) -> str:
    """A stay with a heart rate every hour, labelled septic from `first_septic_hour` on."""
    return psv([["80", "NaN", "NaN", "NaN", "60", "0", "1", "0", "0", str(hour),
                 "1" if first_septic_hour is not None and hour >= first_septic_hour else "0"]
                for hour in range(1, hours + 1)])


def test_early_prediction_cohort_keeps_stays_past_the_window_not_yet_septic(tmp_path, monkeypatch):
    from medfuse_hf.training.cohorts import load_p19_task

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "release" / "training_setA"
    folder.mkdir(parents=True)
    stays = {"septic_after_window": hourly(6, first_septic_hour=4),
             "septic_at_last_hour": hourly(6, first_septic_hour=3),
             "septic_in_window": hourly(6, first_septic_hour=2), "left_at_last_hour": hourly(3),
             "left_in_window": hourly(2), "never_septic": hourly(6)}
    for name, text in stays.items():
        (folder / f"{name}.psv").write_text(text)
    early = load_p19_task(tmp_path / "release", "first-3h", "A")
    assert dict(zip(early["patient_id"], early["sepsis"])) == {"septic_after_window": 1, "never_septic": 0}
    assert max(max(times) for times in early["time"]) == 3  # ICU hours 1-3, nothing after
    whole = load_p19_task(tmp_path / "release", "whole-stay", "A")
    assert len(whole) == 6 and max(max(times) for times in whole["time"]) == 6
    with pytest.raises(ValueError, match="first-<hours>h"):
        load_p19_task(tmp_path / "release", "first-day", "A")
    with pytest.raises(ValueError, match="at least one hour"):
        load_p19_task(tmp_path / "release", "first-0h", "A")


def test_onset_is_the_earliest_labelled_hour_even_when_rows_are_out_of_order(tmp_path):
    rows = hourly(4, first_septic_hour=2).splitlines()
    (tmp_path / "training_setA").mkdir()
    (tmp_path / "training_setA" / "p1.psv").write_text("\n".join([rows[0], rows[3], rows[2], rows[1], rows[4]]) + "\n")
    assert load_physionet2019(tmp_path)[0]["sepsis_onset_hour"] == 2.0  # file order puts hour 3 first


@pytest.mark.parametrize("label", ["2", "0.5", "NaN"])
def test_an_hourly_label_other_than_0_or_1_names_file_and_line(tmp_path, label):
    (tmp_path / "training_setA").mkdir()
    rows = [["80", "97", "NaN", "NaN", "65", "1", "1", "0", "-3.5", "1", "0"],
            ["81", "97", "NaN", "NaN", "65", "1", "1", "0", "-3.5", "2", label]]
    (tmp_path / "training_setA" / "p000001.psv").write_text(psv(rows))
    with pytest.raises(ValueError,
                       match=rf"p000001.psv:3: SepsisLabel {label.lower()}; the hourly label must be 0 or 1"):
        load_physionet2019(tmp_path)


def test_a_row_without_its_hour_skips_its_patient_and_a_set_named_twice_is_read_once(tmp_path):
    """A missing ICULOS would put events at no known hour, past any cut-off."""
    (tmp_path / "training_setA").mkdir()
    rows = [["80", "97", "NaN", "NaN", "65", "1", "1", "0", "-3.5", "1", "0"],
            ["81", "97", "NaN", "NaN", "65", "1", "1", "0", "-3.5", "NaN", "0"]]
    (tmp_path / "training_setA" / "p000001.psv").write_text(psv(rows))
    (tmp_path / "training_setA" / "p000002.psv").write_text(psv(rows[:1]))
    cohort, summary = load_physionet2019(tmp_path, sets=["A", "a"], observation_hours=1, return_summary=True)
    assert cohort["patient_id"] == ["p000002"]
    assert summary.skipped_patients["an hour without ICULOS"] == 1 and "p000001.psv:3" in str(summary.examples)


def test_hospital_bs_top_coded_age_reads_as_the_others_do(tmp_path):
    """Set B writes "90 or older" as 100, set A and P12 as 90: one group, one value of the shared `age`."""
    (tmp_path / "training_setB").mkdir()
    (tmp_path / "training_setB" / "p100001.psv").write_text(
        psv([["80", "97", "NaN", "NaN", "100", "1", "1", "0", "-3.5", "1", "0"]]))
    patient = load_physionet2019(tmp_path)[0]
    assert patient["age"] == 90.0 and patient["value"][patient["feature"].index("age")] == 90.0


def test_blank_lines_infinite_cells_and_a_repeated_column_are_numbered_and_counted(tmp_path):
    (tmp_path / "training_setA").mkdir()
    rows = [["80", "97", "NaN", "NaN", "65", "1", "1", "0", "-3.5", "1", "0"],
            ["inf", "97", "NaN", "NaN", "65", "1", "1", "0", "-3.5", "2", "0"]]
    text = psv(rows).replace("\n", "\n\n", 2)  # a blank line after the header and after the first row
    (tmp_path / "training_setA" / "p000001.psv").write_text(text)
    (tmp_path / "training_setA" / "p000002.psv").write_text(psv(rows[:1]).replace("|Temp|", "|HR|", 1))
    cohort, summary = load_physionet2019(tmp_path, return_summary=True)
    assert cohort["patient_id"] == ["p000001"]
    assert summary.skipped_events["infinite value"] == 1 and "p000001.psv:5" in str(summary.examples)
    assert "malformed line" not in summary.skipped_events  # a blank line is no row
    assert summary.skipped_patients["header names 'HR' twice"] == 1
