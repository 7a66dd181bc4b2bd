"""(Re)write the model card and the privacy-guarded feature-embedding checkpoint of a finished run (fine-tuning or
pretraining) from what the run recorded (`run_info.json`, `test_metrics.json` or `pretraining_metrics.json`,
`model/`); optionally push both to the Hub, or write a release folder that may leave the hospital.

    python recipes/publish.py --run_dir outputs/p12-seft --card_copy model_cards/medfuse-p12-seft.md
    python recipes/publish.py --run_dir outputs/p12-seft --push_to_hub my-hospital/medfuse-p12   # needs a token
    python recipes/publish.py --run_dir outputs/pretraining/forecasting --release_dir model_cards/medfuse-base \
        --evaluation benchmarks/results/pretraining/table.md     # what fine-tuning from the base measured

A release folder holds `model/` (weights, the tokenizer under the privacy guard: counts rounded to tens, refused if a
feature's statistics come from too few patients), `feature_embeddings/`, and the cards, which name the release
folder; the run's own folder keeps its exact statistics.
"""

import argparse
import json
import shutil
from pathlib import Path

from medfuse_hf import MedFuseForPreTraining, MedFuseForSequenceClassification, MedFuseTokenizer
from medfuse_hf.privacy import guarded_copy, publishable_vocabulary, without_exact_prevalence
from medfuse_hf.progress import quiet_library_progress_bars
from medfuse_hf.training.cohorts import Cohort, load_cohort_from_settings, save_strict_tokenizer, training_splits
from medfuse_hf.training.pretraining import EVALUATION, pretraining_cohort, publish_pretraining
from medfuse_hf.training.publishing import publish_run, push_run
from medfuse_hf.training.recipe_config import recipe_parser
from medfuse_hf.training.run_info import read_run_settings

# What the cards are written from; `evaluation.md` is a pretraining run's downstream evaluation (`--evaluation`).
RECORDS = ("test_metrics.json", "pretraining_metrics.json", "logs/metrics.jsonl", EVALUATION)


def fine_tuning_splits(settings: dict) -> tuple[Cohort, dict]:
    """A fine-tuning run's cohort, and the patients it trained, validated and was tested on (runs recorded before
    the fractions existed used every patient)."""
    cohort = load_cohort_from_settings(settings)
    used = argparse.Namespace(**{"train_fraction": 1.0, "validation_fraction": 1.0, **settings})
    return cohort, training_splits(used, cohort, say=lambda _: None)


def write_cards(output_dir: Path, model, tokenizer: MedFuseTokenizer, settings: dict, hub_repo_id: str | None,
                fine_tuned: tuple[Cohort, dict] | None) -> None:
    """The cards of the run recorded in `output_dir`: a pretraining run's with its pretraining section, a
    fine-tuning run's (`fine_tuned`: its cohort and splits) with its test metrics."""
    if fine_tuned is None:
        args = argparse.Namespace(**settings)
        publish_pretraining(output_dir, model, tokenizer, pretraining_cohort(args), args, hub_repo_id=hub_repo_id)
        return
    report = json.loads((output_dir / "test_metrics.json").read_text())
    cohort, splits = fine_tuned
    publish_run(output_dir, model, tokenizer, cohort, f"MedFuse, {cohort.description}", metrics=report["test"],
                evaluation_context=f"Test split, {report['test_patients']} patients, best validation epoch of "
                f"{report['epochs']}.", min_patients=settings.get("min_patients_for_statistics", 20),
                hub_repo_id=hub_repo_id, drop_rare_features=settings.get("drop_rare_features", False), splits=splits)


def train_patients_of(fine_tuned: tuple[Cohort, dict] | None) -> int | None:
    return None if fine_tuned is None else len(fine_tuned[1]["train"])


def release(run_dir: Path, release_dir: Path, model, tokenizer: MedFuseTokenizer, settings: dict,
            fine_tuned: tuple[Cohort, dict] | None) -> None:
    """A copy of the run fit to publish: the weights, the privacy-guarded tokenizer, the records the cards come from,
    and cards and feature embeddings written for the release folder. The cards are written from the exact
    tokenizer, as the run's own are: the guard decides what is withheld from exact counts, not from rounded ones."""
    public = guarded_copy(tokenizer, release_dir.name, settings.get("min_patients_for_statistics", 20))  # or refuse
    if release_dir.exists():
        shutil.rmtree(release_dir)
    with without_exact_prevalence(model, train_patients_of(fine_tuned)):
        model.save_pretrained(release_dir / "model")
    save_strict_tokenizer(public, release_dir / "model")
    for record in RECORDS:
        if (run_dir / record).exists():
            (release_dir / record).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run_dir / record, release_dir / record)
    write_cards(release_dir, model, tokenizer, settings, None, fine_tuned)


def main() -> None:
    parser = recipe_parser(__doc__)
    parser.add_argument("--run_dir", type=Path, required=True,
                        help="a finished finetune.py or pretrain.py run (its --output_dir)")
    parser.add_argument("--card_copy", type=Path,
                        help="also copy the model card here (e.g. model_cards/NAME.md) and the embedding card "
                             "beside it (NAME-feature-embeddings.md)")
    parser.add_argument("--push_to_hub",
                        help="Hub repo id for the model (private); embeddings go to <repo id>-embeddings")
    parser.add_argument("--release_dir", type=Path,
                        help="write a privacy-guarded copy of the run, with its cards, here")
    parser.add_argument("--evaluation", type=Path,
                        help="a pretraining run only: Markdown of what fine-tuning from it measured (e.g. the "
                             f"label-efficiency table), kept in the run as {EVALUATION} and shown in its card")
    args = parser.parse_args()
    if args.release_dir and (args.run_dir.resolve().is_relative_to(args.release_dir.resolve())
                             or args.release_dir.resolve().is_relative_to(args.run_dir.resolve())):
        parser.error(f"--release_dir {args.release_dir} holds the run or lies in it, and releasing empties it first: "
                     "give a folder outside the run")
    quiet_library_progress_bars()

    settings = read_run_settings(args.run_dir)
    pretrained = "objective" in settings  # only recipes/pretrain.py has an objective
    if args.evaluation:
        if not pretrained:
            parser.error(f"--evaluation: {args.run_dir} is a fine-tuning run; its card shows its own test metrics")
        shutil.copyfile(args.evaluation, args.run_dir / EVALUATION)
    fine_tuned = None if pretrained else fine_tuning_splits(settings)
    model_class = MedFuseForPreTraining if pretrained else MedFuseForSequenceClassification
    model = model_class.from_pretrained(args.run_dir / "model")
    tokenizer = MedFuseTokenizer.from_pretrained(args.run_dir / "model")
    min_patients = settings.get("min_patients_for_statistics", 20)
    if args.push_to_hub:  # refuse before the cards are rewritten to name a repo that will not exist
        publishable_vocabulary(tokenizer.feature_vocabulary, args.push_to_hub, min_patients)
    write_cards(args.run_dir, model, tokenizer, settings, args.push_to_hub, fine_tuned)
    print(f"wrote {args.run_dir / 'model' / 'README.md'} and {args.run_dir / 'feature_embeddings'}")
    if args.card_copy:
        args.card_copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.run_dir / "model" / "README.md", args.card_copy)
        shutil.copyfile(args.run_dir / "feature_embeddings" / "README.md",
                        args.card_copy.with_name(f"{args.card_copy.stem}-feature-embeddings.md"))
    if args.release_dir:
        release(args.run_dir, args.release_dir, model, tokenizer, settings, fine_tuned)
        print(f"released {args.release_dir}: model/ (privacy-guarded tokenizer), feature_embeddings/, cards")
    if args.push_to_hub:
        print(push_run(args.run_dir, model, tokenizer, args.push_to_hub, min_patients=min_patients,
                       train_patients=train_patients_of(fine_tuned)))


if __name__ == "__main__":
    main()
