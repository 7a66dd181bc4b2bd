"""The baselines a clinical data scientist fits first: gradient-boosted trees, and a logistic regression, on
per-stay summary statistics of every feature.

scikit-learn's `HistGradientBoostingClassifier` rather than LightGBM: the same histogram-based algorithm, already a
dependency (nothing compiled to install on a hospital machine), and it takes missing values natively, so a feature
never measured in a stay stays missing rather than imputed. Both models are early-stopped or tuned on the
validation split only; the test split is scored once, by the settings validation chose.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import islice

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from .metrics import RANKING_SCORES

# What a data scientist computes per stay and feature: the trend's ends, its range and level, its variability,
# how often it was measured and when it was last measured (hours since the stay's start: in a fixed window such as
# P12's 48 hours, how long before its end).
SUMMARY_STATISTICS = ("first", "last", "min", "max", "mean", "std", "count", "last_time")
# The statistics a GBM reads: all eight per feature, or a compact set (the trend's end, range and level) that a
# small cohort has fewer ways to overfit. Columns that are no summary (one-hot levels, a representation) stay in both.
GBM_STATISTICS = {"all": SUMMARY_STATISTICS, "compact": ("last", "min", "max", "mean")}


def gbm_grid(rates: Sequence[float], leaves: Sequence[int], l2s: Sequence[float]) -> tuple[dict, ...]:
    """Every combination of the statistics read, learning rate, leaves and L2, for validation to choose among."""
    return tuple({"statistics": statistics, "learning_rate": rate, "max_leaf_nodes": leaf, "l2_regularization": l2}
                 for statistics in GBM_STATISTICS for rate in rates for leaf in leaves for l2 in l2s)


GBM_SETTINGS = gbm_grid((0.03, 0.1), (15, 31), (1.0, 10.0))  # a grid for 77 stays as for 7,671, chosen on validation
# On all of P12, two seeds of three chose GBM_SETTINGS' corner (rate 0.03, 31 leaves, L2 10): this grid reaches past
# it on every axis, to see whether the GBM's full-data figure is its ceiling (`gbm_summary_wide`).
WIDE_GBM_SETTINGS = gbm_grid((0.01, 0.03, 0.1), (15, 31, 63), (1.0, 10.0, 100.0))
# The grids a recipe offers by name (`compare_with_trees.py --gbm_grid`): the wide one grows 3.4 times the settings.
GBM_GRIDS = {"standard": GBM_SETTINGS, "wide": WIDE_GBM_SETTINGS}
GBM_MIN_SAMPLES_LEAF = 40  # on a full cohort; a small one gets a twentieth of its patients (see `min_samples_leaf`)
GBM_MAX_ITERATIONS = 1500
# Boosting grows this many iterations between validation checks, and a setting stops growing once its best validation
# iteration is this far behind: the same trees as growing all 1,500 (warm starts continue the same random stream),
# at a third of the cost where the best iteration comes early (small cohorts, the faster rate).
GBM_ROUND, GBM_PATIENCE = 50, 300
LOGISTIC_C = (0.003, 0.01, 0.03, 0.1, 1.0)
# Below this many training stays a GBM grows on one OpenMP thread: on idle cores a second saves nothing there, and
# where another process holds a core (a shared server, a training beside it) two threads grow the same trees two to
# three times slower (`benchmarks/gbm_threads.py`). The trees do not depend on the thread count.
ONE_THREAD_BELOW = 1000


class SummaryTable:
    """Per-stay summary statistics with the columns fixed by the training split, so that validation, test and new
    stays get the same table whatever they contain (events of features unseen in training are ignored).

    One row per stay (in dataset order), one column per `feature:statistic`; NaN where a stay never measured the
    feature (its count is 0). Categorical features become one-hot columns of their last level (`gender=1`)."""

    def __init__(self, train: datasets.Dataset, categorical: Sequence[str] = ()):
        self.categorical = set(categorical)
        table = self._table(train)
        # a statistic never defined in training (the std of a once-measured descriptor) adds nothing
        self.columns = list(table.columns[table.notna().any()])

    def __call__(self, patients: datasets.Dataset) -> pd.DataFrame:
        table = self._table(patients).reindex(columns=self.columns)
        filled = [column for column in self.columns if column.endswith(":count") or "=" in column]
        table[filled] = table[filled].fillna(0.0)
        return table

    def _table(self, patients: datasets.Dataset) -> pd.DataFrame:
        events = _flat_events(patients)
        is_categorical = events["feature"].isin(self.categorical)
        grouped = events[~is_categorical].groupby(["stay", "feature"], sort=False)
        numeric = grouped["value"].agg(["first", "last", "min", "max", "mean", "std", "count"])
        numeric["last_time"] = grouped["time"].max()
        numeric = numeric[list(SUMMARY_STATISTICS)].unstack("feature")
        numeric.columns = [f"{feature}:{statistic}" for statistic, feature in numeric.columns]
        numeric = numeric[sorted(numeric.columns)]
        levels = events[is_categorical].groupby(["stay", "feature"], sort=False)["value"].last().reset_index()
        names = [f"{feature}={value:g}" for feature, value in zip(levels["feature"], levels["value"])]
        one_hot = None
        if names:
            one_hot = pd.crosstab(levels["stay"].to_numpy(), np.array(names, dtype=object)).clip(upper=1)
        return pd.concat([numeric, one_hot], axis=1).astype(float).reindex(index=range(len(patients)))


def _flat_events(patients: datasets.Dataset) -> pd.DataFrame:
    """Every event as a row (stay position, feature, value, time), built from the Arrow lists without a Python
    object per event; events keep their time order within a stay, so `first`/`last` are the first and last."""
    table = patients.select_columns(["feature", "value", "time"]).with_format("arrow")[:]  # a split's own rows
    feature = table.column("feature").combine_chunks()
    return pd.DataFrame(
        {
            "stay": pc.list_parent_indices(feature).to_numpy(),
            "feature": feature.flatten().to_numpy(zero_copy_only=False),
            "value": table.column("value")
            .combine_chunks()
            .flatten()
            .cast(pa.float64())
            .to_numpy(zero_copy_only=False),
            "time": table.column("time").combine_chunks().flatten().cast(pa.float64()).to_numpy(zero_copy_only=False),
        }
    )


@dataclass
class BaselineFit:
    """A fitted baseline: the settings validation chose, and its validation and test scores."""

    settings: dict
    validation_scores: np.ndarray
    test_scores: np.ndarray
    validation_metric: float


def min_samples_leaf(patients: int) -> int:
    """40 patients per leaf on P12's 7,671 training stays, a twentieth of a smaller cohort (at least 2): with 77
    stays (1 % of P12) a leaf of 40 allows no split at all, and the GBM would predict one constant."""
    return max(2, min(GBM_MIN_SAMPLES_LEAF, patients // 20))


def statistic_columns(columns: Sequence[str], statistics: Sequence[str]) -> list[str]:
    """The columns of a summary table that keep only `statistics` of each feature; every column that is not a
    `feature:statistic` summary (a one-hot level, a representation's dimension) is kept."""
    dropped = tuple(f":{statistic}" for statistic in SUMMARY_STATISTICS if statistic not in statistics)
    return [column for column in columns if not column.endswith(dropped)]


def growing_gbm(setting: dict, leaf: int, seed: int) -> HistGradientBoostingClassifier:
    """An empty, warm-starting GBM of one `GBM_SETTINGS` setting, for `grown_until_validation_stalls` to grow. Half of
    the features are drawn at each split (`max_features=0.5`, LightGBM's `feature_fraction_bynode`), so the seed
    changes the model, as a seed does for the neural models."""
    trees = {name: value for name, value in setting.items() if name != "statistics"}
    return HistGradientBoostingClassifier(max_iter=0, warm_start=True, early_stopping=False, max_features=0.5,
                                          random_state=seed, min_samples_leaf=leaf, **trees)


def grown_until_validation_stalls(
    model: HistGradientBoostingClassifier,
    train: tuple[pd.DataFrame, np.ndarray],
    validation: tuple[pd.DataFrame, np.ndarray],
    metric: str,
    min_iterations: int = 1,
) -> tuple[int, float, np.ndarray]:
    """Grow a warm-starting GBM `GBM_ROUND` iterations at a time until its best validation iteration is
    `GBM_PATIENCE` behind, or `GBM_MAX_ITERATIONS` are grown. Returns the best iteration from `min_iterations` on
    (counted from 1), its validation `metric` and its validation scores; the first of tied iterations, as an argmax
    would."""
    best, grown = (0, -np.inf, None), 0
    while grown < GBM_MAX_ITERATIONS and grown - max(best[0], min_iterations) < GBM_PATIENCE:
        model.set_params(max_iter=min(grown + GBM_ROUND, GBM_MAX_ITERATIONS)).fit(*train)
        staged = islice(model.staged_predict_proba(validation[0]), grown, None)
        for iteration, scores in enumerate(staged, start=grown + 1):
            value = RANKING_SCORES[metric](validation[1], scores[:, 1])
            if iteration >= min_iterations and value > best[1]:
                best = (iteration, value, scores[:, 1])
        grown = model.n_iter_
    return best


def fit_gbm(
    train: tuple[pd.DataFrame, np.ndarray],
    validation: tuple[pd.DataFrame, np.ndarray],
    test: pd.DataFrame,
    seed: int,
    metric: str = "auprc",
    settings: Sequence[dict] = GBM_SETTINGS,
    min_iterations: int = 1,
) -> BaselineFit:
    """Gradient-boosted trees, each of `settings` (which statistics, learning rate, leaves, L2) grown on train and
    early-stopped at the boosting iteration with the best validation `metric`, from `min_iterations` on; the best
    (setting, iteration) scores the test split."""
    validation_labels, best = np.asarray(validation[1]), None  # an array: sklearn re-checks a list at every stage
    # A column no training stay has (a rare lab in a 77-stay subset) says nothing, and breaks sklearn's binning.
    observed = train[0].columns[train[0].notna().any()]
    leaf = min_samples_leaf(len(train[1]))
    threads = 1 if len(train[1]) < ONE_THREAD_BELOW else None  # None: as OpenMP (OMP_NUM_THREADS) says
    with threadpool_limits(limits=threads, user_api="openmp"):
        for setting in settings:
            columns = statistic_columns(observed, GBM_STATISTICS[setting["statistics"]])
            model = growing_gbm(setting, leaf, seed)
            iteration, value, scores = grown_until_validation_stalls(
                model, (train[0][columns], train[1]), (validation[0][columns], validation_labels), metric,
                min_iterations,
            )
            if best is None or value > best[0]:
                chosen = {**setting, "min_samples_leaf": leaf, "iterations": iteration, "columns": len(columns)}
                best = (value, chosen, model, scores, columns)
    score, settings, model, validation_scores, columns = best
    test_scores = next(
        s[:, 1] for i, s in enumerate(model.staged_predict_proba(test[columns])) if i + 1 == settings["iterations"]
    )
    return BaselineFit(settings, validation_scores, test_scores, score)


def fit_logistic_regression(
    train: tuple[pd.DataFrame, np.ndarray],
    validation: tuple[pd.DataFrame, np.ndarray],
    test: pd.DataFrame,
    seed: int,
    metric: str = "auprc",
) -> BaselineFit:
    """L2 logistic regression on the same table: missing values imputed by the training median with a missing
    indicator per column (being unmeasured is informative), standardised; C chosen on validation `metric`.
    The fit is deterministic, so every seed gives the same model."""
    best = None
    for c in LOGISTIC_C:
        model = make_pipeline(
            SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            StandardScaler(),
            LogisticRegression(C=c, max_iter=5000, random_state=seed),
        )
        model.fit(*train)
        validation_scores = model.predict_proba(validation[0])[:, 1]
        score = RANKING_SCORES[metric](validation[1], validation_scores)
        if best is None or score > best[0]:
            best = (score, {"C": c}, model, validation_scores)
    score, settings, model, validation_scores = best
    return BaselineFit(settings, validation_scores, model.predict_proba(test)[:, 1], score)


SUMMARY_BASELINES = {
    "gbm_summary": fit_gbm,
    "gbm_summary_wide": partial(fit_gbm, settings=WIDE_GBM_SETTINGS),
    "logreg_summary": fit_logistic_regression,
}


def fit_at_the_choice(model: str, chosen: dict) -> Callable[..., BaselineFit]:
    """The fit of `SUMMARY_BASELINES[model]` that a recorded fit's `chosen` settings came from, narrowed to them: each
    GBM setting grows on its own from the seed, so the chosen one alone grows the same trees (the wide grid's hour
    becomes minutes). The logistic regression is fitted whole: its five settings take seconds."""
    fit = SUMMARY_BASELINES[model]
    if "max_leaf_nodes" not in chosen:
        return fit
    return partial(fit, settings=({axis: chosen[axis] for axis in GBM_SETTINGS[0]},))


# A GBM of at least `GBM_ROUND` trees, as MedFuse's small cells train at least `--min_steps` before an epoch is
# kept: the argmax over 1,500 iterations on 20 validation stays kept as few as 2 trees (label_efficiency's
# `gbm_min_iterations` arm, against `gbm` on the same subsets).
fit_gbm_with_a_floor = partial(fit_gbm, min_iterations=GBM_ROUND)
