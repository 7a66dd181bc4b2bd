"""Fine-tune MedFuse for a patient-level binary outcome (in-hospital mortality, sepsis, ...).

Runs unchanged on one CPU, several processes or many GPUs:

    python recipes/finetune.py --dataset p12-sample                                   # one process
    accelerate launch recipes/finetune.py --config recipes/configs/p12.yaml            # as `accelerate config` says
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 recipes/finetune.py --dataset p12-sample

`--batch_size` is the global batch: each of N processes takes 1/N of it, so results do not depend on N.
Writes to `--output_dir`: `model/` (best validation checkpoint, loadable with `from_pretrained`), `checkpoints/`
(full training state for `--resume_from_checkpoint`), `test_metrics.json` (with bootstrap 95% intervals),
`test_predictions.csv`, `plots/`, `logs/`, `run_info.json`, a model card (`model/README.md`) and a
privacy-guarded feature-embedding checkpoint (`feature_embeddings/`) for other hospitals.
"""

import argparse
import math
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from torch.utils.data import BatchSampler, DataLoader, WeightedRandomSampler
from transformers import get_scheduler

from medfuse_hf import (
    MedFuseConfig,
    MedFuseForSequenceClassification,
    MedFuseTokenizer,
    align,
    load_feature_embeddings,
    merge,
)
from medfuse_hf.data import LengthGroupedBatchSampler, MedFuseDataCollator, nested_subset, validation_subset
from medfuse_hf.data.splits import MIN_VALIDATION_PER_CLASS
from medfuse_hf.progress import quiet_library_progress_bars
from medfuse_hf.training import (
    JSONLinesTracker,
    binary_metrics,
    load_checkpoint,
    predict,
    read_metrics,
    resolve_checkpoint,
    save_checkpoint,
)
from medfuse_hf.training.cohorts import fit_tokenizer, load_cohort_from_settings, save_strict_tokenizer
from medfuse_hf.training.evaluation import ROW_COLUMN, evaluation_loader, summary_line, write_report
from medfuse_hf.training.loop import end_training, train_epoch
from medfuse_hf.training.metrics import accuracy_threshold
from medfuse_hf.training.plots import save_training_curves
from medfuse_hf.training.publishing import publish_run
from medfuse_hf.training.recipe_config import (
    ENCODER_FIELDS,
    HEAD_FIELDS,
    add_cohort_arguments,
    add_model_arguments,
    add_training_arguments,
    model_overrides,
    parse_with_config,
)
from medfuse_hf.training.run_info import throughput, write_run_info
from medfuse_hf.units import check_units

MODEL_FIELDS = (*ENCODER_FIELDS, *HEAD_FIELDS)  # the encoder's and the head's MedFuseConfig fields


def build_tokenizer(args, train, units) -> tuple[MedFuseTokenizer, dict | None]:
    """The tokenizer fitted on the training split or, when starting from a checkpoint, the checkpoint's: its value
    statistics for the features it knows (what its weights learnt on), followed by the training features it lacks,
    which start fresh with statistics from this training split. Also returns, for `--init_from`, how the cohort's
    features matched the checkpoint's (features only in validation or test are dropped and logged, as
    `fit_tokenizer` does)."""
    fitted = fit_tokenizer(train, args.max_events, args.value_normalization, units)
    if not args.init_from:
        return fitted, None
    pretrained = MedFuseTokenizer.from_pretrained(args.init_from, max_events=args.max_events, unknown_features="drop")
    check_units(pretrained.feature_vocabulary, units, f"--init_from {args.init_from}")
    alignment = align(pretrained.feature_vocabulary, fitted.feature_vocabulary)
    tokenizer = MedFuseTokenizer(merge(pretrained.feature_vocabulary, fitted.feature_vocabulary),
                                 max_events=args.max_events, unknown_features="drop", max_hours=pretrained.max_hours,
                                 padding_side=pretrained.padding_side)
    matching = {"checkpoint_feature_ids": len(pretrained.feature_vocabulary), "matched": len(alignment.matched),
                "new_at_target": len(alignment.only_there), "only_at_source": len(alignment.only_here),
                "new_features": alignment.only_there, "matched_by": dict(Counter(alignment.how.values()))}
    return tokenizer, matching


def static_feature_ids(names: list[str], tokenizer: MedFuseTokenizer) -> list[int]:
    unknown = [name for name in names if name not in tokenizer.feature_vocabulary]
    if unknown:
        raise SystemExit(f"--static_features: {unknown} are not in the tokenizer's vocabulary")
    return [tokenizer.feature_vocabulary.id_of(name) for name in names]


def build_model(args, tokenizer, class_weights, matching: dict | None) -> MedFuseForSequenceClassification:
    overrides = model_overrides(args, MODEL_FIELDS)
    overrides["class_weights"] = class_weights
    if args.static_features:
        overrides["static_feature_ids"] = static_feature_ids(args.static_features, tokenizer)
    if args.init_from:
        model = MedFuseForSequenceClassification.from_pretrained(args.init_from, num_labels=2, **overrides)
        if model.config.vocab_size != matching["checkpoint_feature_ids"]:
            raise SystemExit(f"--init_from {args.init_from}: its model has {model.config.vocab_size} feature ids, its "
                             f"tokenizer {matching['checkpoint_feature_ids']}: "
                             "they were not saved together")
        model.extend_vocabulary(tokenizer.feature_vocabulary)  # the cohort's new features start fresh
        return model
    preset = MedFuseConfig.paper_p12 if args.preset == "paper_p12" else MedFuseConfig
    config = preset(**tokenizer.feature_vocabulary.config_kwargs(), num_labels=2, **overrides)
    return MedFuseForSequenceClassification(config)


def training_function(args: argparse.Namespace) -> dict:
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        cpu=args.cpu,
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        # Each global batch is split across processes, so the optimisation is the same for any process count.
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        log_with=[JSONLinesTracker("logs", output_dir)],
        project_dir=str(output_dir),
    )
    set_seed(args.seed)
    run_info = write_run_info(output_dir, vars(args), accelerator)
    accelerator.init_trackers("logs", config={key: str(value) for key, value in vars(args).items()})

    # ----- data ---------------------------------------------------------------------------------------
    cohort = load_cohort_from_settings(vars(args))
    if cohort.label_column is None:
        raise SystemExit(f"{cohort.description}: no label to train or score on; give --labels and --label_column")
    label = cohort.label_column
    splits = {name: cohort.labelled(name) for name in cohort.splits}
    for name, part in splits.items():
        if len(part) < len(cohort.splits[name]):
            accelerator.print(f"{name}: {len(cohort.splits[name]) - len(part)} patients without {label!r} left out")
    train = splits["train"]
    if args.train_fraction < 1.0:  # the small-target setting of transfer experiments: stratified, seeded, nested
        train = train.select(nested_subset(train[label], args.train_fraction, args.seed))
        accelerator.print(f"training on {len(train)} patients ({args.train_fraction:.0%} of the training split)")
    if args.validation_fraction < 1.0:  # what a small hospital has to choose epochs on: as few, yet both classes
        validation = splits["validation"]
        splits["validation"] = validation.select(validation_subset(validation[label], args.validation_fraction,
                                                                   args.seed))
        accelerator.print(f"validating on {len(splits['validation'])} patients ({args.validation_fraction:.0%} of the "
                          f"validation split, at least {MIN_VALIDATION_PER_CLASS} of each class)")
    positives = int(np.sum(train[label]))
    if len(train) < args.batch_size or positives in (0, len(train)):
        raise SystemExit(f"{cohort.description}: {len(train)} training patients ({positives} positive, "
                         f"--train_fraction {args.train_fraction}); training needs at least --batch_size "
                         f"({args.batch_size}) and both classes")
    tokenizer, matching = build_tokenizer(args, train, cohort.units)
    rate = positives / len(train)
    class_weights = [0.5 / (1 - rate), 0.5 / rate] if args.class_weighting == "balanced" else None

    collate = MedFuseDataCollator(tokenizer, label_column=label, extra_columns=(ROW_COLUMN,))
    train_collate = MedFuseDataCollator(tokenizer, label_column=label, extra_columns=(ROW_COLUMN,),
                                        event_dropout=args.event_dropout)
    lengths = [min(len(features), args.max_events) for features in train["feature"]]
    if args.sampling == "balanced":  # each batch drawn with replacement, deaths as likely as survivals
        weights = torch.tensor([0.5 / rate if y else 0.5 / (1 - rate) for y in train[label]])
        sampler = WeightedRandomSampler(weights, len(train), generator=torch.Generator().manual_seed(args.seed))
        batch_sampler = BatchSampler(sampler, args.batch_size, drop_last=True)
    else:
        batch_sampler = LengthGroupedBatchSampler(lengths, args.batch_size, seed=args.seed, drop_last=True)
    train_loader = DataLoader(train.add_column(ROW_COLUMN, list(range(len(train)))), batch_sampler=batch_sampler,
                              collate_fn=train_collate)
    eval_loaders = {name: evaluation_loader(splits[name], collate, args.eval_batch_size)
                    for name in ("validation", "test")}

    # ----- model and optimisation ---------------------------------------------------------------------
    model = build_model(args, tokenizer, class_weights, matching)
    transferred = None
    if matching is not None:
        transferred = {key: matching[key] for key in ("matched", "new_at_target", "only_at_source")}
        accelerator.print(f"--init_from {args.init_from}: {matching['matched']} of the cohort's features matched the "
                          f"checkpoint's (by {matching['matched_by']}), {matching['new_at_target']} new here, "
                          f"starting fresh: {matching['new_features'][:20]}; {matching['only_at_source']} only in "
                          "the checkpoint")
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
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(batch_sampler) / args.gradient_accumulation_steps)
    # A small cohort still gets a real optimisation budget: its epochs are repeated, and validation (with early
    # stopping) runs every `validate_every` epochs, so it sees at most `num_epochs` validations, as a large one does.
    validate_every = 1
    if args.min_steps > steps_per_epoch * args.num_epochs:
        validate_every = math.ceil(args.min_steps / (steps_per_epoch * args.num_epochs))
        args.num_epochs *= validate_every
        accelerator.print(f"{steps_per_epoch} steps per epoch: up to {args.num_epochs} epochs, validated every "
                          f"{validate_every} (--min_steps {args.min_steps})")
    total_steps = steps_per_epoch * args.num_epochs
    scheduler = get_scheduler(args.lr_scheduler, optimizer, num_warmup_steps=int(args.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    model, optimizer, train_loader, scheduler, eval_loaders["validation"], eval_loaders["test"] = accelerator.prepare(
        model, optimizer, train_loader, scheduler, eval_loaders["validation"], eval_loaders["test"]
    )

    # ----- resume -------------------------------------------------------------------------------------
    loop = {"epoch": 0, "batch": 0, "step": 0, "best": -math.inf, "stale_epochs": 0}
    checkpoint = (resolve_checkpoint(args.resume_from_checkpoint, output_dir / "checkpoints")
                  if args.resume_from_checkpoint else None)
    if checkpoint is not None:
        loop = load_checkpoint(accelerator, checkpoint)
        accelerator.print(f"resumed from {checkpoint}: epoch {loop['epoch']}, batch {loop['batch']}, "
                          f"step {loop['step']}")

    # ----- training -----------------------------------------------------------------------------------
    def reseed(epoch: int) -> None:
        if isinstance(batch_sampler, LengthGroupedBatchSampler):
            batch_sampler.set_epoch(epoch)
        else:
            sampler.generator.manual_seed(args.seed + epoch)

    model.train()
    batches_this_process = 0
    for epoch in range(loop["epoch"], args.num_epochs):
        if loop["stale_epochs"] >= args.patience or (args.max_steps and loop["step"] >= args.max_steps):
            break
        completed, trained = train_epoch(accelerator, model, optimizer, scheduler, train_loader, epoch, loop, args,
                                         output_dir / "checkpoints", reseed)
        batches_this_process += trained
        if not completed:
            break
        if (epoch + 1) % validate_every:
            loop.update(epoch=epoch + 1, batch=0)
            continue

        predictions = predict(model, eval_loaders["validation"], accelerator)
        validation = binary_metrics(predictions["labels"], predictions["scores"])
        accelerator.log({"epoch": epoch, **{f"validation_{k}": v for k, v in validation.items()}}, step=loop["step"])
        accelerator.print(f"epoch {epoch}: validation AUROC {validation['auroc']:.4f}, "
                          f"AUPRC {validation['auprc']:.4f}")
        loop.update(epoch=epoch + 1, batch=0)
        if validation[args.early_stopping_metric] > loop["best"]:
            loop.update(best=validation[args.early_stopping_metric], best_epoch=epoch + 1, stale_epochs=0)
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                accelerator.unwrap_model(model).save_pretrained(output_dir / "model")
                save_strict_tokenizer(tokenizer, output_dir / "model")
        else:
            loop["stale_epochs"] += 1
        if args.checkpoint_every_epoch:
            save_checkpoint(accelerator, output_dir / "checkpoints", loop["step"], loop)

    # ----- test ---------------------------------------------------------------------------------------
    # One number per process that must agree after training: a divergent replica would otherwise go unnoticed.
    checksum = torch.tensor([sum(p.double().sum().item() for p in accelerator.unwrap_model(model).parameters())],
                            dtype=torch.float64, device=accelerator.device)
    accelerator.wait_for_everyone()
    if (output_dir / "model").exists():  # the best validation epoch, not the last
        best = MedFuseForSequenceClassification.from_pretrained(output_dir / "model")
        accelerator.unwrap_model(model).load_state_dict(best.state_dict())
    predictions = predict(model, eval_loaders["test"], accelerator)
    validation_predictions = predict(model, eval_loaders["validation"], accelerator)
    # Accuracy at the cut validation finds best: class weights make 0.5 an arbitrary one.
    threshold = accuracy_threshold(validation_predictions["labels"], validation_predictions["scores"])
    batches_seen = torch.tensor([batches_this_process], device=accelerator.device)
    result = {"num_processes": accelerator.num_processes, "steps": loop["step"], "epochs": loop["epoch"],
              "weights_checksum_by_process": accelerator.gather(checksum).tolist(),
              "batches_by_process": accelerator.gather(batches_seen).tolist(),
              "best_validation": {args.early_stopping_metric: loop["best"], "epoch": loop.get("best_epoch")},
              "git": run_info["git"], "transferred_features": transferred,
              "validation_threshold": threshold,
              "accuracy_at_validation_threshold": binary_metrics(predictions["labels"], predictions["scores"],
                                                                 threshold)["accuracy"],
              **throughput(loop, accelerator)}
    if accelerator.is_main_process:
        result = write_report(predictions, splits["test"], cohort.id_column, output_dir, cohort.description,
                              args.bootstrap_resamples, args.seed, extra=result)
        save_training_curves(read_metrics(output_dir / "logs" / "metrics.jsonl"),
                             output_dir / "plots" / "training_curves.png")
        if (output_dir / "model").exists():
            publish_run(output_dir, accelerator.unwrap_model(model), tokenizer, cohort,
                        f"MedFuse, {cohort.description}",
                        metrics=result["test"], evaluation_context=f"Test split, {result['test_patients']} patients, "
                        f"best validation epoch of {loop['epoch']}.", min_patients=args.min_patients_for_statistics,
                        drop_rare_features=args.drop_rare_features)
        accelerator.print(f"{summary_line(result)} after {loop['epoch']} epochs, {result['train_seconds']:.0f} s of "
                          f"training ({result['events_per_second']:,} events/s); model in {output_dir / 'model'}")
    del model  # before the process group goes: see end_training
    end_training(accelerator)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_cohort_arguments(parser)
    model = add_model_arguments(parser, MODEL_FIELDS)
    model.add_argument("--init_from", help="a saved MedFuse model directory (e.g. from recipes/pretrain.py)")
    model.add_argument("--preset", choices=("default", "paper_p12"), default="default")
    model.add_argument("--static_features", nargs="+", metavar="NAME",
                       help="features that also join the patient vector directly, "
                            "e.g. age gender height icu_type weight")
    train = add_training_arguments(parser, output_dir="outputs/finetune")
    train.add_argument("--eval_batch_size", type=int, default=64)
    train.add_argument("--train_fraction", type=float, default=1.0, help="train on this stratified share of the split")
    train.add_argument("--validation_fraction", type=float, default=1.0,
                       help="validate on this stratified share of the split "
                            f"(at least {MIN_VALIDATION_PER_CLASS} per class)")
    train.add_argument("--min_steps", type=int, default=0,
                       help="raise --num_epochs until training has at least this many optimizer steps (small cohorts)")
    model.add_argument("--init_embeddings_from", help="a feature-embedding checkpoint (folder or Hub repo id)")
    model.add_argument("--match_by", choices=("name", "code", "alias"), default="alias")
    model.add_argument("--freeze_transferred", action="store_true",
                       help="keep everything transferred (identity rows, γ, β, category levels, shared maps) "
                            "exactly as loaded")
    train.add_argument("--event_dropout", type=float, default=0.0,
                       help="augmentation: leave each training event out with this probability "
                            "(never all of a patient's)")
    train.add_argument("--class_weighting", choices=("none", "balanced"), default="balanced")
    train.add_argument("--sampling", choices=("length_grouped", "balanced"), default="length_grouped")
    train.add_argument("--early_stopping_metric", choices=("auprc", "auroc"), default="auprc")
    train.add_argument("--patience", type=int, default=5,
                       help="validations (one per epoch, see --min_steps) without improvement before stopping")
    train.add_argument("--bootstrap_resamples", type=int, default=1000)
    return parser


def main(argv: list[str] | None = None) -> None:
    quiet_library_progress_bars()
    training_function(parse_with_config(build_parser(), argv))


if __name__ == "__main__":
    main()
