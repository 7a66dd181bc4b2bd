"""Score new, unlabeled patients with a saved MedFuse model: one risk per patient from a long-format event table.

    python recipes/predict.py --model_dir outputs/p12-seft/model --events events.csv --assume_model_units \
        --output predictions.csv
    python recipes/predict.py --model_dir DIR --events chartevents.csv labevents.csv \
        --columns patient_id=SUBJECT_ID,time=CHARTTIME,feature=ITEMID,value=VALUE,unit=VALUEUOM \
        --feature_map items.csv --patients stays.csv --anchor_column INTIME --max_hours 48 --output predictions.csv

The model's own tokenizer (saved beside it) encodes the events, so the vocabulary and normalisation are the ones it
was trained with. Events of features the model does not know are left out and reported by name and count; a
patient left with no event the model knows is not scored and is counted. Units are checked against the model's
(a table that gives none is refused unless `--assume_model_units` vouches for it), and a P12 model reads the
first 48 hours from the time `--anchor_column` names, as it was trained. `--output` gets one row per scored
patient (`patient_id`, `probability`, `events_used`), and `<output>.summary.json` what was read, kept and skipped.
With `--explain K`, `<output>.explanations.csv` lists each patient's K events that moved its risk most (feature,
hours, value as read: cleaned and in the model's unit; signed attribution to the risk's log-odds: Integrated
Gradients over the fused tokens, `medfuse_hf.training.explanations`; needs `pip install "medfuse-hf[explain]"`).
With `--representations`, any MedFuse checkpoint (the pretrained base too) writes each patient's pooled
representation instead, for a model of your own.

A run stopped part-way (a killed job, a bad row in a later chunk) resumes when the same command is run again: the
chunks already written are kept (`<output>.progress.json` says which), and only the rest are scored.
"""

import argparse
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pandas as pd
import torch

import medfuse_hf
from medfuse_hf import MedFuseForSequenceClassification, MedFuseModel, MedFuseTokenizer
from medfuse_hf.data import LongFormatOptions, load_long_format
from medfuse_hf.data.long_format import matching_files
from medfuse_hf.progress import progress_bar, quiet_library_progress_bars
from medfuse_hf.training.cohorts import feature_names, follow_the_training_window
from medfuse_hf.training.evaluation import PROBABILITY_COLUMN, known_events, per_patient_outputs
from medfuse_hf.training.explanations import explain_patient
from medfuse_hf.training.recipe_config import (
    add_long_format_arguments,
    add_model_units_argument,
    existing_table,
    non_negative_int,
    parse_with_config,
    positive_int,
    recipe_parser,
    saved_model,
)
from medfuse_hf.units import check_units, units_assumed_note

NO_KNOWN_EVENT = "no event of a feature the model knows"
PATIENTS_PER_CHUNK = 8192  # scored, then written, at a time: memory stays flat however many patients there are
EXPLANATION_COLUMNS = ["patient_id", "rank", "feature", "hours", "value", "attribution"]


def explanation_rows(model, tokenizer: MedFuseTokenizer, patients: datasets.Dataset, top_k: int) -> tuple[list, float]:
    """Each patient's `top_k` most influential events as rows, and the integral's largest convergence error."""
    rows, worst_error = [], 0.0
    for patient in patients:
        events, error = explain_patient(model, tokenizer, patient, top_k)
        worst_error = max(worst_error, error)
        rows += [
            {
                "patient_id": patient["patient_id"],
                "rank": rank,
                "feature": event.feature,
                "hours": event.hours,
                "value": patient["value"][event.position],
                "attribution": event.attribution,
            }
            for rank, event in enumerate(events, start=1)
        ]
    return rows, worst_error


def chunks(patients: datasets.Dataset, first: int = 0) -> Iterator[datasets.Dataset]:
    """`PATIENTS_PER_CHUNK` patients at a time from chunk `first` on: a table larger than memory is scored and
    written a chunk at a time."""
    for start in range(first * PATIENTS_PER_CHUNK, len(patients), PATIENTS_PER_CHUNK):
        yield patients.select(range(start, min(start + PATIENTS_PER_CHUNK, len(patients))))


@dataclass
class Progress:
    """What the chunks written so far add up to, saved after each one so that a stopped run resumes where it
    stopped. `inputs` is what the rows depend on (flags, the tables' and the model's files, the chunk size): a run
    of other inputs starts afresh. `written` is each partial file's size after the last chunk counted, so that rows a
    run appended after it and then died are cut off rather than written twice."""

    inputs: dict
    chunks: int = 0
    scored: int = 0
    skipped: int = 0
    skipped_examples: list = field(default_factory=list)
    unknown: Counter = field(default_factory=Counter)
    cut: Counter = field(default_factory=Counter)  # patients longer than the model reads, and the oldest events left
    worst_error: float = 0.0
    written: dict = field(default_factory=dict)

    @classmethod
    def resumed(cls, path: Path, inputs: dict, partial_files: list[Path]) -> "Progress":
        """The progress saved at `path` when it is of these inputs and its partial files hold at least what it
        counted (cut back to that), else a fresh start, with any other run's progress and partial files removed
        first: a later resumption must never find them."""
        saved = json.loads(path.read_text()) if path.exists() else None
        if saved is not None and saved.get("inputs") == inputs:
            sizes = {Path(name): size for name, size in saved["written"].items()}
            if all(file.exists() and file.stat().st_size >= size for file, size in sizes.items()):
                for file, size in sizes.items():
                    os.truncate(file, size)
                return cls(**{**saved, "unknown": Counter(saved["unknown"]), "cut": Counter(saved["cut"])})
        if saved is not None:
            print(f"{path}: another run's progress (other inputs, or its files are gone): scoring from the start")
        for file in (path, *partial_files):
            file.unlink(missing_ok=True)
        return cls(inputs)

    def save(self, path: Path, files: list[Path]) -> None:
        self.chunks += 1
        self.written = {str(file): file.stat().st_size for file in files if file.exists()}
        saved = {**vars(self), "unknown": dict(self.unknown), "cut": dict(self.cut)}  # asdict would recount them
        staging = path.with_name(path.name + ".tmp")
        staging.write_text(json.dumps(saved))
        staging.replace(path)  # never half a progress file


def inputs_of(args: argparse.Namespace, model) -> dict:
    """What a run's rows depend on: its flags but `--output`, the size and time of every file it reads, the Hub
    commit of a model given by repo id, and this library's version."""
    files = [file for pattern in [*args.events, *([args.patients] if args.patients else [])]
             for file in matching_files(pattern)]
    model_dir = Path(args.model_dir)
    if model_dir.is_dir():  # else a Hub repo id, named in the flags
        files += sorted(str(file) for file in model_dir.iterdir() if file.is_file())
    return {"flags": {name: repr(value) for name, value in vars(args).items() if name != "output"},
            "files": {file: [os.stat(file).st_size, os.stat(file).st_mtime_ns] for file in files},
            "model_commit": getattr(model.config, "_commit_hash", None), "medfuse_hf": medfuse_hf.__version__,
            "patients_per_chunk": PATIENTS_PER_CHUNK}


def prediction_function(args: argparse.Namespace) -> dict:
    tokenizer = MedFuseTokenizer.from_pretrained(args.model_dir, unknown_features="drop")
    window = follow_the_training_window(args, tokenizer)
    options = LongFormatOptions.from_settings(vars(args)).as_kwargs()
    patients, load_summary = load_long_format(args.events, args.patients, return_summary=True, **options)
    where = ", ".join(args.events[:2]) + (" ..." if len(args.events) > 2 else "")
    assumed = check_units(tokenizer.feature_vocabulary, load_summary.units, where, feature_names(patients),
                          args.assume_model_units,  # before any patient is scored
                          events_without_unit=load_summary.events_without_unit)
    # In float32 whatever the checkpoint was saved in: risks and attributions of a bf16 copy carry 8 bits of mantissa
    if args.representations:  # any MedFuse checkpoint, the pretrained base too: its encoder and pooling only
        model = MedFuseModel.from_pretrained(args.model_dir, dtype=torch.float32).eval()

        def scores(kept: datasets.Dataset) -> dict:
            pooled = per_patient_outputs(kept, tokenizer, lambda batch: model(**batch).pooler_output, args.batch_size)
            return {f"representation_{dimension}": pooled[:, dimension] for dimension in range(pooled.shape[1])}
    else:
        model = MedFuseForSequenceClassification.from_pretrained(args.model_dir, dtype=torch.float32).eval()

        def scores(kept: datasets.Dataset) -> dict:
            return {PROBABILITY_COLUMN: per_patient_outputs(
                kept, tokenizer, lambda batch: model.risks(model(**batch).logits)[:, 1], args.batch_size)}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    explanations, summary_file = (output.with_name(output.name + suffix) for suffix in (".explanations.csv",
                                                                                        ".summary.json"))
    for earlier in (explanations, summary_file):  # a previous run's, which would sit beside this run's predictions
        earlier.unlink(missing_ok=True)
    # Written under a partial name and renamed once every patient is scored: a run stopped half-way (a bad row in a
    # later chunk) leaves no file that looks complete, and the same command resumes it.
    writing, explaining = (path.with_name(path.name + ".partial") for path in (output, explanations))
    progress_file = output.with_name(output.name + ".progress.json")
    progress = Progress.resumed(progress_file, inputs_of(args, model), [writing, explaining])
    done = min(progress.chunks * PATIENTS_PER_CHUNK, len(patients))
    if done:
        print(f"resuming: {done} patients already scored into {writing}")
    with progress_bar(total=len(patients), initial=done, desc="scoring", unit="patients") as bar:
        for part in chunks(patients, first=progress.chunks):
            counts, part_unknown = known_events(part, tokenizer)
            progress.unknown.update(part_unknown)
            scorable = [row for row, count in enumerate(counts) if count > 0]
            over = [count - tokenizer.max_events for count in counts if count > tokenizer.max_events]
            progress.cut.update(patients=len(over), events=sum(over))
            not_scored = [patient for patient, count in zip(part["patient_id"], counts) if count == 0]
            progress.skipped += len(not_scored)
            progress.skipped_examples = (progress.skipped_examples + not_scored)[:10]
            if scorable:
                first = not progress.scored
                kept = part.select(scorable)
                rows = pd.DataFrame({"patient_id": kept["patient_id"], **scores(kept),
                                     "events_used": [min(counts[row], tokenizer.max_events) for row in scorable]})
                rows.to_csv(writing, index=False, mode="w" if first else "a", header=first)
                if args.explain:
                    explained, error = explanation_rows(model, tokenizer, kept, args.explain)
                    progress.worst_error = max(progress.worst_error, error)
                    pd.DataFrame(explained, columns=EXPLANATION_COLUMNS).to_csv(
                        explaining, index=False, mode="w" if first else "a", header=first)
                progress.scored += len(scorable)
            progress.save(progress_file, [writing, explaining])
            bar.update(len(part))
    if not progress.scored:  # the files still say what they would hold
        pd.DataFrame(columns=["patient_id", *([] if args.representations else [PROBABILITY_COLUMN]), "events_used"]
                     ).to_csv(writing, index=False)
        if args.explain:
            pd.DataFrame(columns=EXPLANATION_COLUMNS).to_csv(explaining, index=False)
    writing.replace(output)
    if args.explain:
        explaining.replace(explanations)
    progress_file.unlink(missing_ok=True)  # none where the loader kept no patient
    summary = {
        "model_dir": str(args.model_dir),
        "window": window,  # each flag as used here, and as the model was trained with
        "patients_scored": progress.scored,
        "patients_not_scored": {NO_KNOWN_EVENT: progress.skipped} if progress.skipped else {},
        "patients_not_scored_examples": progress.skipped_examples,
        "unknown_features": dict(progress.unknown.most_common()),  # name -> events left out
        # features whose values came with no unit, read as in the unit the model learnt them in
        "units_assumed": assumed,
        # the most recent max_events of a longer stay are read (and pinned features' earliest)
        "patients_cut_to_max_events": {"max_events": tokenizer.max_events, "patients": progress.cut["patients"],
                                       "oldest_events_left_out": progress.cut["events"]},
        "events_read": load_summary.events_read,
        "events_kept_by_loader": load_summary.events_kept,
        "events_skipped_by_loader": dict(load_summary.skipped_events),
        "loader_notes": dict(load_summary.notes),
        "patients_skipped_by_loader": dict(load_summary.skipped_patients),
        "loader_examples": load_summary.examples,  # reason -> the first patients or lines it applied to
    }
    if args.explain:
        print(f"the {args.explain} events that moved each patient's risk most: {explanations}")
        summary["explanations"] = {"file": str(explanations),
                                   "method": "Integrated Gradients over the fused tokens (Captum)",
                                   "attributed": "the risk's log-odds, logit(positive) - logit(negative)",
                                   "largest_convergence_error_log_odds": progress.worst_error}
    summary_file.write_text(json.dumps(summary, indent=2) + "\n")
    if progress.unknown:
        print(f"left out {sum(progress.unknown.values())} events of {len(progress.unknown)} features the model does "
              "not know: " + ", ".join(f"{name} ({count})" for name, count in progress.unknown.most_common(10)))
    if progress.skipped:
        print(f"not scored: {progress.skipped} patients with {NO_KNOWN_EVENT} "
              f"(e.g. {progress.skipped_examples[:5]})")
    if assumed:
        print(units_assumed_note(assumed))
    written = "representations" if args.representations else "predictions"
    print(f"scored {progress.scored} patients; {written} in {output}")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = recipe_parser(__doc__)
    parser.add_argument("--model_dir", required=True, type=saved_model,
                        help="a saved MedFuse model folder (with its tokenizer) or Hub repo id")
    table = add_long_format_arguments(parser, skip=("label_column", "label_map"))  # it scores: no labels
    add_model_units_argument(table)
    parser.add_argument("--patients", type=existing_table,
                        help="table with one row per patient (patient_id column), e.g. anchor times")
    parser.add_argument("--output", default="predictions.csv", help="the risks' CSV; its summary JSON beside it")
    parser.add_argument("--batch_size", type=positive_int, default=64, help="patients scored at a time")
    parser.add_argument(
        "--explain",
        type=non_negative_int,
        default=0,
        metavar="K",
        help="also write each patient's K events that moved its risk most",
    )
    parser.add_argument(
        "--representations",
        action="store_true",
        help="write each patient's pooled representation (representation_0, ...) instead of a risk, for a model of "
        "your own on top: with a few dozen labelled stays, a logistic regression on the pretrained base's beat the "
        "GBM (benchmarks/RESULTS.md)",
    )
    quiet_library_progress_bars()
    args = parse_with_config(parser, argv)
    if not args.events:
        parser.error("--events is required")
    if args.representations and args.explain:
        parser.error("--explain explains a risk; --representations writes none")
    prediction_function(args)


if __name__ == "__main__":
    main()
