"""Cohort statistics and a Markdown dataset card: what a reader needs before trusting a model trained on it.

Per feature: how many patients have it at all (its missingness at patient level), observations per patient who
has it, median and quartiles of its values, unit. Per cohort: patients, events, events per patient, label rate.
"""

from collections.abc import Mapping

import datasets
import numpy as np
import pandas as pd
import pyarrow.compute as pc

from .clinical_features import CATEGORICAL_FEATURES, NUMERIC_FEATURES


def describe_cohort(dataset: datasets.Dataset, label_column: str | None = None) -> dict:
    """Counts and per-feature statistics, computed on the Arrow columns without a Python object per event."""
    table = dataset.with_format("arrow")[:]  # the selected rows, also after filter or select
    lengths = pc.list_value_length(table["feature"]).to_numpy()
    events = pd.DataFrame(
        {
            "patient": np.repeat(np.arange(len(dataset)), lengths),
            "feature": pc.list_flatten(table["feature"]).to_numpy(zero_copy_only=False),
            "value": pc.list_flatten(table["value"]).to_numpy(),
        }
    )
    grouped = events.groupby("feature")
    per_feature = pd.DataFrame(
        {
            "patients": grouped["patient"].nunique(),
            "observations": grouped.size(),
            "median": grouped["value"].median(),
            "q25": grouped["value"].quantile(0.25),
            "q75": grouped["value"].quantile(0.75),
        }
    )
    per_feature["missing_patients_percent"] = 100.0 * (1.0 - per_feature["patients"] / len(dataset))
    per_feature["observations_per_patient"] = per_feature["observations"] / per_feature["patients"]
    summary = {
        "patients": len(dataset),
        "events": int(lengths.sum()),
        "events_per_patient": {"mean": float(lengths.mean()), "median": float(np.median(lengths)),
                               "p95": float(np.percentile(lengths, 95)), "max": int(lengths.max())},
        "features": per_feature.sort_values("patients", ascending=False).round(3).to_dict(orient="index"),
    }
    if label_column is not None:
        labels = np.asarray([label for label in dataset[label_column] if label is not None])
        summary["label"] = {"column": label_column, "positives": int(labels.sum()), "labelled": int(labels.size),
                            "rate_percent": round(100.0 * float(labels.mean()), 2)}
    return summary


def render_dataset_card(title: str, description: str, cohorts: Mapping[str, dict]) -> str:
    """A Markdown card with one section per cohort (e.g. one per hospital)."""
    lines = [f"# {title}", "", description.strip(), ""]
    for name, cohort in cohorts.items():
        length = cohort["events_per_patient"]
        lines += [
            f"## {name}",
            "",
            f"- Patients: {cohort['patients']:,}; events: {cohort['events']:,}",
            f"- Events per patient: mean {length['mean']:.0f}, median {length['median']:.0f}, "
            f"95th percentile {length['p95']:.0f}, max {length['max']:,}",
        ]
        if "label" in cohort:
            label = cohort["label"]
            lines.append(f"- Label `{label['column']}`: {label['positives']:,} of {label['labelled']:,} "
                         f"({label['rate_percent']:.2f}%)")
        lines += [
            "",
            "| feature | unit | patients with it | missing (patients) | obs. per patient | median | IQR |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for feature, row in cohort["features"].items():
            unit = NUMERIC_FEATURES.get(feature, ("",))[0] or ("code" if feature in CATEGORICAL_FEATURES else "")
            lines.append(
                f"| {feature} | {unit} | {row['patients']:,} | {row['missing_patients_percent']:.1f}% | "
                f"{row['observations_per_patient']:.1f} | {row['median']:g} | {row['q25']:g}–{row['q75']:g} |"
            )
        lines.append("")
    return "\n".join(lines)
