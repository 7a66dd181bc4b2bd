"""The privacy guard: what of a hospital's feature statistics may leave it, on every path that uploads them.

Nothing patient-level leaves: statistics of features seen in fewer than `min_patients` patients, or more than half
of whose values one patient gave, are withheld (their quartiles and fences lie close to those patients' own
values), counts are rounded to tens, and a tokenizer that needs such statistics to read a feature is refused before
any upload. Quantile knots are guarded where they are fitted
(`feature_vocabulary.kept_knots`), since a model reads its values through them: a tail knot with fewer than
`MIN_PATIENTS_BEYOND_A_KNOT` patients beyond it is never kept. The tokenizer's own uploads, `push_run`, the
feature-embedding export and `Trainer.push_to_hub` (through `HubPrivacyCallback`) all go through here. So does the
model's training prevalence: a config's class weights and logit offsets give the positive count exactly, and every
upload path of a model refuses them unless `without_exact_prevalence` rounded them.
"""

import copy
import inspect
import logging
import math
import os
from collections import Counter
from contextlib import contextmanager
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
# A fine-tuned config's fields that give its training cohort's positive count (`weigh_the_classes`), and the configs
# (by id, with how many `without_exact_prevalence` blocks hold each) that hold them rounded for an upload: kept here,
# not on the config, whose every attribute is saved.
PREVALENCE_FIELDS = ("class_weights", "logit_offsets")
_ROUNDED_CONFIGS: Counter = Counter()


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
    unchecked = dominance_unchecked(vocabulary)
    if unchecked:
        logger.warning("%d features' statistics (e.g. %s) do not record their largest patient's share (fitted before "
                       "it was kept, or read back from a release): whether one patient dominates them is unchecked; "
                       "fit them again to check",
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


def dominance_unchecked(vocabulary: FeatureVocabulary) -> list[str]:
    """Features whose statistics do not record their largest patient's share (fitted before it was kept, or read
    from a guarded copy, which drops it): the dominance rule cannot be applied to them, only the patient count."""
    return [spec.name for spec in vocabulary
            if spec.statistics is not None and spec.statistics.largest_patient_count is None]


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


@contextmanager
def without_exact_prevalence(model, train_patients: int | None):
    """The model as it may leave the hospital. Balanced class weights give the training cohort's exact positive count,
    with its size on the card, and matter only to training's loss, so a published config goes without them. The
    logit offsets that undo them in the risks, log(2(1 − r)) and log(2r) for a share r of positives
    (`weigh_the_classes`), are the same count as a log: they go for the count rounded to tens, as the privacy guard
    rounds every count (a shift of at most 5 / `train_patients` in the prevalence the risks are calibrated to).
    The exact values are back once the block ends, however it ends; nested blocks keep the rounding to the outer."""
    config = model.config
    kept = {name: getattr(config, name, None) for name in PREVALENCE_FIELDS}
    rounded = (None if kept["logit_offsets"] is None  # refused here, before the config is touched
               else rounded_prevalence_offsets(kept["logit_offsets"], train_patients))
    try:
        config.class_weights, config.logit_offsets = None, rounded
        _ROUNDED_CONFIGS[id(config)] += 1
        yield model
    finally:
        for name, value in kept.items():
            setattr(config, name, value)
        _ROUNDED_CONFIGS[id(config)] -= 1
        if not _ROUNDED_CONFIGS[id(config)]:
            del _ROUNDED_CONFIGS[id(config)]


def refuse_exact_prevalence(config: Any, repo_id: str) -> None:
    """Refuse an upload of a config (a model's, or alone) that gives its training cohort's exact positive count
    (class weights, or logit offsets not rounded by `without_exact_prevalence`): transformers' own `push_to_hub`, a
    `save_pretrained(push_to_hub=True)` or a Trainer's push would send them as they are."""
    exact = [name for name in PREVALENCE_FIELDS if getattr(config, name, None) is not None]
    if exact and id(config) not in _ROUNDED_CONFIGS:
        raise ValueError(
            f"refusing to push {repo_id}: its config's {' and '.join(exact)} give the training cohort's exact "
            "positive count. Push it with push_run (recipes/publish.py --push_to_hub), or inside `with "
            "medfuse_hf.privacy.without_exact_prevalence(model, train_patients):`, which drops the class weights "
            "and rounds the offsets to a positive count in tens for the upload"
        )


class RefusesExactPrevalence:
    """For a MedFuse config and model: transformers' `push_to_hub` and `save_pretrained(push_to_hub=True)`, refused
    while the config gives the training cohort's exact positive count (`refuse_exact_prevalence`)."""

    def push_to_hub(self, repo_id: str, **kwargs) -> Any:
        refuse_exact_prevalence(getattr(self, "config", self), repo_id)
        return super().push_to_hub(repo_id, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> Any:
        given = inspect.signature(super().save_pretrained).bind(save_directory, *args, **kwargs).arguments
        if given.get("push_to_hub"):  # as transformers names the repo
            repo_id = given.get("kwargs", {}).get("repo_id", os.path.basename(os.path.normpath(save_directory)))
            refuse_exact_prevalence(getattr(self, "config", self), repo_id)
        return super().save_pretrained(save_directory, *args, **kwargs)


def rounded_prevalence_offsets(offsets: list[float], train_patients: int | None) -> list[float]:
    if train_patients is None:
        raise ValueError("a model with logit offsets is published with its training patients' count, to round them")
    if len(offsets) != 2:
        raise ValueError(f"logit offsets of {len(offsets)} classes: only a binary model's are published")
    if train_patients < 20:
        raise ValueError(f"{train_patients} training patients: too few to publish a prevalence rounded to tens")
    positives = round(math.exp(offsets[1]) / 2 * train_patients, -1)
    share = min(max(positives, 10), train_patients - 10) / train_patients
    return [math.log(2 * (1 - share)), math.log(2 * share)]


class HubPrivacyCallback(TrainerCallback):
    """`Trainer.push_to_hub` (and `push_to_hub=True` training) uploads the folders the model and tokenizer were saved
    to as they are: transformers gives neither a say in it. Passed in `callbacks=`, this guards both before anything
    of them is saved for the Hub: at `on_train_begin` when training pushes (on every process, before the first
    checkpoint, so a refusal stops every rank), else at `on_push_begin`.

    - The tokenizer gets counts rounded to tens, and one that normalises a feature of fewer than `min_patients`
      patients is refused. The guard changes it in place (only its counts; encoding is unchanged), so the Trainer's
      later local saves hold the rounded counts too. A MedFuse model's Trainer without a processing class saves its
      data collator's tokenizer: that one is guarded (`collators_tokenizer`).
    - A model whose config gives the training cohort's exact positive count is refused (`refuse_exact_prevalence`):
      push the trained model inside `with without_exact_prevalence(trainer.model, train_patients):`."""

    def __init__(self, min_patients: int = DEFAULT_MIN_PATIENTS):
        self.min_patients = min_patients

    def on_train_begin(self, args, state, control, processing_class=None, model=None, train_dataloader=None,
                       **kwargs) -> None:
        if args.push_to_hub and args.hub_strategy != "end":  # "end" pushes nothing until a save_model
            try:
                refuse_exact_prevalence(getattr(model, "config", None), repo_id_of(args))
            except ValueError as refusal:
                raise ValueError(f"{refusal}. Training with push_to_hub=True uploads its checkpoints with the "
                                 "class weights its loss needs: train without it (or with hub_strategy='end'), "
                                 "then push the trained model that way") from None
            self._guard_tokenizer(args, processing_class, model, train_dataloader)

    def on_push_begin(self, args, state, control, processing_class=None, model=None, train_dataloader=None,
                      **kwargs) -> None:
        refuse_exact_prevalence(getattr(model, "config", None), repo_id_of(args))  # before the tokenizer changes
        self._guard_tokenizer(args, processing_class, model, train_dataloader)

    def _guard_tokenizer(self, args, processing_class, model, train_dataloader) -> None:
        """The tokenizer the Trainer saves for the Hub, guarded in place (`apply_privacy_guard`)."""
        repo_id = repo_id_of(args)
        tokenizer = processing_class
        if tokenizer is None and getattr(getattr(model, "config", None), "model_type", None) == "medfuse":
            tokenizer = collators_tokenizer(train_dataloader, repo_id)
        if hasattr(tokenizer, "feature_vocabulary"):  # a MedFuseTokenizer
            apply_privacy_guard(tokenizer, repo_id, self.min_patients)


def repo_id_of(args: Any) -> str:
    """The repo a Trainer pushes to, as it names it."""
    return args.hub_model_id or Path(args.output_dir).absolute().name


def collators_tokenizer(train_dataloader: Any, repo_id: str) -> Any:
    """The tokenizer a Trainer without a processing class saves for the Hub: its data collator's
    (`Trainer._save`). Callbacks are not given the collator, so it is reached through the training loader's
    collate function; a push before any training, where there is no loader, is refused rather than left unguarded."""
    if train_dataloader is None:
        raise ValueError(f"refusing to push {repo_id}: a Trainer without processing_class uploads its data "
                         "collator's tokenizer, which HubPrivacyCallback cannot reach before training: pass "
                         "processing_class=tokenizer")
    collator = train_dataloader.collate_fn
    collator = getattr(collator, "data_collator", collator)  # inside transformers' RemoveColumnsCollator
    return getattr(collator, "tokenizer", None)


TokenizerPrivacyCallback = HubPrivacyCallback  # its name before it guarded the model too: code written for it runs
