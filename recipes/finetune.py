"""Fine-tune MedFuse for a patient-level binary outcome (in-hospital mortality, sepsis, ...).

Runs unchanged on one CPU, several processes or many GPUs:

    python recipes/finetune.py --dataset p12-sample                                   # one process
    accelerate launch recipes/finetune.py --config recipes/configs/p12.yaml            # as `accelerate config` says
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 recipes/finetune.py --dataset p12-sample

`--batch_size` is the global batch: each of N processes takes 1/N of it, so results do not depend on N.
Writes to `--output_dir`: `model/` (best validation checkpoint, loadable with `from_pretrained`), `checkpoints/`
(full training state for `--resume_from_checkpoint`), `test_metrics.json` (with bootstrap 95% intervals),
`test_predictions.csv`, `plots/`, `logs/`, `run_info.json`, `split.json` (each split's patient ids), a model card
(`model/README.md`) and a privacy-guarded feature-embedding checkpoint (`feature_embeddings/`) for other hospitals.
"""

import argparse
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import BatchSampler, DataLoader, WeightedRandomSampler

from medfuse_hf import MedFuseConfig, MedFuseTokenizer
from medfuse_hf.data import CountedDraws, LengthGroupedBatchSampler, MedFuseDataCollator, RowsWithDraws
from medfuse_hf.data.splits import MIN_VALIDATION_PER_CLASS
from medfuse_hf.progress import quiet_library_progress_bars
from medfuse_hf.training import binary_metrics, predict, read_metrics
from medfuse_hf.training.checkpointing import (
    check_resumed_settings,
    checkpoint_to_resume,
    refuse_other_settings,
    run_tokenizer,
)
from medfuse_hf.training.cohorts import Cohort, load_cohort_from_settings, save_strict_tokenizer, training_splits
from medfuse_hf.training.evaluation import (
    ROW_COLUMN,
    evaluation_loader,
    summary_line,
    with_row_numbers,
    write_report,
)
from medfuse_hf.training.frozen_encoder import memoise_pooled_outputs
from medfuse_hf.training.loop import (
    LoopState,
    end_training,
    optimizer_and_scheduler,
    refuse_an_earlier_run,
    restore_kept_weights,
    resume,
    start_run,
    train_epoch,
)
from medfuse_hf.training.metrics import accuracy_threshold
from medfuse_hf.training.plots import save_training_curves
from medfuse_hf.training.publishing import publish_run
from medfuse_hf.training.recipe_config import (
    add_cohort_arguments,
    add_model_arguments,
    add_training_arguments,
    non_negative_int,
    parse_with_config,
    positive_int,
    recipe_parser,
    saved_feature_embeddings,
    saved_model,
)
from medfuse_hf.training.run_info import read_run_settings, throughput
from medfuse_hf.training.run_split import record_split, refuse_another_split
from medfuse_hf.training.starting_point import MODEL_FIELDS, balancing_weights, build_tokenizer, model_for

# Settings a fine-tuning run may resume under changed, besides checkpointing's own: `--max_steps` only stops it early
# (the epochs set its schedule).
RESUMABLE_IN_FINETUNING = frozenset({"max_steps"})


def training_loader(args, train, label: str, rate: float, tokenizer) -> tuple[DataLoader, Callable[[int], None]]:
    """Batches of the training split (length-grouped, or class-balanced with `--sampling balanced`) and how to set
    them for an epoch: their order and the events `--event_dropout` leaves out, a function of (seed, epoch) alone,
    so a resumed run sees the same batches. `rate` is the split's share of positives."""
    collate = MedFuseDataCollator(tokenizer, label_column=label, extra_columns=(ROW_COLUMN,),
                                  event_dropout=args.event_dropout, row_key=ROW_COLUMN, seed=args.seed)
    if args.sampling == "balanced":  # each batch drawn with replacement, deaths as likely as survivals
        weights = torch.tensor(balancing_weights(rate))[torch.tensor(train[label], dtype=torch.long)]
        sampler = WeightedRandomSampler(weights, len(train), generator=torch.Generator().manual_seed(args.seed))
        # a patient drawn twice loses other events each time (`CountedDraws`)
        batch_sampler = CountedDraws(BatchSampler(sampler, args.batch_size, drop_last=True))
        rows = RowsWithDraws(with_row_numbers(train))

        def set_order(epoch: int) -> None:
            sampler.generator.manual_seed(args.seed + epoch)
    else:
        lengths = [min(len(features), args.max_events) for features in train["feature"]]
        batch_sampler = LengthGroupedBatchSampler(lengths, args.batch_size, seed=args.seed, drop_last=True)
        set_order, rows = batch_sampler.set_epoch, with_row_numbers(train)

    def set_epoch(epoch: int) -> None:
        set_order(epoch)
        collate.set_epoch(epoch)

    loader = DataLoader(rows, batch_sampler=batch_sampler, collate_fn=collate)
    return loader, set_epoch


def epoch_budget(args, steps_per_epoch: int, accelerator) -> tuple[int, int]:
    """(epochs, validate every): a small cohort still gets `--min_steps` of optimisation, its epochs repeated and
    validated (with early stopping) every few, so it sees at most `--num_epochs` validations, as a large one does."""
    if args.num_epochs == 0 or args.min_steps <= steps_per_epoch * args.num_epochs:
        return args.num_epochs, 1
    validate_every = math.ceil(args.min_steps / (steps_per_epoch * args.num_epochs))
    accelerator.print(f"{steps_per_epoch} steps per epoch: up to {args.num_epochs * validate_every} epochs, "
                      f"validated every {validate_every} (--min_steps {args.min_steps})")
    return args.num_epochs * validate_every, validate_every


def weight_average(args, accelerator, model) -> AveragedModel | None:
    """With `--weight_averaging ema`, an exponential moving average of the weights (`torch.optim.swa_utils`),
    updated after every optimizer step, saved with the checkpoints; it is what is validated and kept."""
    if args.weight_averaging == "none":
        return None
    averaged = AveragedModel(accelerator.unwrap_model(model), multi_avg_fn=get_ema_multi_avg_fn(args.ema_decay))
    accelerator.register_for_checkpointing(averaged)
    return averaged


@dataclass
class PreparedRun:
    """What one fine-tuning run trains, validates and reports on, the model, optimizer and loaders prepared by
    Accelerate; `num_epochs` and `validate_every` as `epoch_budget` sets them."""

    args: argparse.Namespace
    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_loader: DataLoader
    reseed: Callable[[int], None]
    eval_loaders: dict[str, DataLoader]
    num_epochs: int
    validate_every: int
    tokenizer: MedFuseTokenizer


def fit(run: PreparedRun, start: tuple[Path, float] | None = None) -> tuple[LoopState, int]:
    """Train, validate, keep the best validation epoch in `<output_dir>/model` and stop early; resumable. Returns
    where the run ended and how many batches this process trained on. `start`, the model this run starts from and
    its validation figure, counts as epoch 0: an epoch is kept only if it beats it, else the start is."""
    args, accelerator, model = run.args, run.accelerator, run.model
    output_dir = Path(args.output_dir)
    averaged = weight_average(args, accelerator, model)
    kept = accelerator.unwrap_model(model) if averaged is None else averaged.module  # validated and saved
    after_step = None if averaged is None else (lambda: averaged.update_parameters(accelerator.unwrap_model(model)))
    state = resume(accelerator, args)
    if start is not None and state.step == 0:
        start_model, state.best = start
        state.best_epoch = 0
        if accelerator.is_main_process:
            shutil.copytree(start_model, output_dir / "model", dirs_exist_ok=True)
        accelerator.wait_for_everyone()

    def training_mode() -> None:  # a probe reads frozen features: no dropout in the encoder
        model.train()
        if args.strategy == "probe":
            accelerator.unwrap_model(model).medfuse.eval()

    def validate(epoch: int) -> None:
        """Score `epoch` (counted from 0) on validation; the best yet is kept in `<output_dir>/model`."""
        predictions = predict(model if averaged is None else kept, run.eval_loaders["validation"], accelerator)
        training_mode()
        validation = binary_metrics(predictions["labels"], predictions["scores"])
        accelerator.log({"epoch": epoch, **{f"validation_{k}": v for k, v in validation.items()}}, step=state.step)
        accelerator.print(f"epoch {epoch + 1}: validation AUROC {validation['auroc']:.4f}, "  # as test_metrics counts
                          f"AUPRC {validation['auprc']:.4f}")
        if state.record_validation(validation[args.early_stopping_metric], epoch):
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                kept.save_pretrained(output_dir / "model")
                save_strict_tokenizer(run.tokenizer, output_dir / "model")

    training_mode()
    batches_this_process = 0
    for epoch in range(state.epoch, run.num_epochs):
        if state.stale_epochs >= args.patience or (args.max_steps and state.step >= args.max_steps):
            break
        completed, trained = train_epoch(accelerator, model, run.optimizer, run.scheduler, run.train_loader, epoch,
                                         state, args, run.reseed, after_step)
        batches_this_process += trained
        if not completed:
            break
        state.epoch, state.batch = epoch + 1, 0
        if (epoch + 1) % run.validate_every == 0:
            validate(epoch)
        if args.checkpoint_every_epoch:  # validated or not: a kill loses at most the epoch under way
            state.save(accelerator, args)
    if state.best_epoch is None:  # stopped before any validation (--max_steps, --num_epochs 0): validate it anyway
        validate(state.epoch if state.batch else state.epoch - 1)  # the epoch under way, else the last (0: none)
    return state, batches_this_process


def test_and_report(run: PreparedRun, state: LoopState, batches_this_process: int, run_info: dict,
                    transferred: dict | None, cohort, splits: dict) -> dict:
    """Score the test split with the best validation epoch's weights: metrics with intervals, predictions, plots,
    the model card and the feature embeddings (`<output_dir>`), and the process checks of a distributed run."""
    args, accelerator, model, eval_loaders = run.args, run.accelerator, run.model, run.eval_loaders
    output_dir = Path(args.output_dir)
    # One number per process that must agree after training: a divergent replica would otherwise go unnoticed.
    checksum = torch.tensor([sum(p.double().sum().item() for p in accelerator.unwrap_model(model).parameters())],
                            dtype=torch.float64, device=accelerator.device)
    accelerator.wait_for_everyone()
    if (output_dir / "model").exists():  # the best validation epoch, not the last
        restore_kept_weights(accelerator, model, output_dir / "model")
    predictions = predict(model, eval_loaders["test"], accelerator)
    validation_predictions = predict(model, eval_loaders["validation"], accelerator)
    # Accuracy at the cut validation finds best: class weights make 0.5 an arbitrary one.
    threshold = accuracy_threshold(validation_predictions["labels"], validation_predictions["scores"])
    batches_seen = torch.tensor([batches_this_process], device=accelerator.device)
    result = {"num_processes": accelerator.num_processes, "steps": state.step, "epochs": state.epoch,
              "weights_checksum_by_process": accelerator.gather(checksum).tolist(),
              "batches_by_process": accelerator.gather(batches_seen).tolist(),
              "best_validation": {args.early_stopping_metric: state.best, "epoch": state.best_epoch},
              "git": run_info["git"], "git_at_start": run_info["git_at_start"], "transferred_features": transferred,
              "validation_threshold": threshold,
              "accuracy_at_validation_threshold": binary_metrics(predictions["labels"], predictions["scores"],
                                                                 threshold)["accuracy"],
              **throughput(state, accelerator)}
    if accelerator.is_main_process:
        result = write_report(predictions, splits["test"], cohort.id_column, output_dir, cohort.description,
                              args.bootstrap_resamples, args.seed, extra=result)
        save_training_curves(read_metrics(output_dir / "logs" / "metrics.jsonl"),
                             output_dir / "plots" / "training_curves.png")
        if (output_dir / "model").exists():
            publish_run(output_dir, accelerator.unwrap_model(model), run.tokenizer, cohort,
                        f"MedFuse, {cohort.description}",
                        metrics=result["test"], evaluation_context=f"Test split, {result['test_patients']} patients, "
                        f"best validation epoch of {state.epoch}.", min_patients=args.min_patients_for_statistics,
                        drop_rare_features=args.drop_rare_features, splits=splits)
        epochs = f"{state.epoch} epoch" + "s" * (state.epoch != 1)
        accelerator.print(f"{summary_line(result)} after {epochs}, {result['train_seconds']:.0f} s of "
                          f"training ({result['events_per_second']:,} events/s); model in {output_dir / 'model'}")
    return result


def report_kept_start(run: PreparedRun, state: LoopState, start_model: Path) -> dict:
    """The start kept (no epoch beat it on validation) where this run's model cannot hold its weights: LP-FT's probe
    that left the cohort's new features out, which this stage added. `fit` copied it into `<output_dir>/model`
    with its own tokenizer; its test figures, predictions, plots and feature embeddings are its own run's (the same
    test split), with this run's training counts."""
    args, accelerator = run.args, run.accelerator
    output_dir, tested = Path(args.output_dir), start_model.parent
    counts = throughput(state, accelerator)
    if accelerator.is_main_process:
        for name in ("test_predictions.csv", "plots", "feature_embeddings"):
            if (tested / name).is_dir():
                shutil.copytree(tested / name, output_dir / name, dirs_exist_ok=True)
            elif (tested / name).exists():
                shutil.copyfile(tested / name, output_dir / name)
        report = {**json.loads((tested / "test_metrics.json").read_text()), "steps": state.step, "epochs": state.epoch,
                  "best_validation": {args.early_stopping_metric: state.best, "epoch": 0},
                  # relative to the run (the probe's `probe/model`): the report is released with it
                  "kept_start": str(start_model.absolute().relative_to(output_dir.absolute())), **counts}
        (output_dir / "test_metrics.json").write_text(json.dumps(report, indent=2) + "\n")
        accelerator.print(f"no epoch beat the start on validation: {start_model} is kept, as its run tested it "
                          f"({summary_line(report)}); model in {output_dir / 'model'}")
    accelerator.wait_for_everyone()
    return json.loads((output_dir / "test_metrics.json").read_text())


def lp_ft(args: argparse.Namespace) -> dict:
    """LP-FT (Kumar et al., "Fine-Tuning can Distort Pretrained Features", ICLR 2022): first fit the head on the
    frozen checkpoint (a probe run in `<output_dir>/probe`), then fine-tune everything from the probe's model, head
    included, at `--lpft_learning_rate_scale` times `--learning_rate`. Each stage is a run of its own, resumable on its
    own; a finished probe is not run again. The probe counts as the full stage's epoch 0: with few labels, fine-tuning
    can only lose what the probe found, so the probe is kept unless an epoch beats it on validation. The cohort is
    read once for both stages: a hospital's export is read anew each time it is loaded, minutes at scale."""
    probe_dir = Path(args.output_dir) / "probe"
    probe_args = argparse.Namespace(**{**vars(args), "strategy": "probe", "output_dir": str(probe_dir),
                                       "num_epochs": args.probe_epochs or args.num_epochs})
    scaled = args.learning_rate * args.lpft_learning_rate_scale
    full_args = argparse.Namespace(**{**vars(args), "strategy": "full", "init_from": str(probe_dir / "model"),
                                      "learning_rate": scaled})
    probed = (probe_dir / "test_metrics.json").exists() and not args.overwrite_output_dir
    if probed:
        # a probe from before --new_features left the new features out
        started = {"new_features": "leave_out", **read_run_settings(probe_dir)}
        refuse_other_settings(started, probe_args, probe_dir)  # a probe of another start is not this run's stage
    for stage_args in (probe_args, full_args):  # refused before the cohort is read and the probe trains
        check_resumed_settings(stage_args, RESUMABLE_IN_FINETUNING)
        refuse_an_earlier_run(stage_args)
    cohort = load_cohort_from_settings(vars(args))
    if not probed:
        training_function(probe_args, cohort)
    else:
        refuse_another_split(probe_dir, cohort, "the full stage would start from a probe trained on other patients")
    probe = json.loads((probe_dir / "test_metrics.json").read_text())["best_validation"]
    metric = args.early_stopping_metric
    PartialState().print(f"LP-FT: the probe's validation {metric} is {probe[metric]:.4f}; now everything is "
                         f"fine-tuned from it at {scaled:g}")
    return training_function(full_args, cohort, start=(probe_dir / "model", probe[metric]))


def training_function(args: argparse.Namespace, cohort: Cohort | None = None,
                      start: tuple[Path, float] | None = None) -> dict:
    """One fine-tuning run, on `cohort` if it is loaded already (else the one the flags name); `start` as in `fit`."""
    accelerator, run_info = start_run(args, may_change=RESUMABLE_IN_FINETUNING)

    # ----- data ---------------------------------------------------------------------------------------
    if cohort is None:
        cohort = load_cohort_from_settings(vars(args))
    if cohort.label_column is None:
        raise SystemExit(f"{cohort.description}: no label to train or score on; give --labels and --label_column")
    splits = training_splits(args, cohort, accelerator.print)
    record_split(args.output_dir, cohort, vars(args), resuming=checkpoint_to_resume(args) is not None,
                 writes=accelerator.is_main_process, say=accelerator.print)
    train, label = splits["train"], cohort.label_column
    tokenizer, matching = build_tokenizer(args, splits, cohort)
    tokenizer = run_tokenizer(args, tokenizer, accelerator.is_main_process)
    rate = float(np.mean(train[label]))
    train_loader, reseed = training_loader(args, train, label, rate, tokenizer)
    collate = MedFuseDataCollator(tokenizer, label_column=label, extra_columns=(ROW_COLUMN,))
    eval_loaders = {name: evaluation_loader(splits[name], collate, args.eval_batch_size)
                    for name in ("validation", "test")}

    # ----- model and optimisation ---------------------------------------------------------------------
    model, transferred = model_for(args, tokenizer, rate, matching, cohort, accelerator)
    frozen = not any(parameter.requires_grad for parameter in model.medfuse.parameters())  # a probe's, as it was
    if frozen and not args.event_dropout:  # the same tokens every epoch: each patient is encoded once
        memoise_pooled_outputs(model.medfuse)
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    num_epochs, validate_every = epoch_budget(args, steps_per_epoch, accelerator)
    optimizer, scheduler = optimizer_and_scheduler(model, args, steps_per_epoch * num_epochs)
    model, optimizer, train_loader, scheduler, eval_loaders["validation"], eval_loaders["test"] = accelerator.prepare(
        model, optimizer, train_loader, scheduler, eval_loaders["validation"], eval_loaders["test"]
    )

    # ----- training and test --------------------------------------------------------------------------
    run = PreparedRun(args, accelerator, model, optimizer, scheduler, train_loader, reseed, eval_loaders,
                      num_epochs, validate_every, tokenizer)
    state, batches = fit(run, start)
    if start is not None and state.best_epoch == 0 and (
            MedFuseConfig.from_pretrained(start[0]).vocab_size != accelerator.unwrap_model(model).config.vocab_size):
        result = report_kept_start(run, state, start[0])
    else:
        result = test_and_report(run, state, batches, run_info, transferred, cohort, splits)
    del model, run  # before the process group goes: see end_training
    end_training(accelerator)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = recipe_parser(__doc__)
    add_cohort_arguments(parser, for_a_model=True)
    model = add_model_arguments(parser, MODEL_FIELDS)
    model.add_argument("--init_from", type=saved_model,
                       help="a saved MedFuse model folder (e.g. a recipes/pretrain.py run's model/) or Hub repo id")
    model.add_argument("--preset", choices=("default", "paper_p12"), default="default",
                       help="paper_p12: the authors' dropouts and focal loss")
    model.add_argument("--static_features", nargs="+", metavar="NAME",
                       help="features that also join the patient vector directly, "
                            "e.g. age gender height icu_type weight")
    train = add_training_arguments(parser, output_dir="outputs/finetune")
    train.add_argument("--eval_batch_size", type=positive_int, default=64,
                       help="patients scored at a time in validation")
    train.add_argument("--train_fraction", type=float, default=1.0, help="train on this stratified share of the split")
    train.add_argument("--validation_fraction", type=float, default=1.0,
                       help="validate on this stratified share of the split "
                            f"(at least {MIN_VALIDATION_PER_CLASS} per class)")
    train.add_argument("--min_steps", type=non_negative_int, default=0,
                       help="raise --num_epochs until training has at least this many optimizer steps (small cohorts)")
    model.add_argument("--init_embeddings_from", type=saved_feature_embeddings,
                       help="a feature-embedding checkpoint (folder or Hub repo id)")
    model.add_argument("--match_by", choices=("name", "code", "alias"), default="alias",
                       help="how --init_embeddings_from's features are matched to the cohort's: by canonical name, "
                            "also by code, or also by alias (--init_from always matches all three ways)")
    model.add_argument("--freeze_transferred", action="store_true",
                       help="keep everything transferred (identity rows, γ, β, category levels, shared maps) "
                            "exactly as loaded")
    train.add_argument("--event_dropout", type=float, default=0.0,
                       help="augmentation: leave each training event out with this probability "
                            "(never all of a patient's)")
    train.add_argument("--class_weighting", choices=("auto", "none", "balanced"), default="auto",
                       help="balanced: inverse-frequency weights in the loss; auto: balanced unless --sampling "
                            "balanced or focal loss balance the classes already")
    train.add_argument("--sampling", choices=("length_grouped", "balanced"), default="length_grouped",
                       help="batches of similar lengths, or drawn with the classes equally likely")
    train.add_argument("--early_stopping_metric", choices=("auprc", "auroc"), default="auprc")
    train.add_argument("--patience", type=positive_int, default=5,
                       help="validations (one per epoch, see --min_steps) without improvement before stopping")
    train.add_argument("--bootstrap_resamples", type=positive_int, default=1000,
                       help="for the test metrics' 95%% intervals")
    train.add_argument("--weight_averaging", choices=("none", "ema"), default="none",
                       help="validate and keep an exponential moving average of the weights instead of the weights")
    train.add_argument("--ema_decay", type=float, default=0.999, help="--weight_averaging ema: weight of the past")
    strategy = parser.add_argument_group("fine-tuning strategy (from --init_from)")
    strategy.add_argument("--strategy", choices=("full", "probe", "lp-ft"), default="full",
                          help="full: train everything; probe: only the classification head, on the frozen "
                               "checkpoint; lp-ft: a probe, then everything from the probe's head at a lower rate")
    strategy.add_argument("--new_features", choices=("leave_out", "learn"), default="leave_out",
                          help="probe, lp-ft: the cohort's features the checkpoint lacks. leave_out: the frozen "
                               "encoder never learnt them; learn: their own rows of its tables train with the head, "
                               "all else frozen")
    strategy.add_argument("--probe_epochs", type=positive_int,
                          help="lp-ft: epochs of the probe stage (default --num_epochs)")
    strategy.add_argument("--lpft_learning_rate_scale", type=float, default=0.1,
                          help="lp-ft: the full stage's learning rate, as a share of --learning_rate")
    return parser


def main(argv: list[str] | None = None) -> None:
    quiet_library_progress_bars()
    parser = build_parser()
    args = parse_with_config(parser, argv)
    if args.strategy != "full" and not args.init_from:
        parser.error(f"--strategy {args.strategy} starts from a checkpoint: give --init_from")
    if args.init_from and args.preset != "default":
        parser.error(f"--preset {args.preset} builds a model afresh; --init_from {args.init_from} brings its own "
                     "config (set its fields with their own flags)")
    if args.match_by != "alias" and not args.init_embeddings_from:
        parser.error(f"--match_by {args.match_by} says how --init_embeddings_from matches features; give it, or "
                     "leave --match_by out")
    if args.freeze_transferred and not args.init_embeddings_from:
        parser.error("--freeze_transferred keeps what --init_embeddings_from loads as loaded; --init_from "
                     "fine-tunes the whole checkpoint (--strategy probe freezes its encoder)")
    if args.assume_model_units and not args.init_from:
        parser.error("--assume_model_units reads a table in the units of the checkpoint it starts from; a model "
                     "trained afresh learns the table's values as they are: give --init_from, or leave it out")
    if args.new_features != "leave_out" and args.strategy == "full":
        parser.error("--new_features says what a probe (--strategy probe or lp-ft) does with the cohort's features "
                     "the checkpoint lacks; --strategy full learns them with everything else")
    lp_ft(args) if args.strategy == "lp-ft" else training_function(args)


if __name__ == "__main__":
    main()
