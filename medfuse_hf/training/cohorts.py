"""The cohorts recipes train on, by name: each with its train/validation/test split and label column.

One place maps `--dataset` to a loader and a split protocol, so every recipe reads data the same way.
"""

from dataclasses import dataclass
from pathlib import Path

import datasets

from ..data import (
    clinical_vocabulary,
    apply_split,
    load_physionet2012,
    load_physionet2012_sample,
    load_physionet2019,
    seft_split,
    set_a_test_split,
    stratified_split,
)
from ..data.clinical_features import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from ..feature_vocabulary import FeatureVocabulary
from ..synthetic import make_sodium_cohort
from ..tokenization_medfuse import MedFuseTokenizer

DATASETS = ("p12-sample", "p12", "p19", "synthetic", "parquet")
P12_PROTOCOLS = ("seft-split", "set-a-test", "random")


@dataclass
class Cohort:
    splits: datasets.DatasetDict  # train / validation / test
    label_column: str
    id_column: str
    description: str


def load_cohort(
    dataset: str,
    data_dir: str | Path | None = None,
    protocol: str | None = None,
    hospital: str | None = None,
    label_column: str | None = None,
    num_patients: int = 512,
    seed: int = 0,
) -> Cohort:
    """`p12-sample` (bundled), `p12` (protocol `seft-split`, `set-a-test` or `random`), `p19` (optionally one
    `hospital`, seeded random split), `synthetic` (U-shaped sodium task), `parquet` (`data_dir` holding
    `train`/`validation`/`test.parquet`, e.g. written from `load_long_format`)."""
    if dataset == "p12-sample":
        sample = load_physionet2012_sample()
        parts = {name: sample.filter(lambda part, name=name: part == name, input_columns="split") for name in ("train", "validation", "test")}
        return Cohort(datasets.DatasetDict(parts), "in_hospital_death", "record_id", "bundled PhysioNet 2012 sample")
    if dataset == "p12":
        protocol = protocol or "seft-split"
        if protocol not in P12_PROTOCOLS:
            raise ValueError(f"P12 protocol must be one of {P12_PROTOCOLS}, got {protocol!r}")
        root = _required(data_dir, dataset)
        p12 = load_physionet2012(root)
        if protocol == "seft-split":
            split = seft_split(root / "splits_seft")
        elif protocol == "set-a-test":
            split = set_a_test_split(p12, seed=seed)
        else:
            split = stratified_split(p12["record_id"], p12["in_hospital_death"], seed=seed)
        return Cohort(apply_split(p12, split), "in_hospital_death", "record_id", f"PhysioNet 2012, {protocol}")
    if dataset == "p19":
        p19 = load_physionet2019(_required(data_dir, dataset), sets=[hospital] if hospital else None)
        split = stratified_split(p19["patient_id"], p19["sepsis"], seed=seed)
        where = f"hospital {hospital}" if hospital else "hospitals A and B"
        return Cohort(apply_split(p19, split, "patient_id"), "sepsis", "patient_id", f"PhysioNet 2019, {where}")
    if dataset == "synthetic":
        cohort = datasets.Dataset.from_list(make_sodium_cohort(num_patients, seed=seed))
        split = stratified_split(cohort["record_id"], cohort["label"], seed=seed)
        return Cohort(apply_split(cohort, split), "label", "record_id", "synthetic U-shaped sodium cohort")
    if dataset == "parquet":
        root = _required(data_dir, dataset)
        parts = {name: datasets.Dataset.from_parquet(str(root / f"{name}.parquet")) for name in ("train", "validation", "test")}
        if label_column is None:
            raise ValueError("--label_column is required for parquet cohorts")
        return Cohort(datasets.DatasetDict(parts), label_column, "patient_id", f"Parquet cohort in {root}")
    raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")


def _required(data_dir: str | Path | None, dataset: str) -> Path:
    if data_dir is None:
        raise ValueError(f"--data_dir is required for the {dataset} dataset")
    return Path(data_dir)


def fit_tokenizer(train, max_events: int) -> MedFuseTokenizer:
    """A tokenizer whose value statistics come from `train` only: the canonical clinical vocabulary when every
    feature is catalogued, else a vocabulary of the cohort's own names (synthetic data, an unmapped table)."""
    names = sorted({name for features in train["feature"] for name in features})
    if all(name in NUMERIC_FEATURES or name in CATEGORICAL_FEATURES for name in names):
        vocabulary = clinical_vocabulary(names).fit_statistics(train)
    else:
        vocabulary = FeatureVocabulary.from_events(train)
    return MedFuseTokenizer(vocabulary, max_events=max_events)


def streaming_patients(shards: list[str], seed: int, buffer_size: int = 2048) -> datasets.IterableDataset:
    """Patients of Parquet shards, read shard by shard and shuffled within a bounded buffer: memory does not grow
    with the cohort, so a cohort larger than memory can pretrain."""
    if not shards:
        raise FileNotFoundError("no Parquet shards given (did the glob match nothing?)")
    stream = datasets.load_dataset("parquet", data_files=list(shards), split="train", streaming=True)
    return stream.shuffle(seed=seed, buffer_size=buffer_size)
