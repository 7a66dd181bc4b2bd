"""Self-supervised pretraining of MedFuse on a cohort without labels, so large unlabeled cohorts teach the feature
embeddings and the encoder: `--objective forecasting` forecasts each feature's value after a random cut-off from the
events before it (STraTS' task); `--objective masked_values` hides a share of the numeric values and predicts them
from the rest of the stay (a token-level task).

    python recipes/pretrain.py --dataset p19 --data_dir ../shared/data/physionet2019 --hospital A
    accelerate launch recipes/pretrain.py --parquet_shards "cohort/*.parquet" --data_description "our ICU, 2015-2024" \
        --validation_shards "cohort/validation/*.parquet" --patience 2 --num_epochs 10   # larger than memory

Writes `model/` (a `MedFuseForPreTraining` with its tokenizer and model card: pass it to
`recipes/finetune.py --init_from`), `feature_embeddings/` (privacy-guarded, for other hospitals), `checkpoints/`,
`logs/` and `run_info.json`. For supervised pretraining on a source task, run
`recipes/finetune.py` on the source cohort and fine-tune from its `model/`.
"""

import argparse
import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device
from torch.utils.data import DataLoader

from medfuse_hf import MedFuseConfig, MedFuseForPreTraining, MedFuseTokenizer
from medfuse_hf.data import ForecastingCollator, LengthGroupedBatchSampler, LengthGroupedStream, MaskedValueCollator
from medfuse_hf.data.long_format import matching_files
from medfuse_hf.progress import quiet_library_progress_bars
from medfuse_hf.training.checkpointing import checkpoint_to_resume, run_tokenizer
from medfuse_hf.training.cohorts import (
    cohort_units,
    first_patients,
    fit_tokenizer,
    held_out_patients,
    save_strict_tokenizer,
    streaming_patients,
)
from medfuse_hf.training.evaluation import ROW_COLUMN, with_row_numbers
from medfuse_hf.training.loop import (
    end_training,
    optimizer_and_scheduler,
    restore_kept_weights,
    resume,
    start_run,
    train_epoch,
)
from medfuse_hf.training.pretraining import OBJECTIVES, pretraining_cohort, publish_pretraining
from medfuse_hf.training.recipe_config import (
    ENCODER_FIELDS,
    add_cohort_arguments,
    add_model_arguments,
    add_training_arguments,
    boolean,
    existing_shards,
    model_overrides,
    parse_with_config,
    positive_int,
    recipe_parser,
    saved_tokenizer,
)
from medfuse_hf.training.run_info import throughput
from medfuse_hf.training.run_split import record_split
from medfuse_hf.units import check_units


def objective_collator(args: argparse.Namespace, tokenizer: MedFuseTokenizer, row_key: str):
    """The batches of `--objective`: its targets decide which of `MedFuseForPreTraining`'s losses is computed. Each
    patient's draws (cut-off, hidden values) are keyed to (seed, epoch, its `row_key`), so a resumed run draws what
    an uninterrupted one would, and the validation loss, at epoch 0 always, is the same at every call."""
    if args.objective == "forecasting":
        return ForecastingCollator(tokenizer, args.horizon_hours, row_key=row_key, seed=args.seed)
    return MaskedValueCollator(tokenizer, args.mask_probability, row_key=row_key, seed=args.seed)


@torch.no_grad()
def validation_loss(model, loader: DataLoader, accelerator: Accelerator) -> float:
    """The objective's MSE over the held-out patients, per target, under any number of processes. Every process
    reads every batch, in order (collating is cheap), and runs the model on every N-th batch; the sums are then added
    across processes. Accelerate's own split would repeat patients to even out the last batch, so the loss, and when
    `--patience` stops, would depend on how many processes there are. The unwrapped forward needs no other process
    under DDP; a sharded model (FSDP, ZeRO-3) would, and the recipes do not shard: MedFuse fits on every device
    whole."""
    unwrapped = accelerator.unwrap_model(model).eval()  # keeps mixed precision's autocast
    # the loss summed over targets, and the targets counted exactly (a float32 count is exact to 2^24 only)
    sums = {"loss": torch.zeros((), device=accelerator.device),
            "targets": torch.zeros((), dtype=torch.long, device=accelerator.device)}
    for index, batch in enumerate(loader):
        if index % accelerator.num_processes != accelerator.process_index:
            continue
        batch = send_to_device(batch, accelerator.device)
        targets = (batch["forecast_mask"] if "forecast_mask" in batch else batch["value_mask"]).sum()
        sums["loss"] += unwrapped(**batch).loss.float() * targets
        sums["targets"] += targets.long()  # forecasting's mask is of 0.0 and 1.0, masked values' of booleans
    unwrapped.train()
    sums = accelerator.reduce(sums, "sum")
    return (sums["loss"] / sums["targets"].clamp(min=1)).item()


def streamed_schedule_steps(args: argparse.Namespace) -> int:
    """The optimizer steps of `--num_epochs` passes over streamed shards, which have no length to count by: each pass
    is every patient once in global batches, the last one short (one process reads, and Accelerate dispatches each
    batch across the processes). Read from the shards' Parquet footers, no patient decoded. It becomes the run's
    `--max_steps`, recorded like a given one: what sizes the schedule, and what a resumption is checked against."""
    patients = sum(pq.ParquetFile(path).metadata.num_rows for path in matching_files(args.parquet_shards))
    return math.ceil(math.ceil(patients / args.batch_size) / args.gradient_accumulation_steps) * args.num_epochs


def training_function(args: argparse.Namespace) -> dict:
    output_dir = Path(args.output_dir)
    accelerator, _ = start_run(args)

    # ----- data: a cohort in memory, or Parquet shards streamed ---------------------------------------
    validation, cohort = None, pretraining_cohort(args)
    if args.parquet_shards:
        shards = matching_files(args.parquet_shards)
        train = streaming_patients(shards, args.seed, args.shuffle_buffer, args.open_shards)
        if args.validation_shards:
            validation = held_out_patients(matching_files(args.validation_shards), shards)
        if args.tokenizer_from:
            fitted = MedFuseTokenizer.from_pretrained(args.tokenizer_from, max_events=args.max_events,
                                                      unknown_features="drop")
            # its statistics normalise the shards' values: they must be in its units (a corpus records an export's)
            names = [spec.name for spec in fitted.feature_vocabulary]
            check_units(fitted.feature_vocabulary, cohort_units(cohort, names),
                        f"{cohort.description} (--tokenizer_from {args.tokenizer_from})", whose="the tokenizer's")
        else:  # statistics from the first patients of the stream, a bounded sample, not held while training
            fitted = fit_tokenizer(first_patients(train, args.statistics_patients), args.max_events,
                                   args.value_normalization, cohort.units)
        tokenizer = run_tokenizer(args, fitted, accelerator.is_main_process)
        row_key = cohort.id_column  # a shard's patient ids are unique
        order = LengthGroupedStream(train, args.batch_size, args.seed) if args.group_by_length else train
        batching = dict(dataset=order, batch_size=args.batch_size)  # the stream batches itself in order
    else:
        row_key = ROW_COLUMN
        record_split(output_dir, cohort, vars(args), resuming=checkpoint_to_resume(args) is not None,
                     writes=accelerator.is_main_process, say=accelerator.print)
        train, validation = (with_row_numbers(cohort.splits[name]) for name in ("train", "validation"))
        tokenizer = run_tokenizer(args, fit_tokenizer(train, args.max_events, args.value_normalization, cohort.units),
                                  accelerator.is_main_process)
        lengths = [min(len(features), args.max_events) for features in train["feature"]]
        order = LengthGroupedBatchSampler(lengths, args.batch_size, seed=args.seed, drop_last=True)
        batching = dict(dataset=train, batch_sampler=order)
    collate = objective_collator(args, tokenizer, row_key)
    train_loader = DataLoader(**batching, collate_fn=collate)

    def reseed(epoch: int) -> None:
        order.set_epoch(epoch)
        collate.set_epoch(epoch)

    if validation is not None:
        validation = DataLoader(validation, batch_size=args.batch_size,
                                collate_fn=objective_collator(args, tokenizer, row_key))

    config = MedFuseConfig(**tokenizer.feature_vocabulary.config_kwargs(), **model_overrides(args, ENCODER_FIELDS),
                           pretraining_objective=args.objective)
    model = MedFuseForPreTraining(config)
    total_steps = args.max_steps or math.ceil(len(train_loader) / args.gradient_accumulation_steps) * args.num_epochs
    optimizer, scheduler = optimizer_and_scheduler(model, args, total_steps)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)

    state = resume(accelerator, args)

    # ----- training -----------------------------------------------------------------------------------
    model.train()
    cut_short = False
    for epoch in range(state.epoch, args.num_epochs):
        if args.patience is not None and state.stale_epochs >= args.patience:
            break
        completed, _ = train_epoch(accelerator, model, optimizer, scheduler, train_loader, epoch, state, args, reseed)
        # --max_steps ended this pass part-way (now, or before a resumption from a checkpoint at that step): its
        # weights are a candidate too
        cut_short = not completed and state.batch > 0
        if completed:
            state.epoch, state.batch = epoch + 1, 0
        if validation is not None and (completed or cut_short):
            loss = validation_loss(model, validation, accelerator)
            accelerator.log({"epoch": epoch, "validation_loss": loss}, step=state.step)
            accelerator.print(f"epoch {epoch}{' (cut short by --max_steps)' if cut_short else ''}: validation "
                              f"{args.objective} MSE {loss:.4f}")
            if args.patience is not None and state.record_validation(-loss, epoch):
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    accelerator.unwrap_model(model).save_pretrained(output_dir / "model")
        if not completed:
            break
        if args.checkpoint_every_epoch:
            state.save(accelerator, args)

    accelerator.wait_for_everyone()
    if args.patience is not None and (output_dir / "model").exists():  # the epoch of lowest validation loss
        restore_kept_weights(accelerator, model, output_dir / "model")
    result = {"objective": args.objective, "num_processes": accelerator.num_processes, "steps": state.step,
              "epochs": state.epoch, "last_pass_cut_short": cut_short, **throughput(state, accelerator)}
    if args.patience is not None:
        result["best_validation"] = {"loss": -state.best, "epoch": state.best_epoch}
    if validation is not None:
        result["validation_loss"] = validation_loss(model, validation, accelerator)
        result["validation_patients"] = len(validation.dataset)
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(output_dir / "model")
        save_strict_tokenizer(tokenizer, output_dir / "model")
        # what the run cost, for the base model's card and the scaling estimate
        (output_dir / "pretraining_metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        publish_pretraining(output_dir, accelerator.unwrap_model(model), tokenizer, cohort, args)
    accelerator.print(f"pretrained for {state.step} steps ({state.epoch} full epochs)"
                      + (f", validation {args.objective} MSE {result['validation_loss']:.4f}"
                         if validation is not None else "")
                      + f", {result['events_per_second'] or 0:,} events/s; model in {output_dir / 'model'}")
    del model  # before the process group goes: see end_training
    end_training(accelerator)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = recipe_parser(__doc__)
    data = add_cohort_arguments(parser)
    data.add_argument("--parquet_shards", type=existing_shards,
                      help="glob of Parquet files of patients, streamed (instead of --dataset)")
    data.add_argument("--open_shards", type=positive_int, default=2,
                      help="shards the shuffle buffer draws from at once: more mixes better, "
                           "each holds a row group in memory")
    data.add_argument("--shuffle_buffer", type=positive_int, default=2048,
                      help="patients a streamed cohort is shuffled within (held in memory)")
    data.add_argument("--validation_shards", type=existing_shards,
                      help="glob of Parquet files of a streamed cohort's held-out patients (make_pretraining_corpus"
                           ".py writes them to validation/): the objective's loss on them each epoch, for --patience")
    data.add_argument("--group_by_length", type=boolean, default=False,
                      help="true: streamed shards batch stays of similar length together, within windows of 20 "
                           "batches (a random batch pads to its longest stay; a cohort in memory is always grouped)")
    data.add_argument("--tokenizer_from", type=saved_tokenizer, help="a saved tokenizer for streamed shards")
    data.add_argument("--statistics_patients", type=positive_int, default=5000,
                      help="patients a streamed cohort's statistics come from")
    data.add_argument("--objective", choices=sorted(OBJECTIVES), default="forecasting",
                      help="forecast the next hours from the events before a cut-off, or predict hidden values")
    data.add_argument("--horizon_hours", type=float, default=2.0, help="forecasting: the window after the cut-off")
    data.add_argument("--mask_probability", type=float, default=0.15,
                      help="masked_values: share of numeric events hidden")
    data.add_argument("--data_description",
                      help="what the streamed shards hold, for the model cards (else their corpus.json)")
    data.add_argument("--data_license", default="as set by the data owner",
                      help="the streamed shards' terms, for the cards")
    add_model_arguments(parser, ENCODER_FIELDS)
    train = add_training_arguments(parser, output_dir="outputs/pretrain")
    train.add_argument("--patience", type=positive_int,
                       help="stop after this many epochs without a lower validation loss, and keep the epoch of the "
                            "lowest (default: train every epoch, keep the last)")
    parser.set_defaults(num_epochs=10)
    quiet_library_progress_bars()
    args = parse_with_config(parser, argv)
    if args.validation_shards and not args.parquet_shards:
        parser.error("--validation_shards is for streamed shards; a cohort in memory has its own validation split")
    if args.patience is not None and args.parquet_shards and not args.validation_shards:
        parser.error("--patience stops on the validation loss, and a streamed cohort has none: give its held-out "
                     "patients with --validation_shards")
    if args.group_by_length and not args.parquet_shards:
        parser.error("--group_by_length is for streamed shards; a cohort in memory is always batched by length")
    if args.tokenizer_from and not args.parquet_shards:
        parser.error("--tokenizer_from is for streamed shards; a cohort in memory fits its own tokenizer on its "
                     "training split")
    if args.parquet_shards and not args.max_steps:
        args.max_steps = streamed_schedule_steps(args)
    training_function(args)


if __name__ == "__main__":
    main()
