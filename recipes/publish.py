"""(Re)write the model card and the privacy-guarded feature-embedding checkpoint of a finished fine-tuning run,
from what the run recorded (`run_info.json`, `test_metrics.json`, `model/`); optionally push both to the Hub.

    python recipes/publish.py --run_dir outputs/p12-seft --card_copy model_cards/medfuse-p12-seft.md
    python recipes/publish.py --run_dir outputs/p12-seft --push_to_hub my-hospital/medfuse-p12   # needs a token
"""

import argparse
import json
import shutil
from pathlib import Path

import datasets

from medfuse_hf import MedFuseForSequenceClassification, MedFuseTokenizer
from medfuse_hf.training.cohorts import load_cohort_from_settings
from medfuse_hf.feature_embeddings import publishable_vocabulary
from medfuse_hf.training.publishing import publish_run, push_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", type=Path, required=True)
    parser.add_argument("--card_copy", type=Path,
                        help="also copy the model card here (e.g. model_cards/NAME.md) and the embedding card beside it "
                             "(NAME-feature-embeddings.md)")
    parser.add_argument("--push_to_hub", help="Hub repo id for the model (private); embeddings go to <repo id>-embeddings")
    args = parser.parse_args()
    datasets.disable_progress_bars()

    settings = json.loads((args.run_dir / "run_info.json").read_text())["config"]
    report = json.loads((args.run_dir / "test_metrics.json").read_text())
    cohort = load_cohort_from_settings(settings)
    model = MedFuseForSequenceClassification.from_pretrained(args.run_dir / "model")
    tokenizer = MedFuseTokenizer.from_pretrained(args.run_dir / "model")
    min_patients = settings.get("min_patients_for_statistics", 20)
    if args.push_to_hub:  # refuse before the cards are rewritten to name a repo that will not exist
        publishable_vocabulary(tokenizer.feature_vocabulary, args.push_to_hub, min_patients)
    publish_run(args.run_dir, model, tokenizer, cohort, f"MedFuse, {cohort.description}", metrics=report["test"],
                evaluation_context=f"Test split, {report['test_patients']} patients, best validation epoch of "
                f"{report['epochs']}.", min_patients=min_patients, hub_repo_id=args.push_to_hub,
                drop_rare_features=settings.get("drop_rare_features", False))
    print(f"wrote {args.run_dir / 'model' / 'README.md'} and {args.run_dir / 'feature_embeddings'}")
    if args.card_copy:
        args.card_copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.run_dir / "model" / "README.md", args.card_copy)
        shutil.copyfile(args.run_dir / "feature_embeddings" / "README.md",
                        args.card_copy.with_name(f"{args.card_copy.stem}-feature-embeddings.md"))
    if args.push_to_hub:
        print(push_run(args.run_dir, model, tokenizer, args.push_to_hub, min_patients=min_patients))


if __name__ == "__main__":
    main()
