"""How a feature's token responds to its value, MuFuse against additive fusion, in models trained on PhysioNet 2012.

    python benchmarks/embedding_response.py --data_dir ../shared/data/physionet2012 \
        --model medfuse=outputs/p12-table/seft-split-medfuse-seed0/model \
        --model additive=outputs/p12-table/seft-split-additive-seed0/model

Top row, the token itself: the relative change of the fused feature-value token (before the time embedding is
added) from its value at the feature's median, ||e(f, v) - e(f, median)|| / ||e(f, median)||, across the 1st-99th
percentile of the test split's values. Under additive fusion e(f, v) = e_f + phi(v), one shared phi(v) is added to
every feature's identity, so the change is the same vector for every feature ("collapse"), and a large e_f can
drown it ("masking"); under MuFuse the value rescales each feature's own embedding.
Bottom row, the prediction: partial dependence, the mean predicted mortality of test patients who have the feature
when every one of its measurements is set to v. Writes `benchmarks/results/embedding_response.{png,json}`.
"""

import argparse
import json
from pathlib import Path

import datasets
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from medfuse_hf import MedFuseForSequenceClassification, MedFuseTokenizer
from medfuse_hf.training.cohorts import load_cohort

RESULTS = Path(__file__).parent / "results"
FEATURES = {"sodium": "sodium (mmol/L)", "creatinine": "creatinine (mg/dL)", "heart_rate": "heart rate (bpm)",
            "gcs": "GCS"}


@torch.no_grad()
def token_change(model, tokenizer, feature: str, grid: np.ndarray, reference: float) -> np.ndarray:
    """||e(f, v) - e(f, reference)|| / ||e(f, reference)|| for each v of the grid."""
    encoded = tokenizer([[(feature, float(value), 0.0)] for value in [reference, *grid]], return_tensors="pt")
    embeddings = model.medfuse.embeddings
    feature_ids, values = encoded["feature_ids"][:, 0], encoded["values"][:, 0]
    tokens = embeddings.value_fusion(embeddings.feature_embeddings(feature_ids), feature_ids, values)
    return ((tokens[1:] - tokens[0]).norm(dim=-1) / tokens[0].norm()).numpy()


@torch.no_grad()
def partial_dependence(model, tokenizer, patients: list[dict], feature: str, grid: np.ndarray) -> np.ndarray:
    """Mean predicted probability of the positive class with every `feature` measurement set to each v."""
    means = []
    for value in grid:
        edited = [{"feature": patient["feature"], "time": patient["time"],
                   "value": [value if name == feature else observed
                             for name, observed in zip(patient["feature"], patient["value"])]}
                  for patient in patients]
        probabilities = model(**tokenizer(edited, return_tensors="pt")).logits.softmax(-1)[:, 1]
        means.append(float(probabilities.mean()))
    return np.array(means)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", required=True, help="PhysioNet 2012 release folder")
    parser.add_argument("--model", action="append", required=True, help="NAME=saved model folder (with its tokenizer)")
    parser.add_argument("--patients", type=int, default=100, help="test patients per feature for partial dependence")
    parser.add_argument("--grid_points", type=int, default=25)
    args = parser.parse_args()
    datasets.disable_progress_bars()

    models = {}
    for item in args.model:
        name, _, path = item.partition("=")
        models[name] = (MedFuseForSequenceClassification.from_pretrained(path).eval(),
                        MedFuseTokenizer.from_pretrained(path))
    test = load_cohort("p12", args.data_dir, "seft-split").splits["test"]
    rng = np.random.default_rng(0)

    results = {}
    figure, axes = plt.subplots(2, len(FEATURES), figsize=(4 * len(FEATURES), 7), sharey="row")
    for column, (feature, label) in enumerate(FEATURES.items()):
        having = [index for index, names in enumerate(test["feature"]) if feature in names]
        observed = np.concatenate([np.asarray(row["value"])[np.asarray(row["feature"]) == feature]
                                   for row in test.select(having)])
        grid = np.linspace(*np.quantile(observed, [0.01, 0.99]), args.grid_points)
        patients = [test[int(index)] for index in rng.choice(having, min(args.patients, len(having)), replace=False)]
        results[feature] = {"grid": grid.tolist(), "median": float(np.median(observed)), "patients": len(patients)}
        for name, (model, tokenizer) in models.items():
            change = token_change(model, tokenizer, feature, grid, float(np.median(observed)))
            dependence = partial_dependence(model, tokenizer, patients, feature, grid)
            results[feature][name] = {"relative_token_change": change.tolist(),
                                      "partial_dependence": dependence.tolist()}
            axes[0, column].plot(grid, change, label=name)
            axes[1, column].plot(grid, dependence, label=name)
        axes[0, column].set_title(label)
        axes[1, column].set_xlabel(label)
    axes[0, 0].set_ylabel("||e(f,v) - e(f,median)|| / ||e(f,median)||")
    axes[1, 0].set_ylabel("mean predicted mortality (partial dependence)")
    axes[0, 0].legend()
    figure.suptitle("Token response to the value (top) and the prediction's response (bottom), "
                    "PhysioNet 2012 test split")
    figure.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    figure.savefig(RESULTS / "embedding_response.png", dpi=120)
    (RESULTS / "embedding_response.json").write_text(json.dumps(results, indent=1) + "\n")
    for feature in FEATURES:
        print(feature + ": " + "; ".join(
            f"{name}: token change at 1st/99th pct {results[feature][name]['relative_token_change'][0]:.2f}/"
            f"{results[feature][name]['relative_token_change'][-1]:.2f}, predicted mortality "
            f"{min(results[feature][name]['partial_dependence']):.3f}-"
            f"{max(results[feature][name]['partial_dependence']):.3f}"
            for name in models))


if __name__ == "__main__":
    main()
