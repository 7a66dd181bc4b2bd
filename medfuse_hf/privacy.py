"""The privacy guard: what of a hospital's feature statistics may leave it, on every path that uploads them.

Nothing patient-level leaves: statistics of features seen in fewer than `min_patients` patients, or more than half
of whose values one patient gave, are withheld (their quartiles and fences lie close to those patients' own
values), counts are rounded to tens, and a tokenizer that needs such statistics to read a feature is refused before
any upload. Quantile knots are guarded where they are fitted
(`feature_vocabulary.kept_knots`), since a model reads its values through them: a tail knot with fewer than
`MIN_PATIENTS_BEYOND_A_KNOT` patients beyond it is never kept. The tokenizer's own uploads, `push_run`, the
feature-embedding export and `Trainer.push_to_hub` (through `TokenizerPrivacyCallback`) all go through here.
"""

import copy
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .feature_vocabulary import FeatureVocabulary

logger = logging.getLogger(__name__)

COUNT_GRANULARITY = 10
# Statistics of fewer patients than this are never shared, whatever threshold is asked for: the common small-cell
# rule of disclosure control, and the granularity counts are rounded to.
MIN_PATIENTS_FLOOR = 10
DEFAULT_MIN_PATIENTS = 20  # statistics of features seen in fewer patients never leave the hospital by default
# Statistics more than this share of whose values one patient gave are withheld too, however many patients gave the
# rest: their mean, quartiles and knots are that patient's (disclosure control's (1, 50 %) dominance rule).
DOMINANT_SHARE = 0.5


def publishable_vocabulary(
    vocabulary: FeatureVocabulary, repo_id: str, min_patients: int = DEFAULT_MIN_PATIENTS
) -> FeatureVocabulary:
    """A model tokenizer's vocabulary as it may leave the hospital (counts rounded to tens), or a clear refusal when
    it normalises a feature with statistics of fewer than `min_patients` patients: unlike the embeddings, a model's
    tokenizer cannot withhold them, since it needs them to read that feature."""
    guarded, rare = privacy_guarded(vocabulary, min_patients)
    if rare:
        raise ValueError(
            f"refusing to push {repo_id}: its tokenizer normalises {', '.join(rare)} with statistics (quartiles, "
            f"outlier fences) of fewer than {min_patients} patients, or more than half of whose values one patient "
            "gave, close to those patients' own values. Retrain "
            "without these features, or share only the feature embeddings (push_feature_embeddings), which "
            "withhold them."
        )
    return guarded


def privacy_guarded(
    vocabulary: FeatureVocabulary, min_patients: int = DEFAULT_MIN_PATIENTS, drop_rare: bool = False
) -> tuple[FeatureVocabulary, list[str]]:
    """The vocabulary as it may leave the hospital, and its rare features (seen in fewer than `min_patients`
    patients, or more than half of whose values one patient gave): only the vocabulary's own fields, rare features'
    statistics withheld (their quartiles and fences are close to those patients' values) or, with `drop_rare`, the
    features left out, and counts rounded down to tens."""
    if min_patients < MIN_PATIENTS_FLOOR:
        raise ValueError(f"min_patients={min_patients}: statistics of fewer than {MIN_PATIENTS_FLOOR} patients are "
                         "never shared; use a threshold of at least that")
    guarded, rare = FeatureVocabulary(), []
    unchecked = [spec.name for spec in vocabulary if spec.statistics is not None
                 and spec.statistics.largest_patient_count is None]
    if unchecked:  # fitted before the count was kept: the dominance rule cannot be applied to them
        logger.warning("%d features' statistics (e.g. %s) were fitted before their largest patient's share was "
                       "recorded: whether one patient dominates them is unchecked; fit them again to check",
                       len(unchecked), unchecked[:5])
    for spec in vocabulary:
        statistics = spec.statistics
        if statistics is not None and (statistics.num_patients < min_patients
                                       or (statistics.largest_patient_count or 0) > DOMINANT_SHARE * statistics.count):
            rare.append(spec.name)
            if drop_rare:
                continue
            statistics = None
        elif statistics is not None:
            statistics = replace(statistics, count=_coarsen(statistics.count),
                                 num_patients=_coarsen(statistics.num_patients), largest_patient_count=None)
        guarded.add(replace(spec, aliases=list(spec.aliases), statistics=statistics))
    return guarded, rare


def _coarsen(count: int) -> int:
    return int(math.floor(count / COUNT_GRANULARITY) * COUNT_GRANULARITY)


def apply_privacy_guard(tokenizer: Any, repo_id: str, min_patients: int = DEFAULT_MIN_PATIENTS) -> None:
    """Give a `MedFuseTokenizer` the vocabulary that may leave the hospital (`publishable_vocabulary`), or refuse:
    for uploads that save this very object, as `Trainer.push_to_hub` does. Only counts change (rounded to tens), so
    encoding is unchanged."""
    tokenizer.feature_vocabulary = publishable_vocabulary(tokenizer.feature_vocabulary, repo_id, min_patients)


def guarded_copy(tokenizer: Any, repo_id: str, min_patients: int = DEFAULT_MIN_PATIENTS) -> Any:
    """A copy of a tokenizer under the privacy guard, for an upload; the tokenizer keeps its exact statistics."""
    public = copy.copy(tokenizer)
    apply_privacy_guard(public, repo_id, min_patients)
    return public


class TokenizerPrivacyCallback(TrainerCallback):
    """`Trainer.push_to_hub` (and `push_to_hub=True` training) uploads the folders the tokenizer was saved to, exact
    statistics included: transformers gives a processing class no say in it. Passed in `callbacks=`, this applies
    the tokenizer's privacy guard before anything of it is saved for the Hub: at `on_train_begin` when training
    pushes (on every process, before the first checkpoint, so a refusal stops every rank), else at
    `on_push_begin`. The repo then gets counts rounded to tens, and a tokenizer that normalises a feature of fewer
    than `min_patients` patients is refused before any file is sent. The guard changes the tokenizer in place (only
    its counts; encoding is unchanged), so the Trainer's later local saves hold the rounded counts too."""

    def __init__(self, min_patients: int = DEFAULT_MIN_PATIENTS):
        self.min_patients = min_patients

    def on_train_begin(self, args, state, control, processing_class=None, **kwargs) -> None:
        if args.push_to_hub:
            self._guard(args, processing_class)

    def on_push_begin(self, args, state, control, processing_class=None, **kwargs) -> None:
        self._guard(args, processing_class)

    def _guard(self, args, processing_class) -> None:
        if hasattr(processing_class, "feature_vocabulary"):  # a MedFuseTokenizer
            repo_id = args.hub_model_id or Path(args.output_dir).absolute().name  # as the Trainer names the repo
            apply_privacy_guard(processing_class, repo_id, self.min_patients)
