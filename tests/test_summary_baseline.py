"""The summary-statistics baselines: the per-stay table a data scientist would build, and models tuned on
validation only."""

from functools import partial

import datasets
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medfuse_hf.training.metrics import accuracy_threshold
from medfuse_hf.training.summary_baseline import (
    GBM_SETTINGS,
    GBM_STATISTICS,
    SummaryTable,
    fit_gbm,
    fit_logistic_regression,
    statistic_columns,
)

STAYS = [
    {
        "feature": ["age", "icu_type", "lactate", "lactate", "sodium"],
        "value": [70.0, 3.0, 4.0, 1.5, 140.0],
        "time": [0.0, 0.0, 1.0, 30.0, 2.0],
    },
    {"feature": ["age", "icu_type", "sodium"], "value": [55.0, 2.0, 150.0], "time": [0.0, 0.0, 5.0]},
]


def test_each_statistic_is_computed_from_the_stays_own_events():
    stays = datasets.Dataset.from_list(STAYS)
    table = SummaryTable(stays, categorical=["icu_type"])(stays)
    first = table.iloc[0]
    assert (first["lactate:first"], first["lactate:last"], first["lactate:min"], first["lactate:max"]) == (
        4.0,
        1.5,
        1.5,
        4.0,
    )
    assert first["lactate:count"] == 2 and first["lactate:last_time"] == 30.0 and first["lactate:mean"] == 2.75
    second = table.iloc[1]
    assert second["lactate:count"] == 0 and np.isnan(second["lactate:last"])  # never measured: missing, not 0
    assert (first["icu_type=3"], first["icu_type=2"], second["icu_type=2"]) == (1.0, 0.0, 1.0)
    assert "age:std" not in table  # never defined for a once-measured descriptor


def test_columns_are_fixed_by_the_training_split():
    train = datasets.Dataset.from_list(STAYS)
    later = datasets.Dataset.from_list(
        [{"feature": ["troponin", "sodium"], "value": [0.2, 135.0], "time": [1.0, 2.0]}]
    )
    table = SummaryTable(train, categorical=["icu_type"])
    scored = table(later)
    assert list(scored.columns) == table.columns and "troponin:last" not in scored
    assert scored.iloc[0]["sodium:last"] == 135.0 and scored.iloc[0]["icu_type=3"] == 0.0


def test_a_selected_split_is_summarised_from_its_own_rows():
    """A split is a `select` of the whole cohort: its rows, not the first rows of the underlying table."""
    stays = datasets.Dataset.from_list(STAYS).select([1])
    assert SummaryTable(stays)(stays).iloc[0]["sodium:last"] == 150.0


def learnable_split(seed: int, size: int):
    """Death when the last lactate is high: a signal both baselines must find."""
    rng = np.random.default_rng(seed)
    stays, labels = [], []
    for _ in range(size):
        lactate = rng.lognormal(0.3, 0.6, size=3)
        stays.append(
            {
                "feature": ["lactate"] * 3 + ["sodium"],
                "value": [*lactate.tolist(), rng.normal(140, 4)],
                "time": [1.0, 10.0, 40.0, 5.0],
            }
        )
        labels.append(int(lactate[-1] + rng.normal(0, 0.3) > 2.2))
    return datasets.Dataset.from_list(stays), np.array(labels)


@pytest.fixture(autouse=True)
def one_openmp_thread():
    """scikit-learn's OpenMP threads spin-wait for each other: beside a training on the same two cores, a 300-stay
    GBM fit took 40 s instead of 0.7 s. One thread is fast either way at these sizes."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.mark.parametrize("fit", [fit_gbm, fit_logistic_regression])
def test_the_baselines_learn_from_the_table_and_are_chosen_on_validation(fit, monkeypatch):
    import medfuse_hf.training.summary_baseline as baseline

    monkeypatch.setattr(baseline, "GBM_MAX_ITERATIONS", 60)  # a small grid keeps the test fast
    parts = {name: learnable_split(seed, 300) for seed, name in enumerate(("train", "validation", "test"))}
    table = SummaryTable(parts["train"][0])
    frames = {name: table(stays) for name, (stays, _) in parts.items()}
    result = fit(
        (frames["train"], parts["train"][1]), (frames["validation"], parts["validation"][1]), frames["test"], seed=0
    )
    from sklearn.metrics import average_precision_score

    assert result.validation_metric == pytest.approx(
        average_precision_score(parts["validation"][1], result.validation_scores)
    )
    assert roc_auc_score(parts["test"][1], result.test_scores) > 0.85
    assert result.test_scores.shape == (300,)


def test_accuracy_threshold_is_the_best_cut_on_validation():
    rng = np.random.default_rng(0)
    for _ in range(50):
        labels, scores = rng.integers(0, 2, 40), rng.integers(0, 6, 40) / 6  # many ties
        threshold = accuracy_threshold(labels, scores)
        best = max(np.mean((scores >= cut) == labels) for cut in [*scores, np.inf])
        assert np.mean((scores >= threshold) == labels) == pytest.approx(best)


def test_the_gbm_learns_from_a_small_hospitals_77_stays(monkeypatch):
    """1 % of P12 is 77 stays: with P12's 40 patients per leaf no split is possible and the GBM was one constant
    (test AUROC 0.5). Its leaves shrink with the cohort."""
    import medfuse_hf.training.summary_baseline as baseline

    monkeypatch.setattr(baseline, "GBM_MAX_ITERATIONS", 60)
    parts = {name: learnable_split(seed, size)
             for seed, (name, size) in enumerate((("train", 77), ("validation", 300), ("test", 300)))}
    table = SummaryTable(parts["train"][0])
    frames = {name: table(stays) for name, (stays, _) in parts.items()}
    result = fit_gbm((frames["train"], parts["train"][1]), (frames["validation"], parts["validation"][1]),
                     frames["test"], seed=0)
    assert result.settings["min_samples_leaf"] == 3
    assert roc_auc_score(parts["test"][1], result.test_scores) > 0.8
    assert baseline.min_samples_leaf(7671) == 40  # the P12 table's GBM is unchanged


def test_a_small_cohorts_gbm_grows_on_one_thread_and_a_larger_ones_as_openmp_says(monkeypatch):
    """Beside another busy process two OpenMP threads grow the same trees two to three times slower, and on idle cores
    they save a pilot nothing (`benchmarks/gbm_threads.py`)."""
    from threadpoolctl import threadpool_info

    import medfuse_hf.training.summary_baseline as baseline

    def openmp_threads() -> set[int]:
        return {info["num_threads"] for info in threadpool_info() if info["user_api"] == "openmp"}

    grow, seen = baseline.grown_until_validation_stalls, []

    def growing_on_the_threads_it_has(*args):
        seen.append(openmp_threads())
        return grow(*args)

    monkeypatch.setattr(baseline, "grown_until_validation_stalls", growing_on_the_threads_it_has)
    monkeypatch.setattr(baseline, "GBM_MAX_ITERATIONS", 20)
    parts = {name: learnable_split(seed, 100) for seed, name in enumerate(("train", "validation", "test"))}
    table = SummaryTable(parts["train"][0])
    frames = {name: table(stays) for name, (stays, _) in parts.items()}
    fits = []
    for one_thread_below in (1000, 50):  # 100 training stays: small, then large
        monkeypatch.setattr(baseline, "ONE_THREAD_BELOW", one_thread_below)
        fits.append(fit_gbm((frames["train"], parts["train"][1]), (frames["validation"], parts["validation"][1]),
                            frames["test"], seed=0, settings=GBM_SETTINGS[:1]))
    assert seen == [{1}, openmp_threads()]
    assert np.array_equal(fits[0].test_scores, fits[1].test_scores)  # the same trees


def test_a_column_no_training_stay_has_is_left_out_of_the_gbm(monkeypatch):
    """A lab that none of a small subset's stays had is an all-missing training column: scikit-learn's binning fails
    on it ("window shape cannot be larger than input array shape"); it says nothing, so the GBM goes without it."""
    import medfuse_hf.training.summary_baseline as baseline

    monkeypatch.setattr(baseline, "GBM_MAX_ITERATIONS", 20)
    parts = {name: learnable_split(seed, 100) for seed, name in enumerate(("train", "validation", "test"))}
    table = SummaryTable(parts["train"][0])
    frames = {name: table(stays) for name, (stays, _) in parts.items()}
    frames["train"]["troponin_last"] = np.nan
    frames["validation"]["troponin_last"] = frames["test"]["troponin_last"] = 1.0
    result = fit_gbm((frames["train"], parts["train"][1]), (frames["validation"], parts["validation"][1]),
                     frames["test"], seed=0)
    assert result.test_scores.shape == (100,) and np.isfinite(result.test_scores).all()


def test_the_gbm_chooses_on_validation_which_statistics_it_reads(monkeypatch):
    """The compact set (last, min, max, mean) leaves the other statistics out of the trees, and keeps every column
    that is no summary: when the outcome shows only in how often lactate was measured, only the full set finds it."""
    import medfuse_hf.training.summary_baseline as baseline

    monkeypatch.setattr(baseline, "GBM_MAX_ITERATIONS", 40)
    rng = np.random.default_rng(0)
    frames, labels = {}, {}
    for name in ("train", "validation", "test"):
        counts = rng.integers(1, 10, 300).astype(float)
        labels[name] = (counts > 5).astype(int)
        frames[name] = pd.DataFrame({"lactate:count": counts, "lactate:last": rng.normal(size=300),
                                     "lactate:last_time": rng.normal(size=300), "base_0": rng.normal(size=300)})
    assert statistic_columns(frames["train"].columns, GBM_STATISTICS["compact"]) == ["lactate:last", "base_0"]

    def test_auroc(statistics: str) -> tuple[float, dict]:
        grid = [setting for setting in GBM_SETTINGS if setting["statistics"] == statistics]
        fit = fit_gbm((frames["train"], labels["train"]), (frames["validation"], labels["validation"]),
                      frames["test"], seed=0, settings=grid)
        return roc_auc_score(labels["test"], fit.test_scores), fit.settings

    compact, compact_settings = test_auroc("compact")
    full, full_settings = test_auroc("all")
    assert compact < 0.65 < 0.95 < full
    assert (compact_settings["columns"], full_settings["columns"]) == (2, 4)


def test_boosting_stops_growing_once_validation_stalls_and_keeps_the_same_trees(monkeypatch):
    """Grown in rounds, a setting stops `GBM_PATIENCE` iterations after its best; what it keeps is what one fit of
    every iteration would have kept up to there (warm starts continue the same random stream)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import average_precision_score

    import medfuse_hf.training.summary_baseline as baseline

    monkeypatch.setattr(baseline, "GBM_MAX_ITERATIONS", 400)
    monkeypatch.setattr(baseline, "GBM_ROUND", 20)
    monkeypatch.setattr(baseline, "GBM_PATIENCE", 60)
    parts = {name: learnable_split(seed, 200) for seed, name in enumerate(("train", "validation"))}
    table = SummaryTable(parts["train"][0])
    train, validation = ((table(stays), labels) for stays, labels in parts.values())
    settings = dict(early_stopping=False, max_features=0.5, random_state=0, min_samples_leaf=5, learning_rate=0.3)
    grown = HistGradientBoostingClassifier(max_iter=0, warm_start=True, **settings)
    iteration, value, scores = baseline.grown_until_validation_stalls(grown, train, validation, "auprc")

    assert grown.n_iter_ < 400 and iteration + 60 <= grown.n_iter_ < iteration + 60 + 20
    whole = HistGradientBoostingClassifier(max_iter=grown.n_iter_, **settings).fit(*train)
    staged = [average_precision_score(validation[1], s[:, 1]) for s in whole.staged_predict_proba(validation[0])]
    assert iteration == int(np.argmax(staged)) + 1 and value == pytest.approx(max(staged))
    np.testing.assert_allclose(scores, list(whole.staged_predict_proba(validation[0]))[iteration - 1][:, 1])

    # with a floor past that best, the best from the floor on, however much better an earlier iteration was
    floor = iteration + 1
    floored_model = HistGradientBoostingClassifier(max_iter=0, warm_start=True, **settings)
    floored, floored_value, _ = baseline.grown_until_validation_stalls(floored_model, train, validation, "auprc",
                                                                       min_iterations=floor)
    longer = HistGradientBoostingClassifier(max_iter=floored_model.n_iter_, **settings).fit(*train)
    staged = [average_precision_score(validation[1], s[:, 1]) for s in longer.staged_predict_proba(validation[0])]
    assert floored == floor + int(np.argmax(staged[floor - 1:])) and floored_value == pytest.approx(
        max(staged[floor - 1:]))


def test_the_wide_grid_holds_the_default_one_and_reaches_past_each_of_its_edges():
    """On all of P12 the GBM chose the default grid's corner; the wide grid must contain every default setting (so it
    can only choose better on validation) and go beyond it on rate, leaves and L2."""
    from medfuse_hf.training.summary_baseline import WIDE_GBM_SETTINGS

    def key(setting: dict) -> tuple:
        return tuple(sorted(setting.items()))

    assert {key(setting) for setting in GBM_SETTINGS} < {key(setting) for setting in WIDE_GBM_SETTINGS}
    for name, beyond in (("learning_rate", min), ("max_leaf_nodes", max), ("l2_regularization", max)):
        assert beyond(s[name] for s in WIDE_GBM_SETTINGS) != beyond(s[name] for s in GBM_SETTINGS)


def test_a_gbm_fitted_again_at_its_recorded_choice_grows_the_same_trees(monkeypatch):
    """A wiped machine restores a GBM's test predictions from its row's chosen setting rather than the whole grid (the
    wide grid took an hour a seed): that is only sound if each setting grows independently of the others."""
    import medfuse_hf.training.summary_baseline as baseline

    monkeypatch.setattr(baseline, "GBM_MAX_ITERATIONS", 100)
    parts = {name: learnable_split(seed, 200) for seed, name in enumerate(("train", "validation", "test"))}
    table = SummaryTable(parts["train"][0])
    frames = {name: table(stays) for name, (stays, _) in parts.items()}
    splits = ((frames["train"], parts["train"][1]), (frames["validation"], parts["validation"][1]), frames["test"])
    grid = baseline.gbm_grid((0.03, 0.3), (4, 15), (1.0,))
    whole = fit_gbm(*splits, seed=3, settings=grid)
    monkeypatch.setitem(baseline.SUMMARY_BASELINES, "gbm_test_grid", partial(fit_gbm, settings=grid))
    again = baseline.fit_at_the_choice("gbm_test_grid", whole.settings)(*splits, seed=3)
    assert {axis: whole.settings[axis] for axis in grid[0]} != grid[0]  # a later setting: narrowing is what is tested
    assert again.settings == whole.settings
    np.testing.assert_array_equal(again.test_scores, whole.test_scores)
    assert baseline.fit_at_the_choice("logreg_summary", {"C": 0.1}) is fit_logistic_regression  # seconds: fit whole
