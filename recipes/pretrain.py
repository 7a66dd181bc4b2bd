"""Self-supervised pretraining of MedFuse on a cohort without labels, so large unlabeled cohorts teach the feature
embeddings and the encoder: `--objective forecasting` forecasts each feature's value after a random cut-off from the
events before it (STraTS' task); `--objective masked_values` hides a share of the numeric values and predicts them
from the rest of the stay (a token-level task).

    python recipes/pretrain.py --dataset p19 --data_dir ../shared/data/physionet2019 --hospital A
    accelerate launch recipes/pretrain.py --parquet_shards "cohort/*.parquet" --data_description "our ICU, 2015-2024" \
        --max_steps 20000   # a cohort larger than memory

Writes `model/` (a `MedFuseForPreTraining` with its tokenizer and model card: pass it to
`recipes/finetune.py --init_from`), `feature_embeddings/` (privacy-guarded, for other hospitals), `checkpoints/`,
`logs/` and `run_info.json`. For supervised pretraining on a source task, run
`recipes/finetune.py` on the source cohort and fine-tune from its `model/`.
"""

import argparse
import glob
import json
import math
import random
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import get_scheduler

from medfuse_hf import FeatureVocabulary, MedFuseConfig, MedFuseForPreTraining, MedFuseTokenizer
from medfuse_hf.data import ForecastingCollator, LengthGroupedBatchSampler, MaskedValueCollator
from medfuse_hf.data.shards import read_corpus_manifest
from medfuse_hf.progress import quiet_library_progress_bars
from medfuse_hf.training import JSONLinesTracker, load_checkpoint, resolve_checkpoint, save_checkpoint
from medfuse_hf.training.cohorts import (
    Cohort,
    fit_tokenizer,
    load_cohort_from_settings,
    save_strict_tokenizer,
    streaming_patients,
)
from medfuse_hf.training.loop import end_training, train_epoch
from medfuse_hf.training.plots import save_training_curves
from medfuse_hf.training.publishing import publish_run, readable
from medfuse_hf.training.recipe_config import (
    ENCODER_FIELDS,
    add_cohort_arguments,
    add_model_arguments,
    add_training_arguments,
    model_overrides,
    parse_with_config,
)
from medfuse_hf.training.run_info import throughput, write_run_info
from medfuse_hf.training.tracking import read_metrics

OBJECTIVES = {  # name: what the model card says the base model learned
    "forecasting": "it forecasts each feature's values over the next {horizon_hours:g} h from the events before",
    "masked_values": "it predicts the hidden values of {mask_probability:.0%} of the numeric events from the rest "
                     "of the stay",
}
# a pretraining run's downstream evaluation, for its card (recipes/publish.py --evaluation)
EVALUATION = "evaluation.md"


def objective_collator(args: argparse.Namespace, tokenizer: MedFuseTokenizer, rng: random.Random | None = None):
    """The batches of `--objective`: its targets decide which of `MedFuseForPreTraining`'s losses is computed."""
    if args.objective == "forecasting":
        return ForecastingCollator(tokenizer, args.horizon_hours, rng=rng)
    return MaskedValueCollator(tokenizer, args.mask_probability, rng=rng)


@torch.no_grad()
def validation_loss(model, loader, collate, seed: int, accelerator) -> float:
    """The objective's MSE over the validation patients, per target, with the same draws at every call."""
    collate.rng.seed(seed)
    model.eval()
    total, count = torch.zeros((), device=accelerator.device), torch.zeros((), device=accelerator.device)
    for batch in loader:
        targets = batch["forecast_mask"] if "forecast_mask" in batch else batch["value_mask"]
        total += model(**batch).loss * targets.sum()
        count += targets.sum()
    model.train()
    return (accelerator.reduce(total, "sum") / accelerator.reduce(count, "sum").clamp(min=1)).item()


def streamed_cohort(args: argparse.Namespace, shards: list[str]) -> Cohort:
    """Streamed shards as the model cards describe them (a stream has no size known up front, and shard paths are
    not published): from `--data_description` / `--data_license`, else from the `corpus.json` beside the shards."""
    manifest = read_corpus_manifest(shards)
    if args.data_description:
        terms = {"description": args.data_description, "license": args.data_license}
    elif manifest is not None:
        sources = manifest["sources"].values()
        terms = {"description": manifest["description"], "license": "; ".join(source["license"] for source in sources),
                 "citation": "\n\n".join(source["citation"] for source in sources)}
    else:
        raise SystemExit("a streamed cohort needs --data_description for its model cards, or a corpus.json beside "
                         "its shards (recipes/make_pretraining_corpus.py writes one)")
    return Cohort(splits=datasets.DatasetDict(), label_column="", id_column="patient_id", **terms)


def pretraining_details(output_dir: Path, args: argparse.Namespace, vocabulary: FeatureVocabulary) -> str:
    """The base model card's pretraining section, from what the run recorded: objective, corpus by source and the
    vocabulary's coverage of each, budget and measured cost, the loss curve (also drawn beside the card), and the
    command that fine-tunes it."""
    history = read_metrics(output_dir / "logs" / "metrics.jsonl")
    cost = json.loads((output_dir / "pretraining_metrics.json").read_text())
    save_training_curves(history, output_dir / "model" / "pretraining_curves.png")
    lines = [f"Objective: `{args.objective}`: {OBJECTIVES[args.objective].format(**vars(args))}.", ""]
    manifest = read_corpus_manifest(sorted(glob.glob(args.parquet_shards))) if args.parquet_shards else None
    names = {spec.name for spec in vocabulary}
    for source, terms in (manifest or {}).get("sources", {}).items():
        covered = (f"; {len(names & set(terms['features']))} of the vocabulary's {len(names)} features"
                   if "features" in terms else "")
        lines.append(f"- `{source}`: {terms['patients']:,} patients, {terms['events']:,} events{covered}; "
                     f"{terms['license']}")
    lines += ["", f"{cost['steps']:,} optimizer steps of {args.batch_size} patients (learning rate "
              f"{args.learning_rate:g}, {args.lr_scheduler} schedule, {args.warmup_ratio:.0%} warm-up), "
              f"{cost['patients_trained']:,} patients and "
              f"{cost['events_trained']:,} events seen in {cost['train_seconds'] / 60:.1f} min: "
              f"{cost['events_per_second']:,} events/s over {cost['num_processes']} process(es)."]
    losses = [(entry["step"], entry["train_loss"]) for entry in history if "train_loss" in entry]
    if losses:
        lines += ["", "| optimizer steps | mean training loss |", "|---|---:|"]
    for chunk in range(10):  # the loss curve in tenths of the run
        part = losses[chunk * len(losses) // 10:(chunk + 1) * len(losses) // 10]
        if part:
            lines.append(f"| {part[0][0]}–{part[-1][0]} | {sum(loss for _, loss in part) / len(part):.4f} |")
    where = readable(output_dir / "model")
    lines += ["", "![training loss](pretraining_curves.png)", "",
              "Fine-tune it on your cohort (features it lacks start "
              "fresh; the run reports which matched):", "", "```bash",
              "accelerate launch recipes/finetune.py --dataset long-format --events events.csv --labels labels.csv \\",
              f"    --label_column died --init_from {where}",
              "```"]
    # written by `recipes/publish.py --evaluation` once fine-tunings measured it
    if (output_dir / EVALUATION).exists():
        lines += ["", "### What fine-tuning from it measured", "", (output_dir / EVALUATION).read_text().strip()]
    return "\n".join(lines)


def publish_pretraining(output_dir: Path, model, tokenizer: MedFuseTokenizer, cohort: Cohort, args: argparse.Namespace,
                        hub_repo_id: str | None = None) -> None:
    """The base model's card, with its pretraining section, and its privacy-guarded feature embeddings."""
    publish_run(output_dir, model, tokenizer, cohort, f"MedFuse pretrained on {cohort.description}",
                min_patients=args.min_patients_for_statistics, drop_rare_features=args.drop_rare_features,
                hub_repo_id=hub_repo_id, summary=f"MedFuse pretrained without labels on {cohort.description}: "
                                                 + OBJECTIVES[args.objective].format(**vars(args)) + ".",
                training_details=pretraining_details(output_dir, args, tokenizer.feature_vocabulary))


def pretraining_cohort(args: argparse.Namespace) -> Cohort:
    """The cohort of `args`: streamed Parquet shards, or one loaded into memory."""
    if args.parquet_shards:
        return streamed_cohort(args, sorted(glob.glob(args.parquet_shards)))
    return load_cohort_from_settings(vars(args))


def training_function(args: argparse.Namespace) -> dict:
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(cpu=args.cpu, mixed_precision=args.mixed_precision,
                              gradient_accumulation_steps=args.gradient_accumulation_steps,
                              # a global batch split across processes, as in finetune.py: any process count
                              # takes the same steps, and the schedule's length counts them
                              dataloader_config=DataLoaderConfiguration(split_batches=True),
                              log_with=[JSONLinesTracker("logs", output_dir)], project_dir=str(output_dir))
    set_seed(args.seed)
    write_run_info(output_dir, vars(args), accelerator)
    accelerator.init_trackers("logs", config={key: str(value) for key, value in vars(args).items()})

    # ----- data: a cohort in memory, or Parquet shards streamed ---------------------------------------
    validation, cohort = None, pretraining_cohort(args)
    if args.parquet_shards:
        if not args.max_steps:
            raise SystemExit("a streamed cohort has no length to count epochs by: set --max_steps")
        shards = sorted(glob.glob(args.parquet_shards))
        train = streaming_patients(shards, args.seed, open_shards=args.open_shards)
        if args.tokenizer_from:
            tokenizer = MedFuseTokenizer.from_pretrained(args.tokenizer_from, max_events=args.max_events,
                                                         unknown_features="drop")
        else:  # statistics from the first patients of the stream, a bounded sample
            sample = datasets.Dataset.from_list(list(train.take(args.statistics_patients)))
            tokenizer = fit_tokenizer(sample, args.max_events, args.value_normalization)
        train_loader = DataLoader(train, batch_size=args.batch_size, collate_fn=objective_collator(args, tokenizer))
        reseed = train.set_epoch
    else:
        train, validation = cohort.splits["train"], cohort.splits["validation"]
        tokenizer = fit_tokenizer(train, args.max_events, args.value_normalization, cohort.units)
        lengths = [min(len(features), args.max_events) for features in train["feature"]]
        batch_sampler = LengthGroupedBatchSampler(lengths, args.batch_size, seed=args.seed, drop_last=True)
        train_loader = DataLoader(train, batch_sampler=batch_sampler, collate_fn=objective_collator(args, tokenizer))
        reseed = batch_sampler.set_epoch
        # Fixed draws (cut-offs, hidden values) for validation, so its loss is comparable from epoch to epoch.
        validation_collate = objective_collator(args, tokenizer, rng=random.Random(args.seed))
        validation = DataLoader(validation, batch_size=args.batch_size, collate_fn=validation_collate)

    config = MedFuseConfig(**tokenizer.feature_vocabulary.config_kwargs(), **model_overrides(args, ENCODER_FIELDS),
                           pretraining_objective=args.objective)
    model = MedFuseForPreTraining(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    total_steps = args.max_steps or math.ceil(len(train_loader) / args.gradient_accumulation_steps) * args.num_epochs
    scheduler = get_scheduler(args.lr_scheduler, optimizer, num_warmup_steps=int(args.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    if validation is not None:
        validation = accelerator.prepare(validation)

    loop = {"epoch": 0, "batch": 0, "step": 0}
    checkpoint = (resolve_checkpoint(args.resume_from_checkpoint, output_dir / "checkpoints")
                  if args.resume_from_checkpoint else None)
    if checkpoint is not None:
        loop = load_checkpoint(accelerator, checkpoint)
        accelerator.print(f"resumed from {checkpoint}: epoch {loop['epoch']}, batch {loop['batch']}, "
                          f"step {loop['step']}")

    # ----- training -----------------------------------------------------------------------------------
    model.train()
    for epoch in range(loop["epoch"], args.num_epochs):
        completed, _ = train_epoch(accelerator, model, optimizer, scheduler, train_loader, epoch, loop, args,
                                   output_dir / "checkpoints", reseed)
        if not completed:
            break
        loop.update(epoch=epoch + 1, batch=0)
        if validation is not None:
            loss = validation_loss(model, validation, validation_collate, args.seed, accelerator)
            accelerator.log({"epoch": epoch, "validation_loss": loss}, step=loop["step"])
            accelerator.print(f"epoch {epoch}: validation {args.objective} MSE {loss:.4f}")
        if args.checkpoint_every_epoch:
            save_checkpoint(accelerator, output_dir / "checkpoints", loop["step"], loop)

    accelerator.wait_for_everyone()
    result = {"objective": args.objective, "num_processes": accelerator.num_processes, "steps": loop["step"],
              "epochs": loop["epoch"], **throughput(loop, accelerator)}
    if validation is not None:
        result["validation_loss"] = validation_loss(model, validation, validation_collate, args.seed, accelerator)
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(output_dir / "model")
        save_strict_tokenizer(tokenizer, output_dir / "model")
        # what the run cost, for the base model's card and the scaling estimate
        (output_dir / "pretraining_metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        publish_pretraining(output_dir, accelerator.unwrap_model(model), tokenizer, cohort, args)
    accelerator.print(f"pretrained for {loop['step']} steps ({loop['epoch']} full epochs)"
                      + (f", validation {args.objective} MSE {result['validation_loss']:.4f}"
                         if validation is not None else "")
                      + f", {result['events_per_second'] or 0:,} events/s; model in {output_dir / 'model'}")
    del model  # before the process group goes: see end_training
    end_training(accelerator)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = add_cohort_arguments(parser)
    data.add_argument("--parquet_shards", help="glob of Parquet files of patients, streamed (overrides --dataset)")
    data.add_argument("--open_shards", type=int, default=2,
                      help="shards the shuffle buffer draws from at once: more mixes better, "
                           "each holds a row group in memory")
    data.add_argument("--tokenizer_from", help="a saved tokenizer for streamed shards")
    data.add_argument("--statistics_patients", type=int, default=5000,
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
    add_training_arguments(parser, output_dir="outputs/pretrain")
    parser.set_defaults(num_epochs=10)
    quiet_library_progress_bars()
    training_function(parse_with_config(parser, argv))


if __name__ == "__main__":
    main()
