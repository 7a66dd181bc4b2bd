"""Score a saved MedFuse model on a split of a cohort: metrics with bootstrap 95% intervals, predictions, plots.

    python recipes/evaluate.py --model_dir outputs/p12-seft/model --dataset p12 --data_dir ../shared/data/physionet2012
    accelerate launch recipes/evaluate.py --model_dir ... --dataset p19 --data_dir ../shared/data/physionet2019 \
        --hospital B

The model's own tokenizer (saved beside it) encodes the patients, so the vocabulary and normalisation are the ones
it was trained with.
"""

import argparse
from pathlib import Path

from accelerate import Accelerator

from medfuse_hf import MedFuseForSequenceClassification, MedFuseTokenizer
from medfuse_hf.data import MedFuseDataCollator
from medfuse_hf.progress import quiet_library_progress_bars
from medfuse_hf.training import predict
from medfuse_hf.training.checkpointing import recorded_settings
from medfuse_hf.training.cohorts import (
    cohort_units,
    compare_with_the_training_window,
    feature_names,
    follow_the_training_window,
    load_cohort_from_settings,
)
from medfuse_hf.training.evaluation import (
    ROW_COLUMN,
    evaluation_loader,
    patients_with_known_events,
    summary_line,
    write_report,
)
from medfuse_hf.training.recipe_config import (
    add_cohort_arguments,
    parse_with_config,
    positive_int,
    recipe_parser,
    saved_model,
)
from medfuse_hf.training.run_info import write_run_info
from medfuse_hf.training.run_split import refuse_seen_patients
from medfuse_hf.units import check_units, units_assumed_note


def evaluation_function(args: argparse.Namespace) -> dict | None:
    accelerator = Accelerator(cpu=args.cpu, mixed_precision=args.mixed_precision)
    output_dir = Path(args.output_dir)
    tokenizer = MedFuseTokenizer.from_pretrained(args.model_dir, unknown_features=args.unknown_features)
    if args.dataset == "long-format":  # its flags set the window the table is read through
        window = follow_the_training_window(args, tokenizer)
        cohort = load_cohort_from_settings(vars(args))
    else:  # a public cohort's window is its loader's
        cohort = load_cohort_from_settings(vars(args))
        window = compare_with_the_training_window(cohort, tokenizer)
    if cohort.label_column is None:
        raise SystemExit(f"{cohort.description}: no label to train or score on; give --labels and --label_column")
    split = cohort.labelled(args.split)
    refuse_seen_patients(args.model_dir, args.split, split[cohort.id_column], vars(args), accelerator.print)
    present = feature_names(split)
    assumed = check_units(tokenizer.feature_vocabulary, cohort_units(cohort, present), cohort.description, present,
                          args.assume_model_units, events_without_unit=cohort.events_without_unit)
    if assumed:
        accelerator.print(units_assumed_note(assumed))
    write_run_info(output_dir, recorded_settings(args), accelerator)
    left_out = []
    if args.unknown_features == "drop":
        split, left_out = patients_with_known_events(split, tokenizer, cohort.id_column)
    if left_out:
        accelerator.print(f"{len(left_out)} patients left out, no event of a feature the model knows "
                          f"(e.g. {left_out[:5]}); scored on the other {len(split)}")
    collate = MedFuseDataCollator(tokenizer, label_column=cohort.label_column, extra_columns=(ROW_COLUMN,))
    model = MedFuseForSequenceClassification.from_pretrained(args.model_dir)
    model, loader = accelerator.prepare(model, evaluation_loader(split, collate, args.batch_size))
    predictions = predict(model, loader, accelerator)
    if not accelerator.is_main_process:
        return None
    report = write_report(predictions, split, cohort.id_column, output_dir, f"{cohort.description}, {args.split}",
                          args.bootstrap_resamples, args.seed,
                          extra={"model_dir": str(args.model_dir), "patients_without_known_events": len(left_out),
                                 "window": window, "units_assumed": assumed})
    accelerator.print(f"{summary_line(report)}; report in {output_dir}")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = recipe_parser(__doc__)
    parser.add_argument("--model_dir", required=True, type=saved_model,
                        help="a saved MedFuse model folder (with its tokenizer) or Hub repo id")
    add_cohort_arguments(parser, for_a_model=True)
    parser.add_argument("--split", choices=("train", "validation", "test"), default="test")
    parser.add_argument("--unknown_features", choices=("error", "unk", "drop"), default="error",
                        help="features the model's vocabulary lacks (e.g. another hospital's)")
    parser.add_argument("--output_dir", default="outputs/evaluate", help="where the report and plots go")
    parser.add_argument("--batch_size", type=positive_int, default=64, help="patients scored at a time")
    parser.add_argument("--bootstrap_resamples", type=positive_int, default=1000,
                        help="for the metrics' 95%% intervals")
    parser.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default="no")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even where a GPU is present")
    quiet_library_progress_bars()
    evaluation_function(parse_with_config(parser, argv))


if __name__ == "__main__":
    main()
