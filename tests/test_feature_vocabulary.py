import json

import datasets
import numpy as np
import pandas as pd
import pytest

from medfuse_hf import FeatureSpec, FeatureVocabulary, ValueStatistics, align, merge


def test_statistics_ignore_outliers_beyond_three_iqr():
    values = np.concatenate([np.random.default_rng(0).normal(140, 3, size=1000), [10_000.0]])
    statistics = ValueStatistics.fit(values, num_patients=50)
    assert statistics.count == 1001
    assert statistics.upper < 10_000.0
    assert abs(statistics.mean - 140) < 0.5 and abs(statistics.std - 3) < 0.3


def test_normalisation_clips_to_fences_then_z_scores():
    statistics = ValueStatistics.fit(np.arange(100.0), num_patients=10)
    normalised = statistics.normalize(np.array([statistics.mean, 1e9]))
    assert normalised[0] == pytest.approx(0.0)
    assert normalised[1] == pytest.approx((statistics.upper - statistics.mean) / statistics.std)


def test_constant_feature_gets_unit_scale():
    assert ValueStatistics.fit(np.ones(20), num_patients=3).std == 1.0
    temperature = ValueStatistics.fit(np.full(1000, 36.6), num_patients=3)  # its std rounds to 1e-14, not 0
    assert temperature.std == 1.0 and abs(temperature.normalize(np.array([36.6]))[0]) < 1e-9


def test_a_feature_mostly_at_one_level_keeps_its_other_values_apart():
    """Fences of 3 IQR around quartiles that coincide would clip every value to that level: a flag set in a fifth of
    the values, a lab mostly at its detection floor."""
    flag = ValueStatistics.fit(np.r_[np.zeros(800), np.ones(200)], num_patients=100)
    assert flag.normalize(np.array([0.0, 1.0])) == pytest.approx([-0.5, 2.0])  # (x - 0.2) / 0.4
    floor = ValueStatistics.fit(np.r_[np.full(800, 0.01), np.random.default_rng(0).lognormal(0, 1, 200)], 100)
    assert np.all(np.diff(floor.normalize(np.array([0.01, 0.5, 5.0]))) > 0)
    typo = ValueStatistics.fit(np.r_[np.full(800, 0.01), np.random.default_rng(0).lognormal(0, 1, 199), 99999.0], 100)
    assert typo.upper < 100 and typo.normalize(np.array([99999.0]))[0] < 50  # one entry error sets no fence


def test_from_events_orders_features_by_name_and_reserves_special_ids(cohort):
    vocabulary = FeatureVocabulary.from_events(cohort)
    assert [spec.name for spec in vocabulary] == ["creatinine", "heart_rate", "sodium"]
    assert vocabulary.id_of("creatinine") == 2
    assert len(vocabulary) == 5
    assert vocabulary.spec_of("sodium").statistics.num_patients == len(cohort)


def test_from_events_reads_a_one_pass_iterator_and_a_dataset_as_it_reads_a_list(cohort):
    """Names and statistics both need the patients: a generator would be spent after the names."""
    expected = FeatureVocabulary.from_events(cohort).to_dict()
    assert FeatureVocabulary.from_events(patient for patient in cohort).to_dict() == expected
    assert FeatureVocabulary.from_events(datasets.Dataset.from_list(cohort)).to_dict() == expected


def test_from_events_names_the_patient_with_a_text_value():
    patients = [{"feature": ["sodium"], "value": [140]}, {"feature": ["sodium", "sodium"], "value": [141, "high"]}]
    with pytest.raises(ValueError, match=r"patient 1, event 1: feature 'sodium' has value 'high'"):
        FeatureVocabulary.from_events(patients)


def test_fit_statistics_rejects_names_outside_the_vocabulary():
    vocabulary = FeatureVocabulary([FeatureSpec(name="sodium")])
    with pytest.raises(ValueError, match="'Na_x' \\(2 events\\)"):
        vocabulary.fit_statistics([{"feature": ["Na_x", "Na_x", "sodium"], "value": [1, 2, 140]}])


def test_json_round_trip_is_exact_and_readable(tmp_path, vocabulary):
    path = tmp_path / "vocab.json"
    vocabulary.save(path)
    assert FeatureVocabulary.load(path) == vocabulary
    on_disk = json.loads(path.read_text())
    assert on_disk["special_tokens"] == ["[PAD]", "[UNK]"]
    assert on_disk["features"][-1] == {
        "name": "icu_type",
        "kind": "categorical",
        "categories": ["coronary", "cardiac_surgery", "medical", "surgical"],
    }


def test_load_names_the_file_at_fault(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"format_version": 1, "features": [{"name": "x", "kind": "ordinal"}]}')
    with pytest.raises(ValueError, match="broken.json: not a valid feature vocabulary"):
        FeatureVocabulary.load(path)


def test_names_aliases_and_codes_must_be_unique():
    vocabulary = FeatureVocabulary([FeatureSpec(name="heart_rate", aliases=["HR"])])
    with pytest.raises(ValueError, match="'HR' is already used by feature 'heart_rate'"):
        vocabulary.add(FeatureSpec(name="hr_monitor", aliases=["HR"]))


def test_align_matches_by_name_code_then_alias_and_reports_the_rest():
    here = FeatureVocabulary(
        [
            FeatureSpec(name="heart_rate", aliases=["HR"]),
            FeatureSpec(name="sodium", code="2951-2"),
            FeatureSpec(name="lactate"),
            FeatureSpec(name="gcs"),
        ]
    )
    there = FeatureVocabulary(
        [
            FeatureSpec(name="HR"),
            FeatureSpec(name="Na", code="2951-2"),
            FeatureSpec(name="lactate"),
            FeatureSpec(name="EtCO2"),
        ]
    )
    report = align(here, there)
    assert report.matched == {"heart_rate": "HR", "sodium": "Na", "lactate": "lactate"}
    assert report.how == {"heart_rate": "alias", "sodium": "code", "lactate": "name"}
    assert report.only_here == ["gcs"]
    assert report.only_there == ["EtCO2"]


def test_merge_keeps_existing_ids_and_appends_new_features():
    here = FeatureVocabulary([FeatureSpec(name="heart_rate"), FeatureSpec(name="sodium")])
    there = FeatureVocabulary([FeatureSpec(name="lactate"), FeatureSpec(name="Na", aliases=["sodium"])])
    merged = merge(here, there)
    assert merged.id_of("heart_rate") == here.id_of("heart_rate")
    assert merged.id_of("sodium") == here.id_of("sodium")
    assert merged.id_of("Na") == here.id_of("sodium")
    assert merged.id_of("lactate") == len(here)
    assert len(merged) == len(here) + 1


def test_merge_refuses_a_spelling_that_names_another_feature_where_it_joins():
    """Serum glucose is 2345-7, blood glucose 2339-0: a cohort calling serum glucose `glucose` must not have its
    events read, with their statistics, as a checkpoint's blood glucose, nor the other way round."""
    checkpoint = FeatureVocabulary([FeatureSpec(name="glucose", code="2339-0"),
                                    FeatureSpec(name="serum_glucose", code="2345-7")])
    with pytest.raises(ValueError, match=r"'glucose' \(code 2345-7\), matched by code to 'serum_glucose' in the "
                                         r"vocabulary it joins, would have its events read as those of 'glucose' "
                                         r"\(code 2339-0\)"):
        merge(checkpoint, FeatureVocabulary([FeatureSpec(name="glucose", code="2345-7")]))
    with pytest.raises(ValueError, match=r"'glucose' \(code 2339-0\), matched to no feature"):
        merge(FeatureVocabulary([FeatureSpec(name="glucose", code="2345-7")]), checkpoint)
    renamed = merge(checkpoint, FeatureVocabulary([FeatureSpec(name="glucose_serum", code="2345-7")]))
    assert renamed.id_of("glucose_serum") == checkpoint.id_of("serum_glucose") and len(renamed) == len(checkpoint)


def test_numeric_category_levels_read_the_values_they_name():
    """Levels as pandas gives a coded column's `unique()` (floats): an export's 2, 2.0 or "2" is level 2."""
    from medfuse_hf import MedFuseTokenizer

    levels = pd.Series([1.0, 2.0, 3.0, 1.0]).unique()
    vocabulary = FeatureVocabulary.of_names(["icu_type"], categorical={"icu_type": levels})
    assert vocabulary.spec_of("icu_type").categories == ["1", "2", "3"]
    tokenizer = MedFuseTokenizer(vocabulary)
    for value in (2, 2.0, "2", np.float32(2.0)):
        assert tokenizer([("icu_type", value, 0.0)])["values"] == [2.0]  # global category id of level 2
    with pytest.raises(ValueError, match=r"'icu' lists a level twice: \['1', '1'\]"):
        FeatureSpec(name="icu", kind="categorical", categories=[1, 1.0])


def test_categorical_levels_get_global_ids(vocabulary):
    icu_type = vocabulary.id_of("icu_type")
    assert vocabulary.category_offsets() == {icu_type: 1}
    assert vocabulary.config_kwargs() == {"vocab_size": 6, "num_categories": 5, "categorical_feature_ids": [icu_type]}


def test_an_exact_name_match_wins_over_another_features_alias():
    here = FeatureVocabulary([FeatureSpec(name="pulse", aliases=["hr_x"]), FeatureSpec(name="heart_rate")])
    there = FeatureVocabulary([FeatureSpec(name="heart_rate", aliases=["hr_x"])])
    assert align(here, there).matched == {"heart_rate": "heart_rate"}  # pulse comes first, but only by alias
    assert align(here, there, methods=["name"]).matched == {"heart_rate": "heart_rate"}
    assert align(FeatureVocabulary([FeatureSpec(name="pulse", aliases=["hr_x"])]), there).how == {"pulse": "alias"}


def test_a_differently_coded_name_match_yields_to_an_exact_code_match():
    there = FeatureVocabulary([FeatureSpec(name="glucose", code="2345-7")])  # serum glucose at the source
    here = FeatureVocabulary([FeatureSpec(name="glucose", code="2339-0"),
                              FeatureSpec(name="serum_glucose", code="2345-7")])
    report = align(here, there)
    assert report.matched == {"serum_glucose": "glucose"} and report.how == {"serum_glucose": "code"}
    alone = FeatureVocabulary([FeatureSpec(name="glucose", code="LAB-17")])  # a local code: the names still match
    assert align(alone, there).matched == {"glucose": "glucose"}
    assert align(alone, there, methods=["name"]).matched == {"glucose": "glucose"}


def test_quantile_normalisation_spreads_a_skewed_lab_by_rank():
    lactate = np.random.default_rng(0).lognormal(0.5, 0.8, size=5000)  # skewed: a long tail of sick patients
    statistics = ValueStatistics.fit(lactate, num_patients=500, normalization="quantile")
    assert statistics.normalization == "quantile"
    grid = np.linspace(0.0, 40.0, 400)
    normalised = statistics.normalize(grid)
    assert np.all(np.diff(normalised) >= 0)  # the order of values is kept
    assert statistics.normalize(np.array([statistics.median]))[0] == pytest.approx(0.0, abs=0.02)
    assert normalised.max() == pytest.approx(2.326, abs=1e-3)  # constant past the 99th percentile
    # half of the training values fall on each side of 0, which a z-score of a skewed lab does not give
    assert np.mean(statistics.normalize(lactate) < 0) == pytest.approx(0.5, abs=0.02)


def test_quantile_normalisation_gives_tied_values_one_score():
    gcs = np.random.default_rng(1).choice([3, 7, 15], p=[0.1, 0.2, 0.7], size=1000).astype(float)
    statistics = ValueStatistics.fit(gcs, num_patients=100, normalization="quantile")
    scores = statistics.normalize(np.array([3.0, 7.0, 15.0, 15.0]))
    assert np.isfinite(scores).all() and scores[0] < scores[1] < scores[2] == scores[3]


def test_quantiles_survive_a_round_trip_and_a_unit_conversion(tmp_path):
    creatinine = np.random.default_rng(2).lognormal(0.0, 0.5, size=(80, 10))  # 80 patients, 10 values each
    vocabulary = FeatureVocabulary.from_events([{"feature": ["creatinine"] * 10, "value": values.tolist()}
                                                for values in creatinine], normalization="quantile")
    vocabulary.save(tmp_path / "vocabulary.json")
    loaded = FeatureVocabulary.load(tmp_path / "vocabulary.json").spec_of("creatinine").statistics
    assert loaded == vocabulary.spec_of("creatinine").statistics
    in_micromoles = loaded.in_other_units(88.42)  # mg/dL -> µmol/L moves every knot with the values
    np.testing.assert_allclose(in_micromoles.normalize(creatinine * 88.42), loaded.normalize(creatinine))


def test_a_feature_of_too_few_patients_for_a_tail_knot_is_named_in_a_warning(caplog):
    """Five patients' values all read as their median under quantile normalisation: a transfer to a small target
    should say so, not leave a lab silently flat."""
    patients = [{"feature": ["lactate"] * 40 + ["sodium"], "value": [float(i)] * 40 + [140.0 + i]} for i in range(5)]
    patients += [{"feature": ["sodium"], "value": [130.0 + i]} for i in range(30)]
    with caplog.at_level("WARNING", logger="medfuse_hf.feature_vocabulary"):
        vocabulary = FeatureVocabulary.from_events(patients, normalization="quantile")
    assert "['lactate'] seen in too few patients for any knot but the median" in caplog.text
    assert set(vocabulary.spec_of("lactate").statistics.normalize(np.array([0.0, 4.0]))) == {0.0}


def test_no_quantile_knot_lies_among_the_sickest_few_patients_own_values():
    """With one troponin each from 25 patients, the 97.5th and 99th percentiles would give away the two highest (a
    published vocabulary holds its knots): a tail knot needs 10 patients at or beyond it, and values past the last
    one kept get its score."""
    values = np.random.default_rng(3).lognormal(0.0, 1.0, size=25)
    values[-2:] = [30.0, 142.0]
    vocabulary = FeatureVocabulary.from_events([{"feature": ["troponin"], "value": [value]} for value in values],
                                               normalization="quantile")
    statistics = vocabulary.spec_of("troponin").statistics
    kept = [knot for knot in statistics.quantiles if knot is not None]
    for knot in kept:
        assert min((values <= knot).sum(), (values >= knot).sum()) >= 10 or knot == statistics.median
    assert statistics.quantiles[0] is None and statistics.quantiles[-1] is None
    scores = statistics.normalize(np.array([max(kept), 30.0, 142.0]))
    assert scores[0] == scores[1] == scores[2] > 0
    loaded = FeatureVocabulary.from_dict(json.loads(json.dumps(vocabulary.to_dict())))
    assert loaded.spec_of("troponin").statistics == statistics
    in_other_units = statistics.in_other_units(1000.0)
    np.testing.assert_allclose(in_other_units.normalize(values * 1000), statistics.normalize(values))
    many = np.random.default_rng(4).lognormal(0.0, 1.0, size=2000)  # 20 patients past the 1st percentile: all kept
    assert None not in ValueStatistics.fit(many, num_patients=2000, normalization="quantile").quantiles


def test_robust_zscore_vocabularies_are_written_as_before():
    vocabulary = FeatureVocabulary.from_events([{"feature": ["sodium", "sodium"], "value": [139, 141]}])
    assert "quantiles" not in vocabulary.to_dict()["features"][0]["statistics"]


def test_numeric_mask_marks_the_features_whose_values_can_be_predicted(vocabulary):
    mask = vocabulary.numeric_mask()
    assert mask.shape == (len(vocabulary),) and not mask[:2].any()  # [PAD], [UNK]
    assert ({spec.name for spec in vocabulary if mask[vocabulary.id_of(spec.name)]}
            == {"sodium", "heart_rate", "creatinine"})
