"""`python -m medfuse_hf`: train and test MedFuse on the bundled PhysioNet 2012 sample, on CPU in about a minute.

Builds the canonical vocabulary with statistics from the sample's training split, trains a small MuFuse
classifier for in-hospital mortality, prints test AUROC/AUPRC, saves model and tokenizer, and checks that they
reload through the Auto classes. Real training runs use `recipes/`.
"""

import argparse
import time

import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch.utils.data import DataLoader
from transformers import AutoFeatureExtractor, AutoModelForSequenceClassification

from . import MedFuseConfig, MedFuseForSequenceClassification, MedFuseTokenizer
from .data import LengthGroupedBatchSampler, MedFuseDataCollator, clinical_vocabulary, load_physionet2012_sample

LABEL = "in_hospital_death"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="outputs/medfuse-p12-sample")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    sample = load_physionet2012_sample()
    train, test = (sample.filter(lambda part, name=name: part == name, input_columns="split") for name in ("train", "test"))
    names = sorted({name for features in train["feature"] for name in features})
    tokenizer = MedFuseTokenizer(clinical_vocabulary(names).fit_statistics(train), max_events=1024)
    config = MedFuseConfig(**tokenizer.feature_vocabulary.config_kwargs(), num_labels=2, hidden_size=64,
                           value_embedding_size=64, intermediate_size=128, classifier_dropout=0.3)
    model = MedFuseForSequenceClassification(config)

    collate = MedFuseDataCollator(tokenizer, label_column=LABEL)
    sampler = LengthGroupedBatchSampler([len(features) for features in train["feature"]], batch_size=32, seed=args.seed)
    loader = DataLoader(train, batch_sampler=sampler, collate_fn=collate)
    # Deaths are ~14%: weight them up so the small model does not settle on "everyone survives".
    rate = sum(train[LABEL]) / len(train)
    class_weights = torch.tensor([0.5 / (1 - rate), 0.5 / rate])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for batch in loader:
            labels = batch.pop("labels")
            loss = torch.nn.functional.cross_entropy(model(**batch).logits, labels, weight=class_weights)
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
    labels = test[LABEL]
    print(
        f"PhysioNet 2012 sample, in-hospital mortality: {len(train)} train / {len(test)} test stays "
        f"({sum(labels)} deaths), {args.epochs} epochs in {seconds:.0f} s; test AUROC "
        f"{roc_auc_score(labels, scores):.3f}, AUPRC {average_precision_score(labels, scores):.3f} "
        f"(small test set: expect wide variation); model saved to {args.output_dir}"
    )


if __name__ == "__main__":
    main()
