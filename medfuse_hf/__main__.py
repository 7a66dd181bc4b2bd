"""`python -m medfuse_hf`: a one-minute end-to-end check on a synthetic cohort.

Builds a vocabulary on the training patients, trains a small MuFuse classifier on the U-shaped sodium task,
prints held-out AUROC/AUPRC, saves model and tokenizer, and reloads them through the Auto classes.
"""

import argparse
import time

import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from transformers import AutoFeatureExtractor, AutoModelForSequenceClassification

from . import FeatureVocabulary, MedFuseConfig, MedFuseForSequenceClassification, MedFuseTokenizer
from .synthetic import make_sodium_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="outputs/medfuse-smoke")
    parser.add_argument("--num_patients", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    cohort = make_sodium_cohort(args.num_patients, seed=args.seed)
    split = int(0.8 * len(cohort))
    train, test = cohort[:split], cohort[split:]
    tokenizer = MedFuseTokenizer(FeatureVocabulary.from_events(train))
    config = MedFuseConfig(**tokenizer.feature_vocabulary.config_kwargs(), num_labels=2, hidden_size=64, value_embedding_size=64)
    model = MedFuseForSequenceClassification(config)

    train_batch, test_batch = tokenizer(train, return_tensors="pt"), tokenizer(test, return_tensors="pt")
    train_labels = torch.tensor([patient["label"] for patient in train])
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    start = time.perf_counter()
    for _ in range(args.steps):
        rows = torch.randint(0, len(train), (64,))
        loss = model(**{key: value[rows] for key, value in train_batch.items()}, labels=train_labels[rows]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start

    model.save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    reloaded = AutoModelForSequenceClassification.from_pretrained(args.output_dir).eval()
    test_batch = AutoFeatureExtractor.from_pretrained(args.output_dir)(test, return_tensors="pt")
    with torch.no_grad():
        scores = reloaded(**test_batch).logits.softmax(-1)[:, 1].numpy()
    labels = [patient["label"] for patient in test]
    print(
        f"synthetic sodium task: {len(train)} train / {len(test)} test patients, {args.steps} steps in {seconds:.1f} s; "
        f"test AUROC {roc_auc_score(labels, scores):.3f}, AUPRC {average_precision_score(labels, scores):.3f}; "
        f"model saved to {args.output_dir}"
    )


if __name__ == "__main__":
    main()
