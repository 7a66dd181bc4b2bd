"""What a fine-tuning starts from: its tokenizer and its model, fitted afresh or taken from a checkpoint
(`--init_from`, `--init_embeddings_from`), with the guards that keep a start from being silently wrong (a frozen
encoder's untrained parts, classes balanced twice, a checkpoint's normalisation), and what it took over, for the
report. `recipes/finetune.py`'s first step, kept apart so that the recipe reads as training."""

import math
from collections import Counter
from collections.abc import Mapping

import datasets
import torch

from .. import (
    FeatureVocabulary,
    MedFuseConfig,
    MedFuseForSequenceClassification,
    MedFuseTokenizer,
    align,
    load_feature_embeddings,
    merge,
)
from ..feature_tables import FrozenRows
from ..units import check_units, units_assumed_note
from .cohorts import Cohort, cohort_units, feature_names, fit_tokenizer
from .recipe_config import ENCODER_FIELDS, HEAD_FIELDS, model_overrides

MODEL_FIELDS = (*ENCODER_FIELDS, *HEAD_FIELDS)  # the encoder's and the head's MedFuseConfig fields


def build_tokenizer(
    args, splits: Mapping[str, datasets.Dataset], cohort: Cohort
) -> tuple[MedFuseTokenizer, dict | None]:
    """The tokenizer fitted on the training split or, when starting from a checkpoint, the checkpoint's: its value
    statistics for the features it knows (what its weights learnt on), followed by the training features it lacks,
    which start fresh with statistics from this training split. Also returns, for `--init_from`, how the cohort's
    features matched the checkpoint's (features only in validation or test are dropped and logged, as
    `fit_tokenizer` does). `--static_features` are pinned: a long stay keeps the statics its model reads. The
    cohort's `window` is recorded in it (`Cohort.window`), an anchor alone too: predict.py reads new patients
    through it, since hours counted from another time zero shift every time embedding."""
    fitted = fit_tokenizer(splits["train"], args.max_events, args.value_normalization, cohort.units)
    tokenizer, matching = (fitted, None) if not args.init_from else checkpoint_tokenizer(args, fitted, splits, cohort)
    static_feature_ids(args.static_features or [], tokenizer)  # an unknown name: a clear error
    tokenizer.pinned_features = list(dict.fromkeys([*tokenizer.pinned_features, *(args.static_features or [])]))
    if cohort.window:
        tokenizer.event_window = dict(cohort.window)
    return tokenizer, matching


def checkpoint_tokenizer(
    args, fitted: MedFuseTokenizer, splits: Mapping[str, datasets.Dataset], cohort: Cohort
) -> tuple[MedFuseTokenizer, dict]:
    """`--init_from`'s tokenizer with the cohort's new features added, and how the two matched. A probe leaves the
    new features out unless `--new_features learn`: its frozen encoder has learnt nothing of them, and their tokens
    would only be noise (LP-FT's second stage, a full fine-tuning, adds them) unless their own rows learn. The units
    of every feature the splits hold, validation's and test's too (the checkpoint encodes those it knows), are
    checked against the checkpoint's (`check_units`, on `cohort_units`)."""
    pretrained = MedFuseTokenizer.from_pretrained(args.init_from, max_events=args.max_events, unknown_features="drop")
    alignment = align(pretrained.feature_vocabulary, fitted.feature_vocabulary)
    vocabulary = merge(pretrained.feature_vocabulary, fitted.feature_vocabulary)  # the cohort's spellings joined
    # in the merged vocabulary, so that a feature matched by code or alias is checked against its counterpart's unit
    present = set().union(*map(feature_names, splits.values()))
    assumed = check_units(vocabulary, cohort_units(cohort, present), f"{cohort.description} (--init_from "
                          f"{args.init_from})", present, args.assume_model_units,
                          events_without_unit=cohort.events_without_unit)
    leave_out = args.strategy == "probe" and args.new_features == "leave_out"
    if leave_out:
        vocabulary = FeatureVocabulary(spec for spec in vocabulary if spec.name not in alignment.only_there)
    tokenizer = MedFuseTokenizer(vocabulary,
                                 max_events=args.max_events, unknown_features="drop", max_hours=pretrained.max_hours,
                                 padding_side=pretrained.padding_side, pinned_features=pretrained.pinned_features)
    # Per feature, the values are normalised as the checkpoint's weights learnt them, whatever --value_normalization
    # says; it applies to the new features only. Counted, so that the run says so.
    normalizations = (spec.statistics.normalization for spec in map(pretrained.feature_vocabulary.spec_of,
                                                                    alignment.matched) if spec.statistics)
    other = Counter(kept for kept in normalizations if kept != args.value_normalization)
    matching = {"checkpoint_feature_ids": len(pretrained.feature_vocabulary), "matched": len(alignment.matched),
                "new_at_target": len(alignment.only_there), "only_at_source": len(alignment.only_here),
                "new_features": alignment.only_there, "matched_by": dict(Counter(alignment.how.values())),
                "new_features_are": ("left out, the frozen encoder having learnt nothing of them" if leave_out
                                     else "learning their own rows of the frozen encoder" if args.strategy == "probe"
                                     else "starting fresh"),
                "kept_checkpoint_normalization": dict(other),
                "units_assumed": assumed}  # the checkpoint's, for features the table gave no unit for
    return tokenizer, matching


def static_feature_ids(names: list[str], tokenizer: MedFuseTokenizer) -> list[int]:
    unknown = [name for name in names if name not in tokenizer.feature_vocabulary]
    if unknown:
        raise SystemExit(f"--static_features: {unknown} are not in the tokenizer's vocabulary")
    return [tokenizer.feature_vocabulary.id_of(name) for name in names]


def class_weights_for(args, rate: float, config: MedFuseConfig) -> list[float] | None:
    """Inverse-frequency class weights of the loss, unless the classes are balanced another way already: by
    `--sampling balanced`, or by focal loss's own α. `--class_weighting auto`, the default, picks; asking for both
    ways would count a death several times over and leave the risks miscalibrated, so it is refused."""
    elsewhere = ("--sampling balanced" if args.sampling == "balanced"
                 else "focal loss (--focal_alpha)" if config.classification_loss == "focal" else None)
    if args.class_weighting == "balanced" and elsewhere:
        raise SystemExit(f"--class_weighting balanced: {elsewhere} already balances the classes; "
                         "give --class_weighting none (or auto)")
    balanced = args.class_weighting == "balanced" or (args.class_weighting == "auto" and not elsewhere)
    return balancing_weights(rate) if balanced else None


def balancing_weights(rate: float) -> list[float]:
    """Per-class weights (negative, positive) under which each class counts half, for a share `rate` of positives."""
    return [0.5 / (1 - rate), 0.5 / rate]


def weigh_the_classes(config: MedFuseConfig, args, rate: float) -> None:
    """The loss's class weights (`class_weights_for`), and the logit offsets that undo, in the risks, how much
    training over-weighted each class: by those weights, or by `--sampling balanced`, which draws each class half the
    time. Focal loss's α shifts no prior that an offset could take back, so it gets none."""
    config.class_weights = class_weights_for(args, rate, config)
    over_weighted = config.class_weights or (balancing_weights(rate) if args.sampling == "balanced" else None)
    config.logit_offsets = None if over_weighted is None else [-math.log(weight) for weight in over_weighted]


def encoder_weights_missing(model, loading_info: dict) -> list[str]:
    """The encoder's parameters the checkpoint did not hold (a pooling or statics it was not trained with): frozen
    by a probe, they would stay at their random initialisation."""
    return sorted(name for name in loading_info["missing_keys"] if name.startswith(f"{model.base_model_prefix}."))


def build_model(args, tokenizer, rate: float,
                matching: dict | None) -> tuple[MedFuseForSequenceClassification, dict[str, int] | None]:
    """The model, fitted afresh or `--init_from`'s grown to the cohort's vocabulary, and, for a checkpoint, how many
    rows each encoder parameter had as loaded (what `freeze_encoder` keeps)."""
    overrides = model_overrides(args, MODEL_FIELDS)
    if args.static_features:
        overrides["static_feature_ids"] = static_feature_ids(args.static_features, tokenizer)
    if args.init_from:
        # fp32 master weights whatever the checkpoint was saved in: transformers loads a bf16 base as bf16, where
        # AdamW's small steps round away (low precision is --mixed_precision's autocast)
        model, loading_info = MedFuseForSequenceClassification.from_pretrained(
            args.init_from, num_labels=2, output_loading_info=True, dtype=torch.float32, **overrides)
        missing = encoder_weights_missing(model, loading_info)
        if args.strategy != "full" and missing:
            raise SystemExit(f"--strategy {args.strategy} freezes the encoder of {args.init_from}, which has no "
                             f"weights for {len(missing)} of its parameters ({missing[:4]}...): they come from "
                             "--pooling or --static_features other than the checkpoint's, and would stay random. "
                             "Keep the checkpoint's, or fine-tune with --strategy full")
        weigh_the_classes(model.config, args, rate)
        if model.config.vocab_size != matching["checkpoint_feature_ids"]:
            raise SystemExit(f"--init_from {args.init_from}: its model has {model.config.vocab_size} feature ids, its "
                             f"tokenizer {matching['checkpoint_feature_ids']}: "
                             "they were not saved together")
        loaded_rows = {name: _rows(parameter) for name, parameter in model.medfuse.named_parameters()}
        model.extend_vocabulary(tokenizer.feature_vocabulary)  # the cohort's new features start fresh
        return model, loaded_rows
    preset = MedFuseConfig.paper_p12 if args.preset == "paper_p12" else MedFuseConfig
    config = preset(**tokenizer.feature_vocabulary.config_kwargs(), num_labels=2, **overrides)
    weigh_the_classes(config, args, rate)
    return MedFuseForSequenceClassification(config), None


def freeze_encoder(encoder, loaded_rows: dict[str, int]) -> None:
    """A probe's encoder: everything the checkpoint held stays as loaded. Only what the cohort's new features added
    to it (`--new_features learn`: their rows of the per-feature tables, their category levels) learns, so that a
    hospital's own features count without moving what the base learnt."""
    encoder.requires_grad_(False)
    grown = {name: list(range(loaded_rows.get(name, 0))) for name, parameter in encoder.named_parameters()
             if _rows(parameter) > loaded_rows.get(name, 0)}
    for name in grown:
        encoder.get_parameter(name).requires_grad_(True)
    FrozenRows(encoder, grown)


def _rows(parameter) -> int:
    return parameter.shape[0] if parameter.dim() else 1


def model_for(args, tokenizer, rate: float, matching: dict | None, cohort, accelerator) -> tuple:
    """The model to fine-tune (`build_model`, with `--init_embeddings_from` loaded into it, and a probe's encoder
    frozen after that) and what it took over from a checkpoint, for the report. `rate` is the training split's
    share of positives."""
    model, loaded_rows = build_model(args, tokenizer, rate, matching)
    transferred = None
    if matching is not None:
        transferred = {key: matching[key] for key in ("matched", "new_at_target", "only_at_source",
                                                   "kept_checkpoint_normalization", "units_assumed")}
        new = (f"{matching['new_at_target']} new here, {matching['new_features_are']}: "
               f"{matching['new_features'][:20]}" if matching["new_at_target"] else "none new here")
        accelerator.print(f"--init_from {args.init_from}: {matching['matched']} of the cohort's features matched the "
                          f"checkpoint's (by {matching['matched_by']}), {new}; "
                          f"{matching['only_at_source']} only in the checkpoint")
        for normalization, count in matching["kept_checkpoint_normalization"].items():
            applies = (f": --value_normalization {args.value_normalization} applies to the new features only"
                       if matching["new_at_target"] else "")
            accelerator.print(f"{count} matched features keep the checkpoint's {normalization} values, what its "
                              f"weights learnt on{applies}")
        if matching["units_assumed"]:
            accelerator.print(units_assumed_note(matching["units_assumed"]))
    if args.init_embeddings_from:  # another site's published feature embeddings
        report = load_feature_embeddings(model.medfuse, args.init_embeddings_from, tokenizer.feature_vocabulary,
                                         match_by=args.match_by, freeze=args.freeze_transferred)
        accelerator.print(f"feature embeddings from {args.init_embeddings_from}: {report}")
        if not report.matched:
            raise SystemExit(f"{args.init_embeddings_from}: no feature of {cohort.description} matches one of the "
                             f"checkpoint (--match_by {args.match_by}); nothing would be transferred. Map the names "
                             "to canonical ones or widen --match_by")
        transferred = {"matched": len(report.matched), "new_at_target": len(report.new_at_target),
                       "only_at_source": len(report.only_at_source)}
    if args.strategy == "probe":  # what was loaded, from either source, is what stays
        freeze_encoder(model.medfuse, loaded_rows)
    return model, transferred
