"""What a pretraining run is and publishes, shared by `recipes/pretrain.py` and `recipes/publish.py`: the cohort it
read (streamed shards described by their `corpus.json`, or one in memory) and the base model card's pretraining
section, written from what the run recorded."""

import argparse
import glob
import json
from pathlib import Path

import datasets

from ..data.clinical_features import catalogue_units
from ..data.shards import read_corpus_manifest
from ..feature_vocabulary import FeatureVocabulary
from ..tokenization_medfuse import MedFuseTokenizer
from .cohorts import Cohort, load_cohort_from_settings
from .plots import save_training_curves
from .publishing import publish_run, readable
from .tracking import read_metrics

OBJECTIVES = {  # name: what the model card says the base model learned
    "forecasting": "it forecasts each feature's values over the next {horizon_hours:g} h from the events before",
    "masked_values": "it predicts the hidden values of {mask_probability:.0%} of the numeric events from the rest "
                     "of the stay",
}
# a pretraining run's downstream evaluation, for its card (recipes/publish.py --evaluation)
EVALUATION = "evaluation.md"


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
    return Cohort(splits=datasets.DatasetDict(), label_column="", id_column="patient_id", units=corpus_units(manifest),
                  **terms)


def corpus_units(manifest: dict | None) -> dict[str, str] | None:
    """The units a corpus' values are in, which its base's vocabulary records (`Cohort.units`): the clinical
    catalogue's (None) unless an export is among its sources; then the export's as read (make_pretraining_corpus.py
    checked them against the catalogue's where it joined the public sources) and the public sources' features'
    catalogue units. A feature the export gave no unit for gets none, rather than a claim."""
    sources = (manifest or {}).get("sources", {}).values()
    if not any("units" in source for source in sources):
        return None
    units = {}
    for source in sources:
        units |= source["units"] if "units" in source else catalogue_units(source["features"])
    return units


def pretraining_details(output_dir: Path, args: argparse.Namespace, vocabulary: FeatureVocabulary,
                        hub_repo_id: str | None = None) -> str:
    """The base model card's pretraining section, from what the run recorded: objective, corpus by source and the
    vocabulary's coverage of each, budget and measured cost, the loss curve (also drawn beside the card), and the
    command that fine-tunes it (from `hub_repo_id` when the card is pushed there, never this machine's folder)."""
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
    if manifest and "validation" in manifest:
        lines.append(f"- of these, {manifest['validation']['patients']:,} patients held out (not trained on) for the "
                     "validation loss")
    lines += ["", f"{cost['steps']:,} optimizer steps of {args.batch_size} patients (learning rate "
              f"{args.learning_rate:g}, {args.lr_scheduler} schedule, {args.warmup_ratio:.0%} warm-up), "
              f"{cost['patients_trained']:,} patients and "
              f"{cost['events_trained']:,} events trained on (a patient counted once per pass) in "
              f"{cost['train_seconds'] / 60:.1f} min: "
              f"{cost['events_per_second']:,} events/s over {cost['num_processes']} process(es)."]
    if "validation_loss" in cost:  # held-out patients' loss, and with --patience the epoch kept
        held_out = f" on {cost['validation_patients']:,} held-out patients" if "validation_patients" in cost else ""
        kept, cut_short = cost.get("best_validation", {}).get("epoch"), cost.get("last_pass_cut_short", False)
        passes = cost["epochs"] + cut_short
        stop = (f", at epoch {kept} of {passes}" + (" (the last cut short by the step limit)" if cut_short else "")
                + ", the lowest") if kept else ""
        lines += ["", f"Validation {args.objective} MSE{held_out}: {cost['validation_loss']:.4f}{stop}."]
    losses = [(entry["step"], entry["train_loss"]) for entry in history if "train_loss" in entry]
    if losses:
        lines += ["", "| optimizer steps | mean training loss |", "|---|---:|"]
    for chunk in range(10):  # the loss curve in tenths of the run
        part = losses[chunk * len(losses) // 10:(chunk + 1) * len(losses) // 10]
        if part:
            lines.append(f"| {part[0][0]}–{part[-1][0]} | {sum(loss for _, loss in part) / len(part):.4f} |")
    where = hub_repo_id or readable(output_dir / "model")
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
                training_details=pretraining_details(output_dir, args, tokenizer.feature_vocabulary, hub_repo_id))


def pretraining_cohort(args: argparse.Namespace) -> Cohort:
    """The cohort of `args`: streamed Parquet shards, or one loaded into memory."""
    if args.parquet_shards:
        return streamed_cohort(args, sorted(glob.glob(args.parquet_shards)))
    return load_cohort_from_settings(vars(args))
