import json
import logging
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoFeatureExtractor

from medfuse_hf import FeatureSpec, FeatureVocabulary, MedFuseTokenizer, ValueStatistics

BASE = Path(__file__).parents[1] / "model_cards" / "medfuse-base" / "model"
PATIENT = [("sodium", 150.0, 2.0), ("heart_rate", 90, 0.5), ("icu_type", "medical", 0.0), ("sodium", "141", 30.25)]


def assert_encodes_alike(reloaded, tokenizer, patients) -> None:
    assert isinstance(reloaded, MedFuseTokenizer)
    assert reloaded.feature_vocabulary == tokenizer.feature_vocabulary
    assert reloaded.max_events == tokenizer.max_events
    expected, actual = tokenizer(patients, return_tensors="np"), reloaded(patients, return_tensors="np")
    for key in tokenizer.model_input_names:
        np.testing.assert_array_equal(actual[key], expected[key])


def test_save_and_load_give_identical_encodings(tmp_path, tokenizer, cohort):
    tokenizer.save_pretrained(tmp_path)
    assert {path.name for path in tmp_path.iterdir()} == {  # settings with the vocabulary, and the code they need
        "preprocessor_config.json", "tokenization_medfuse.py", "event_encoding.py", "feature_vocabulary.py",
        "patient_inputs.py", "privacy.py", "timestamps.py"}  # not the transfer module
    settings = json.loads((tmp_path / "preprocessor_config.json").read_text())
    for reloaded in (MedFuseTokenizer.from_pretrained(tmp_path), AutoFeatureExtractor.from_pretrained(tmp_path),
                     AutoFeatureExtractor.from_pretrained(tmp_path, trust_remote_code=True),
                     MedFuseTokenizer.from_dict(settings)):  # what transformers >= 5.25 builds it with
        assert_encodes_alike(reloaded, tokenizer, cohort[:8])


def test_a_checkpoint_in_the_two_file_layout_of_medfuse_hf_0_1_still_loads(tmp_path, tokenizer, cohort):
    settings = tokenizer.to_dict()
    del settings["feature_vocabulary"]
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(settings))
    tokenizer.feature_vocabulary.save(tmp_path / "feature_vocabulary.json")
    assert_encodes_alike(MedFuseTokenizer.from_pretrained(tmp_path), tokenizer, cohort[:8])
    # transformers' Auto class reads preprocessor_config.json alone: it cannot find that vocabulary, and says how to
    with pytest.raises(ValueError, match="MedFuseTokenizer.from_pretrained reads: load it that way once and save"):
        AutoFeatureExtractor.from_pretrained(tmp_path)


@pytest.mark.skipif(not BASE.exists(), reason="the committed medfuse-base release is not in this checkout")
def test_the_committed_base_tokenizer_loads_through_every_path_alike():
    settings = json.loads((BASE / "preprocessor_config.json").read_text())
    reference = MedFuseTokenizer.from_pretrained(BASE)
    patient = [("sodium", 131.0, 2.0), ("heart_rate", 112, 0.5), ("lactate", 4.1, 3.0), ("icu_type", 2, 0.0)]
    for reloaded in (AutoFeatureExtractor.from_pretrained(BASE), MedFuseTokenizer.from_dict(settings)):
        assert_encodes_alike(reloaded, reference, [patient])
    assert len(list(reference.feature_vocabulary)) == 54  # the 54 features of its card


def test_from_pretrained_accepts_setting_overrides(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path)
    assert MedFuseTokenizer.from_pretrained(tmp_path, max_events=7).max_events == 7
    # transformers applies an override only to a setting the file holds: every setting is written, even unset
    window = {"anchor_column": "intime", "max_hours": 24}
    assert MedFuseTokenizer.from_pretrained(tmp_path, event_window=window).event_window == window
    assert not MedFuseTokenizer.from_pretrained(tmp_path, return_attention_mask=False).return_attention_mask
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    for newer in ("event_window", "return_attention_mask"):  # a file saved before these were written
        del saved[newer]
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(saved))
    assert MedFuseTokenizer.from_pretrained(tmp_path, event_window=window).event_window == window


def test_a_tokenizer_without_attention_masks_saves_and_loads_as_one(tmp_path, vocabulary):
    MedFuseTokenizer(vocabulary, return_attention_mask=False).save_pretrained(tmp_path)
    assert "attention_mask" not in MedFuseTokenizer.from_pretrained(tmp_path)([("sodium", 140, 0.0)])


def test_a_vocabulary_grown_in_place_encodes_its_new_feature(vocabulary):
    grown = FeatureVocabulary.from_dict(vocabulary.to_dict())
    tokenizer = MedFuseTokenizer(grown)
    grown.add(FeatureSpec(name="lactate", statistics=ValueStatistics.fit(np.array([1.0, 2.0, 3.0]), 3)))
    assert tokenizer([("lactate", 2.0, 0.0)])["feature_ids"] == [len(vocabulary)]


def test_left_padding_is_saved_and_pads_on_the_left(tmp_path, vocabulary):
    MedFuseTokenizer(vocabulary, padding_side="left").save_pretrained(tmp_path)
    reloaded = MedFuseTokenizer.from_pretrained(tmp_path)
    assert reloaded.padding_side == "left"
    batch = reloaded([PATIENT, PATIENT[:1]], return_tensors="np")
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 0, 0, 1]]
    assert batch["times"][1].tolist() == [0.0, 0.0, 0.0, 2.0]  # PATIENT[:1] is one sodium at 2 h


def test_encodes_values_times_and_categories(tokenizer, vocabulary):
    encoded = tokenizer(PATIENT)
    sodium = vocabulary.spec_of("sodium").statistics
    assert encoded["times"] == [0.0, 0.5, 2.0, 30.25]  # sorted by time
    assert encoded["feature_ids"] == [vocabulary.id_of(n) for n in ("icu_type", "heart_rate", "sodium", "sodium")]
    assert encoded["values"][0] == 1 + 2  # global category id of the third level ("medical")
    assert encoded["values"][2] == pytest.approx((150.0 - sodium.mean) / sodium.std, rel=1e-5)
    assert encoded["attention_mask"] == [1, 1, 1, 1]


def test_all_input_forms_encode_alike(tokenizer):
    as_tuples = tokenizer(PATIENT, return_tensors="np")
    columns = {"feature": [e[0] for e in PATIENT], "value": [e[1] for e in PATIENT], "time": [e[2] for e in PATIENT]}
    frame = pd.DataFrame(columns)
    for other in (tokenizer(columns, return_tensors="np"), tokenizer(frame, return_tensors="np")):
        for key in tokenizer.model_input_names:
            np.testing.assert_array_equal(other[key], as_tuples[key])


def test_batches_from_lists_columns_and_grouped_frames_agree(tokenizer, cohort):
    patients = cohort[:3]
    from_list = tokenizer(patients, return_tensors="np")
    columnar = {key: [patient[key] for patient in patients] for key in ("record_id", "feature", "value", "time")}
    frame = pd.DataFrame(
        [(p["record_id"], f, v, t) for p in patients for f, v, t in zip(p["feature"], p["value"], p["time"])],
        columns=["record_id", "feature", "value", "time"],
    )
    dataset = datasets.Dataset.from_list(patients)
    for other in (
        tokenizer(columnar, return_tensors="np"),
        tokenizer(frame, patient_column="record_id", return_tensors="np"),
        tokenizer(dataset, return_tensors="np"),
    ):
        for key in tokenizer.model_input_names:
            np.testing.assert_array_equal(other[key], from_list[key])


def test_timestamps_become_hours_since_first_event_or_anchor(tokenizer):
    events = [("sodium", 140, "2130-01-01 08:00"), ("sodium", 141, "2130-01-01 09:30"),
              ("sodium", 139, "2130-01-02 08:00")]
    assert tokenizer(events)["times"] == [0.0, 1.5, 24.0]
    assert tokenizer(events, anchor_times="2130-01-01 06:00")["times"] == [2.0, 3.5, 26.0]
    later = [("sodium", 140, "2130-01-05 08:00")]
    for anchors in (["2130-01-01 06:00", "2130-01-05 07:00"], np.array(["2130-01-01 06:00", "2130-01-05 07:00"]),
                    pd.Series(["2130-01-01 06:00", "2130-01-05 07:00"])):  # one per patient, however held
        assert tokenizer([events, later], anchor_times=anchors)["times"][1][0] == 1.0


def test_numpy_and_pandas_durations_and_dates_are_read_by_their_unit_not_their_count(tokenizer):
    """numpy casts a timedelta64 or datetime64 to a count of its unit: seconds or days would pass as hours."""
    hours = [0.0, 1.5, 24.0]
    as_seconds = np.array([0, 5_400, 86_400], dtype="timedelta64[s]")
    for times in (as_seconds, as_seconds.astype("timedelta64[ns]"), pd.to_timedelta(hours, unit="h").to_pytimedelta(),
                  pd.to_timedelta(hours, unit="h")):
        patient = {"feature": ["sodium"] * 3, "value": [140, 141, 139], "time": list(times)}
        assert tokenizer(patient)["times"] == hours
    assert tokenizer({"feature": ["sodium"], "value": [140], "time": [np.timedelta64(3, "h")]},
                     anchor_times=pd.Timedelta(hours=1))["times"] == [2.0]
    days = {"feature": ["sodium"] * 2, "value": [140, 141], "time": list(np.array(["2130-01-01", "2130-01-02"],
                                                                                  dtype="datetime64[D]"))}
    assert tokenizer(days)["times"] == [0.0, 24.0]
    with pytest.raises(ValueError, match=r"patient 0, row 1: time 2.0 is no duration like the others"):
        tokenizer([("sodium", 140, np.timedelta64(1, "h")), ("sodium", 141, 2.0)])


def test_a_time_zone_keeps_hours_true_across_daylight_saving(tokenizer):
    """New York's clocks went back at 02:00 on 1 November 2020: 00:30 to 02:30 local is 3 hours, not 2."""
    night = [("sodium", 140, "2020-11-01 00:30"), ("sodium", 141, "2020-11-01 02:30")]
    assert tokenizer(night)["times"] == [0.0, 2.0]  # without a zone: UTC
    assert tokenizer(night, time_zone="America/New_York")["times"] == [0.0, 3.0]
    assert tokenizer(night, time_zone="America/New_York", anchor_times="2020-10-31 23:30")["times"] == [1.0, 4.0]
    with pytest.raises(ValueError, match=r"patient 0, row 1: time '2020-11-01 01:30' is a local time in the hour "
                                         r"repeated when clocks went back .* in America/New_York"):
        tokenizer(night[:1] + [("sodium", 141, "2020-11-01 01:30")], time_zone="America/New_York")
    with pytest.raises(ValueError, match=r"row 0: time '2020-11-01T00:30\+01:00' has a UTC offset, but time_zone"):
        tokenizer([("sodium", 140, "2020-11-01T00:30+01:00")], time_zone="America/New_York")
    with pytest.raises(ValueError, match="time_zone 'Mars/Olympus' is no IANA time zone"):
        tokenizer(night, time_zone="Mars/Olympus")
    with pytest.raises(ValueError, match=r"patient 0: times are numbers of hours, but time_zone 'America/New_York'"):
        tokenizer([("sodium", 140, 1.0)], time_zone="America/New_York")


def test_an_anchor_with_a_utc_offset_beside_times_without_one_is_refused(tokenizer):
    """Times without an offset may be local clock times: beside an anchor at an exact instant they would be read an
    offset away from it, silently; the loader refuses the same mix."""
    naive = [("sodium", 140, "2020-11-01 00:30")]
    with pytest.raises(ValueError, match=r"patient 0 \(anchor\): time '2020-11-01 00:00:00\+00:00' has a UTC offset, "
                                         r"but patient 0, row 0 .* has none"):
        tokenizer(naive, anchor_times=pd.Timestamp("2020-11-01 00:00", tz="UTC"))
    assert tokenizer(naive, anchor_times=pd.Timestamp("2020-11-01 00:00"))["times"] == [0.5]


def test_padding_masks_and_pads_with_zeros(tokenizer):
    batch = tokenizer([PATIENT, PATIENT[:1]], padding="max_length", max_length=6, return_tensors="pt")
    assert batch["feature_ids"].shape == (2, 6)
    assert batch["feature_ids"].dtype == torch.long and batch["values"].dtype == torch.float32
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0]]
    assert batch["feature_ids"][1, 1:].eq(0).all()
    assert tokenizer([PATIENT, PATIENT[:1]], pad_to_multiple_of=8, return_tensors="pt")["feature_ids"].shape == (2, 8)


def test_truncation_keeps_the_most_recent_events(vocabulary):
    tokenizer = MedFuseTokenizer(vocabulary, max_events=3)
    events = [("heart_rate", 80 + hour, float(hour)) for hour in range(10)]
    encoded = tokenizer(list(reversed(events)))
    assert encoded["times"] == [7.0, 8.0, 9.0]
    assert tokenizer(events, max_length=2)["times"] == [8.0, 9.0]


def test_a_cut_keeps_each_pinned_features_earliest_event_on_every_path(vocabulary, tmp_path):
    """A static descriptor charted at admission is a long stay's oldest event, the first a cut to the most recent
    events would lose; pinned, it stays, the most recent others fill the rest, and the order stays by time."""
    stay = [("icu_type", "medical", 0.0), ("icu_type", "surgical", 0.5),
            *(("heart_rate", 80 + hour, float(hour)) for hour in range(1, 11))]
    plain, pinned = (MedFuseTokenizer(vocabulary, max_events=4, pinned_features=names) for names in ([], ["icu_type"]))
    assert plain(stay)["times"] == [7.0, 8.0, 9.0, 10.0]
    assert pinned(stay)["times"] == [0.0, 8.0, 9.0, 10.0]  # the earliest ICU type: what statics read
    assert pinned(stay, max_length=2)["times"] == [0.0, 10.0]
    rows = [dict(MedFuseTokenizer(vocabulary, max_events=64, pinned_features=["icu_type"])(stay, padding=False))]
    assert pinned.pad(rows, padding="max_length", max_length=3, return_tensors="np")["times"].tolist() == [
        [0.0, 9.0, 10.0]]
    assert pinned(stay[2:])["times"] == [7.0, 8.0, 9.0, 10.0]  # a stay without it: nothing to keep
    pinned.save_pretrained(tmp_path)
    assert MedFuseTokenizer.from_pretrained(tmp_path).pinned_features == ["icu_type"]
    with pytest.raises(ValueError, match=r"pinned_features \['age'\] are not in the feature vocabulary"):
        MedFuseTokenizer(vocabulary, pinned_features=["age"])


def test_unknown_feature_error_lists_every_unknown_name(vocabulary):
    events = [("sodium", 140, 0.0), ("Lactate_x", 2.0, 1.0), ("EtCO2", 30, 2.0), ("Lactate_x", 2.5, 3.0)]
    with pytest.raises(ValueError,
                       match=r"2 unknown feature\(s\).*'Lactate_x' \(first at row 1\), 'EtCO2' \(first at row 2\)"):
        MedFuseTokenizer(vocabulary)(events)


def test_unknown_feature_as_unk_keeps_the_event_with_value_zero(vocabulary):
    encoded = MedFuseTokenizer(vocabulary, unknown_features="unk")([("sodium", 140, 0.0), ("Lactate_x", 2.0, 1.0)])
    assert encoded["feature_ids"][1] == 1
    assert encoded["values"][1] == 0.0


def test_unknown_feature_drop_is_logged_with_counts(vocabulary, caplog):
    with caplog.at_level(logging.WARNING):
        encoded = MedFuseTokenizer(vocabulary, unknown_features="drop")(
            [("sodium", 140, 0.0), ("Lactate_x", 2.0, 1.0)])
    assert encoded["feature_ids"] == [vocabulary.id_of("sodium")]
    assert "dropped its 1 events of unknown features ['Lactate_x']" in caplog.text


def test_each_unknown_feature_is_reported_once_not_per_patient(vocabulary, caplog):
    tokenizer = MedFuseTokenizer(vocabulary, unknown_features="drop")
    patients = ([[("sodium", 140, 0.0), ("Lactate_x", 2.0, 1.0)]] * 3
                + [[("sodium", 140, 0.0), ("Troponin_x", 0.1, 1.0)]])
    with caplog.at_level(logging.WARNING):
        encoded = tokenizer(patients)
    assert [len(ids) for ids in encoded["feature_ids"]] == [1, 1, 1, 1]
    reports = [record.getMessage() for record in caplog.records]
    assert len(reports) == 2 and "['Lactate_x']" in reports[0] and "['Troponin_x']" in reports[1]


@pytest.mark.parametrize(
    "bad_event, message",
    [
        (("sodium", float("nan"), 1.0), r"patient 0, row 1: value nan of feature 'sodium' is not a finite number"),
        (("sodium", "n/a", 1.0), r"row 1: value 'n/a' of feature 'sodium'"),
        (("sodium", float("inf"), 1.0), r"row 1: value inf"),
        (("sodium", 140, "yesterday"), r"row 1: time 'yesterday' is neither hours nor a timestamp"),
        (("sodium", 140, -2.0), r"row 1: time -2.0 \(-2 h\) lies before the record's start"),
        (("sodium", 140, 1e7), r"row 1: time 10000000.0 .* lies more than \d+ hours after"),
        (("sodium", 140, None), r"row 1: time None .* is not a finite number"),
        (("icu_type", "psychiatric", 1.0), r"row 1: 'psychiatric' is not a level of categorical feature 'icu_type'"),
    ],
)
def test_bad_rows_raise_with_the_row_named(tokenizer, bad_event, message):
    with pytest.raises(ValueError, match=message):
        tokenizer([("heart_rate", 80, 0.0), bad_event])


def test_values_or_times_given_as_lists_are_refused_with_the_row_named(tokenizer):
    """Every cell a list of one reads as a column of numbers one dimension too many: the events must not be mixed
    up (each time a list gave three copies of the first event) nor fail inside numpy."""
    columns = {"feature": ["heart_rate", "sodium"], "value": [80, 140], "time": [0.0, 1.0]}
    with pytest.raises(ValueError, match=r"patient 0, row 0: time \[0.0\] is not one number or timestamp"):
        tokenizer({**columns, "time": [[0.0], [1.0]]})
    with pytest.raises(ValueError, match=r"patient 0, row 0: value \[80\] of feature 'heart_rate' is not one number"):
        tokenizer({**columns, "value": [[80], [140]]})


def test_errors_name_the_record_and_dataframe_row(tokenizer):
    patient = {"record_id": 132539, "feature": ["sodium", "sodium"], "value": [140, "abc"], "time": [0.0, 1.0]}
    with pytest.raises(ValueError, match=r"patient 0 \(record_id=132539\), row 1"):
        tokenizer(patient)
    frame = pd.DataFrame({"feature": ["sodium", "sodium"], "value": [140, "abc"], "time": [0, 1]}, index=[57, 58])
    with pytest.raises(ValueError, match="row 58"):
        tokenizer(frame)


def test_patient_without_events_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="patient 1 has no events"):
        tokenizer([PATIENT, {"feature": [], "value": [], "time": []}])


def test_forecasting_targets_average_the_window_and_inputs_stop_at_the_cutoff(tokenizer, vocabulary):
    events = [("sodium", 140, 1.0), ("heart_rate", 80, 5.0), ("sodium", 150, 24.5), ("sodium", 130, 25.0),
              ("heart_rate", 99, 30.0)]
    from medfuse_hf.data.forecasting import forecasting_batch

    batch = forecasting_batch(tokenizer, [events], cutoffs=[24.0], horizon_hours=2.0)
    sodium, heart_rate = vocabulary.id_of("sodium"), vocabulary.id_of("heart_rate")
    statistics = vocabulary.spec_of("sodium").statistics
    assert batch["times"].tolist() == [[1.0, 5.0]]
    assert batch["forecast_mask"][0].nonzero().flatten().tolist() == [sodium]
    assert batch["forecast_values"][0, sodium].item() == pytest.approx((140 - statistics.mean) / statistics.std,
                                                                       rel=1e-5)
    assert batch["forecast_mask"][0, heart_rate] == 0


def test_a_quantile_vocabulary_normalises_by_rank(cohort):
    from medfuse_hf import FeatureVocabulary

    vocabulary = FeatureVocabulary.from_events(cohort, normalization="quantile")
    encoded = MedFuseTokenizer(vocabulary)(cohort[0], return_tensors="np")
    sodium = vocabulary.spec_of("sodium")
    positions = encoded["feature_ids"][0] == vocabulary.id_of("sodium")
    raw = [value for name, value in zip(cohort[0]["feature"], cohort[0]["value"]) if name == "sodium"]
    np.testing.assert_allclose(encoded["values"][0][positions], sodium.statistics.normalize(np.array(raw)), rtol=1e-6)
    assert np.abs(encoded["values"]).max() <= 2.33  # ranks as normal scores, never past the 1st/99th percentile


def test_timestamps_are_read_one_way_only(tokenizer):
    iso = [("sodium", 140, "2020-04-03 10:00"), ("sodium", 141, "2020-04-05 10:00")]
    assert tokenizer([iso])["times"][0] == [0.0, 48.0]
    day_first = [("sodium", 140, "03/04/2020 10:00"), ("sodium", 141, "05/04/2020 10:00")]
    with pytest.raises(ValueError,
                       match=r"row 0 \(time\): time '03/04/2020 10:00': day and month could be either way"):
        tokenizer([day_first])
    with pytest.raises(ValueError, match="anchor time 'yesterday' is no timestamp"):
        tokenizer([iso], anchor_times=["yesterday"])


def test_pad_with_max_length_keeps_the_most_recent_events_and_bad_padding_is_named(vocabulary):
    tokenizer = MedFuseTokenizer(vocabulary)
    rows = [dict(tokenizer([("heart_rate", 80 + hour, float(hour)) for hour in range(10)], padding=False))]
    padded = tokenizer.pad(rows, padding="max_length", max_length=4, return_tensors="np")
    assert padded["times"].tolist() == [[6.0, 7.0, 8.0, 9.0]]  # as DataCollatorWithPadding(max_length=4) asks
    with pytest.raises(ValueError, match=r"patients have 1..4 events: tensors need padding=True"):
        tokenizer([PATIENT, PATIENT[:1]], padding=False, return_tensors="pt")
    with pytest.raises(ValueError, match="padding_side must be 'right' or 'left'"):
        MedFuseTokenizer(vocabulary, padding_side="middle")


def test_hours_with_a_timestamp_anchor_are_an_error_naming_the_patient(tokenizer):
    with pytest.raises(ValueError, match=r"patient 0: times are numbers of hours, but anchor time '2020-01-01 00:00' "
                                         "is not"):
        tokenizer([("sodium", 140, 1.0)], anchor_times="2020-01-01 00:00")
    assert tokenizer([("sodium", 140, 5.0)], anchor_times=2.0)["times"] == [3.0]  # hours since an anchor in hours


def test_spreadsheet_serial_dates_are_not_taken_for_hours(tokenizer):
    with pytest.raises(ValueError, match=r"patient 0: every time lies between 45,292.38 and 45,292.50: these look "
                                         "like spreadsheet serial dates"):
        tokenizer([("sodium", 140, 45292.375), ("sodium", 141, 45292.5)])
