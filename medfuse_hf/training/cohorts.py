"""The cohorts recipes train on, by name: each with its train/validation/test split and label column.

One place maps `--dataset` to a loader and a split protocol, so every recipe reads data the same way.
"""

import copy
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets.table import InMemoryTable

from ..data import (
    LongFormatOptions,
    apply_split,
    clinical_vocabulary,
    load_long_format,
    load_physionet2012,
    load_physionet2012_sample,
    load_physionet2019,
    load_split,
    seft_split,
    set_a_test_split,
    stratified_split,
)
from ..data.cache import cached_load
from ..data.clinical_features import CATEGORICAL_FEATURES, NUMERIC_FEATURES, catalogue_units
from ..data.event_cleaning import patient_ids_as_text
from ..data.physionet2012 import OBSERVATION_MINUTES
from ..data.shards import shard_patient_ids
from ..data.splits import MIN_VALIDATION_PER_CLASS, check_disjoint, nested_subset, validation_subset
from ..feature_vocabulary import FeatureVocabulary, ValueNormalization
from ..synthetic import make_sodium_cohort
from ..tokenization_medfuse import MedFuseTokenizer

P12_PROTOCOLS = ("seft-split", "set-a-test", "random")
# The flags of a long-format table's window, which a model's tokenizer records (`event_window`) for scoring.
WINDOW_FLAGS = ("anchor_column", "max_hours", "end_column")
# P12's and P19's hours count from ICU admission (P19's `ICULOS`): a new table scored by a model of theirs should be
# read from that time, and for P12 through its first 48 hours.
ICU_ADMISSION = "ICU admission"
# P19: `whole-stay` (every event; label: sepsis at any hour) or `first-<H>h` (early prediction, below).
P19_EARLY_PROTOCOL = re.compile(r"first-(\d+)h")


@dataclass
class Cohort:
    splits: datasets.DatasetDict  # train / validation / test
    label_column: str | None  # None: a cohort without labels, for self-supervised pretraining
    id_column: str
    description: str
    task: str | None = None  # what the label means, for model cards: "in-hospital death", ...
    license: str = "as set by the data owner"
    hub_license: str = "other"  # the Hub's licence id for models trained on it
    citation: str | None = None
    # A table's units as read (feature -> unit; a feature it gave none for is absent), or None: the units are the
    # clinical catalogue's, as a public release's and the synthetic cohort's are.
    units: Mapping[str, str] | None = None
    # feature -> its events that gave no unit, read in `units`' unit for it (a model's unit cannot be checked there)
    events_without_unit: Mapping[str, int] = field(default_factory=dict)
    # The window its events were read through, as predict.py reads a new table: a long-format table's WINDOW_FLAGS
    # as given; a public cohort's `max_hours` after its `time_zero`, a time its files hold no column of.
    window: Mapping[str, Any] = field(default_factory=dict)

    def labelled(self, split: str) -> datasets.Dataset:
        """The split's patients that have a label (a missing outcome cannot be trained on or scored)."""
        return self.splits[split].filter(lambda value: value is not None, input_columns=self.label_column)


P12_TERMS = dict(
    task="in-hospital death, from the first 48 hours of the ICU stay",
    window={"time_zero": ICU_ADMISSION, "max_hours": OBSERVATION_MINUTES / 60},
    license="Open Data Commons Attribution License v1.0 (PhysioNet/CinC Challenge 2012)", hub_license="odc-by",
    citation="Silva I, Moody G, Scott DJ, Celi LA, Mark RG. Predicting In-Hospital Mortality of ICU Patients: The "
             "PhysioNet/Computing in Cardiology Challenge 2012. Computing in Cardiology 2012;39:245-248.",
)
P19_TERMS = dict(
    license="Creative Commons Attribution 4.0 (PhysioNet/CinC Challenge 2019)", hub_license="cc-by-4.0",
    citation="Reyna MA, Josef CS, Jeter R, et al. Early Prediction of Sepsis From Clinical Data: The PhysioNet/"
             "Computing in Cardiology Challenge 2019. Crit Care Med 2020;48(2):210-217.",
)


@dataclass(frozen=True)
class CohortRequest(LongFormatOptions):
    """Everything a cohort builder may need; each builder reads the fields that concern it. Recipes build it from
    their flags (`CohortRequest.from_settings(vars(args))`), `publish.py` from a run's recorded settings. A hospital's
    own long-format table (`--dataset long-format`) is read with the `LongFormatOptions` fields, keyword-only."""

    dataset: str
    data_dir: str | Path | None = None
    protocol: str | None = None
    hospital: str | None = None
    num_patients: int = 512
    seed: int = 0
    events: tuple[str, ...] | None = None  # long-format: the event tables
    labels: str | None = None  # long-format: one row per patient, with its label and anchor time
    split_file: str | None = None
    # A table read for a saved model (a long-format export, Parquet splits): a feature it gives no unit for is read
    # in the model's unit. The builders need not read it; the recipes check with it (`check_units`).
    assume_model_units: bool = False

    @classmethod
    def from_settings(cls, settings: Mapping) -> "CohortRequest":
        events = settings.get("events")
        return super().from_settings({**settings, "events": None if events is None else tuple(events)})


def load_cohort(dataset: str, *args, **kwargs) -> Cohort:
    """The cohort `dataset` names, from `COHORT_SOURCES`: `load_cohort("p12", data_dir, "seft-split")`, or with any
    other field of `CohortRequest` by keyword. P12 and P19 are parsed once and then read from an Arrow copy in the
    `datasets` cache (see `medfuse_hf.data.cache`)."""
    if dataset not in COHORT_SOURCES:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")
    return COHORT_SOURCES[dataset].build(CohortRequest(dataset, *args, **kwargs))


def load_cohort_from_settings(settings: Mapping) -> Cohort:
    """The cohort a recipe's flags (`vars(args)`) or a run's recorded settings describe."""
    request = CohortRequest.from_settings(settings)
    return load_cohort(**{field.name: getattr(request, field.name) for field in fields(request)})


def p12_sample_cohort(request: CohortRequest) -> Cohort:
    """The bundled 600-stay PhysioNet 2012 sample with its own split."""
    sample = load_physionet2012_sample()
    parts = {name: sample.filter(lambda part, name=name: part == name, input_columns="split")
             for name in ("train", "validation", "test")}
    return Cohort(datasets.DatasetDict(parts), "in_hospital_death", "record_id", "bundled PhysioNet 2012 sample",
                  **P12_TERMS)


def p12_cohort(request: CohortRequest) -> Cohort:
    """PhysioNet 2012; protocol `seft-split` (default), `set-a-test` or `random`."""
    protocol = request.protocol or "seft-split"
    if protocol not in P12_PROTOCOLS:
        raise ValueError(f"P12 protocol must be one of {P12_PROTOCOLS}, got {protocol!r}")
    root = _required(request.data_dir, request.dataset)
    p12 = cached_load("physionet2012", root, "all sets", lambda: load_physionet2012(root))
    if protocol == "seft-split":
        split = seft_split(root / "splits_seft")
    elif protocol == "set-a-test":
        split = set_a_test_split(p12, seed=request.seed)
    else:
        split = stratified_split(p12["record_id"], p12["in_hospital_death"], seed=request.seed)
    return Cohort(apply_split(p12, split), "in_hospital_death", "record_id", f"PhysioNet 2012, {protocol}",
                  **P12_TERMS)


def p19_cohort(request: CohortRequest) -> Cohort:
    """PhysioNet 2019; protocol `whole-stay` or `first-<H>h`, optionally one `hospital`, seeded stratified split."""
    protocol = request.protocol or "whole-stay"
    p19 = load_p19_task(_required(request.data_dir, request.dataset), protocol, request.hospital)
    split = stratified_split(p19["patient_id"], p19["sepsis"], seed=request.seed)
    where = f"hospital {request.hospital}" if request.hospital else "hospitals A and B"
    early = P19_EARLY_PROTOCOL.fullmatch(protocol)
    window = {"time_zero": ICU_ADMISSION, **({"max_hours": float(early.group(1))} if early else {})}
    return Cohort(apply_split(p19, split, "patient_id"), "sepsis", "patient_id",
                  f"PhysioNet 2019, {where}, {protocol}", p19_task(protocol), window=window, **P19_TERMS)


def synthetic_cohort(request: CohortRequest) -> Cohort:
    """The U-shaped sodium task of `medfuse_hf.synthetic`."""
    cohort = datasets.Dataset.from_list(make_sodium_cohort(request.num_patients, seed=request.seed))
    split = stratified_split(cohort["record_id"], cohort["label"], seed=request.seed)
    return Cohort(apply_split(cohort, split), "label", "record_id", "synthetic U-shaped sodium cohort",
                  "a label that rises at both ends of the sodium range",
                  license="synthetic data generated by medfuse_hf.synthetic, no restrictions",
                  hub_license="apache-2.0")


def parquet_cohort(request: CohortRequest) -> Cohort:
    """`data_dir` holding `train`/`validation`/`test.parquet`, e.g. written from `load_long_format`."""
    root = _required(request.data_dir, request.dataset)
    if request.label_column is None:
        raise ValueError("--label_column is required for parquet cohorts")
    parts = {name: datasets.Dataset.from_parquet(str(root / f"{name}.parquet"))
             for name in ("train", "validation", "test")}
    # No path in the description, which model cards publish; Parquet keeps no units: the model claims none, and a
    # checkpoint's are not assumed.
    return Cohort(datasets.DatasetDict(parts), request.label_column, "patient_id", "Parquet splits", units={})


def long_format_cohort(request: CohortRequest) -> Cohort:
    """A hospital's own long-format event table and labels table, split by `split_file` (JSON of
    train/validation/test patient ids, see `medfuse_hf.data.save_split`) or else a seeded stratified 80/10/10 split
    of the labelled patients (unlabeled patients are kept in training, where recipes leave them out). Without
    `label_column` (self-supervised pretraining) every patient is split at random and the cohort has no label."""
    if not request.events:
        raise ValueError("--dataset long-format needs --events")
    if bool(request.labels) != bool(request.label_column) and not (request.labels and request.anchor_column):
        raise ValueError("--dataset long-format: give --labels with --label_column "
                         "(the table only for anchors: --anchor_column)")
    patients, summary = load_long_format(list(request.events), request.labels, return_summary=True,
                                         **request.as_kwargs())
    if request.split_file:
        split = hospital_split(request.split_file)
    elif request.label_column is None:
        split = stratified_split(patients["patient_id"], [0] * len(patients), seed=request.seed)
    else:
        labels = patients[request.label_column]
        labelled = [patient_id for patient_id, label in zip(patients["patient_id"], labels) if label is not None]
        split = stratified_split(labelled, [label for label in labels if label is not None], seed=request.seed)
        split["train"] += [patient_id for patient_id, label in zip(patients["patient_id"], labels) if label is None]
    where = str(request.events[0]) + (f" and {len(request.events) - 1} more tables" if len(request.events) > 1 else "")
    parts = apply_split(patients, split, "patient_id")
    for name, part in parts.items():
        if len(part) == 0:
            raise ValueError(f"{request.split_file or 'the split'}: none of its {name!r} ids ({split[name][:3]}...) "
                             f"is a patient of {where} (ids such as {patients['patient_id'][:3]})")
    window = {flag: getattr(request, flag) for flag in WINDOW_FLAGS if getattr(request, flag) is not None}
    # the load summary's name for it (a count of tables): the description goes into model cards and manifests, which
    # leave the hospital, so never the export's paths
    return Cohort(parts, request.label_column, "patient_id", summary.source, units=summary.units,
                  events_without_unit=summary.events_without_unit, window=window)


def hospital_split(path: str) -> dict[str, list[str]]:
    """A split file's train/validation/test ids as the loader's ids are, text (7 and 7.0 in the JSON are patient
    "7"), checked disjoint as text: 7 in train and "7" in test are one patient."""
    split = load_split(path)
    if set(split) != {"train", "validation", "test"}:
        raise ValueError(f"{path}: a split file holds 'train', 'validation' and 'test', got {sorted(split)}")
    ids_as_text = {name: patient_ids_as_text(pd.Series(ids, dtype=object)).tolist() for name, ids in split.items()}
    check_disjoint(ids_as_text, path)
    return ids_as_text


@dataclass(frozen=True)
class CohortSource:
    """How a `--dataset` is built, and which `CohortRequest` fields it reads besides `dataset` and `seed`: the
    others are left out of run records and refused as flags (`unread_cohort_settings`), never silently ignored."""

    build: Callable[[CohortRequest], Cohort]
    reads: tuple[str, ...] = ()
    # What names the patients, whatever split or protocol is drawn over them (`run_split.data_source`): a public
    # release, whose ids are its patients' wherever it is stored, or else the settings that point at the data.
    release: str | None = None
    identifies: tuple[str, ...] = ()


COHORT_SOURCES = {  # --dataset name -> how its cohort is built: a new dataset is one entry
    "p12-sample": CohortSource(p12_sample_cohort, release="PhysioNet 2012"),  # 600 of its stays
    "p12": CohortSource(p12_cohort, ("data_dir", "protocol"), release="PhysioNet 2012"),
    "p19": CohortSource(p19_cohort, ("data_dir", "protocol", "hospital"), release="PhysioNet 2019"),
    "synthetic": CohortSource(synthetic_cohort, ("num_patients",), identifies=("num_patients", "seed")),
    "parquet": CohortSource(parquet_cohort, ("data_dir", "label_column", "assume_model_units"),
                            identifies=("data_dir",)),
    "long-format": CohortSource(long_format_cohort, ("events", "labels", "split_file", "assume_model_units",
                                                     *(option.name for option in fields(LongFormatOptions))),
                                identifies=("events",)),
}
DATASETS = tuple(COHORT_SOURCES)


def unread_cohort_settings(settings: Mapping) -> set[str]:
    """The cohort settings among a recipe's (`vars(args)`) that its data does not read: `--hospital` means nothing to
    P12, `--num_patients` nothing to a hospital's export, and a streamed corpus (`pretrain.py --parquet_shards`)
    reads none of them, `--dataset` included. Empty for a recipe without `--dataset`."""
    if "dataset" not in settings:
        return set()
    every = {request_field.name for request_field in fields(CohortRequest)} - {"seed"}
    if settings.get("parquet_shards"):
        return every
    return every - {"dataset", *COHORT_SOURCES[settings["dataset"]].reads}


def p19_task(protocol: str) -> str:
    """What a P19 protocol's label means, in words for a model card."""
    if protocol == "whole-stay":
        return "sepsis at any hour of the ICU stay, from every event of the stay"
    hours = P19_EARLY_PROTOCOL.fullmatch(protocol).group(1)
    return (f"sepsis later in the stay (its label turns on six hours before clinical onset, after ICU hour {hours}), "
            f"from the events of the first {hours} hours, for patients still in the ICU and not yet labelled "
            "septic then")


def load_p19_task(root: Path, protocol: str, hospital: str | None) -> datasets.Dataset:
    """`whole-stay`: every event of the stay, label = sepsis at any hour. It is easy for the wrong reasons: events
    after onset are inputs, and septic patients stay longer (more events), so a barely trained model scores AUROC
    ~0.8. `first-<H>h` is the early-prediction task: the events of the first H ICU hours, for patients still in the
    ICU after hour H and not labelled septic by then (the hourly label turns 1 six hours before clinical onset);
    label = labelled septic later in the stay."""
    sets = [hospital] if hospital else None
    if protocol == "whole-stay":
        return cached_load("physionet2019", root, f"sets {sets}", lambda: load_physionet2019(root, sets=sets))
    early = P19_EARLY_PROTOCOL.fullmatch(protocol)
    if early is None:
        raise ValueError(f"P19 protocol must be 'whole-stay' or 'first-<hours>h' (e.g. first-24h), got {protocol!r}")
    hours = int(early.group(1))
    if hours < 1:
        raise ValueError(f"P19 protocol {protocol!r}: the observation window needs at least one hour")
    p19 = cached_load("physionet2019", root, f"sets {sets}, observation_hours {hours}",
                      lambda: load_physionet2019(root, sets=sets, observation_hours=hours))
    return p19.filter(lambda stay, onset: max(stay) > hours and (onset is None or onset > hours),
                      input_columns=["hours", "sepsis_onset_hour"])


def _required(data_dir: str | Path | None, dataset: str) -> Path:
    if data_dir is None:
        raise ValueError(f"--data_dir is required for the {dataset} dataset")
    return Path(data_dir)


def feature_names(patients: datasets.Dataset) -> set[str]:
    """Every feature name the patients' events use, read from the Arrow column (a table of 100 million events is
    not listed as Python objects)."""
    features = patients.with_format("arrow")["feature"]
    return {str(name) for name in pc.unique(pc.list_flatten(features)).to_pylist()}


def cohort_units(cohort: Cohort, features: Iterable[str]) -> dict[str, str]:
    """The units of `features` of a cohort, for `check_units`: a table's as read (a feature it gave none for is
    absent), else the clinical catalogue's, which a public release's and the synthetic cohort's values are in."""
    if cohort.units is not None:
        return dict(cohort.units)
    return catalogue_units(features)


def fit_tokenizer(
    train, max_events: int, normalization: ValueNormalization = "robust_zscore", units: Mapping[str, str] | None = None
) -> MedFuseTokenizer:
    """A tokenizer whose value statistics come from `train` only, normalising values by `normalization`: the
    canonical clinical vocabulary when every feature is catalogued, else a vocabulary of the cohort's own names
    (synthetic data, an unmapped table).

    Its vocabulary is the features `train` has, so validation, test, a stream's later patients or another
    hospital may hold a feature it lacks (a rare lab missing from a 1% training subset): the model has learnt
    nothing of it, so its events are dropped and each such feature is named once in the log, not an error.
    `units`: a table's units as read (`Cohort.units`); a catalogued feature it gave none for then claims no unit
    rather than the catalogue's, which its statistics need not be in."""
    names = sorted(feature_names(train))
    if all(name in NUMERIC_FEATURES or name in CATEGORICAL_FEATURES for name in names):
        vocabulary = clinical_vocabulary(names)
    else:
        vocabulary = FeatureVocabulary.of_names(names)
    vocabulary = vocabulary.fit_statistics(train, normalization=normalization)
    if units is not None:  # a table's units as read describe these statistics; one it gave no unit for has none
        vocabulary = FeatureVocabulary([replace(spec, unit=units.get(spec.name)) for spec in vocabulary])
    return MedFuseTokenizer(vocabulary, max_events=max_events, unknown_features="drop")


def save_strict_tokenizer(tokenizer: MedFuseTokenizer, path: str | Path) -> None:
    """Save a recipe's tokenizer as its users will load it: unknown features an error again (the library default),
    so a feature another hospital names differently fails loudly instead of vanishing; only a recipe, whose
    vocabulary is one training split's, drops them."""
    strict = copy.copy(tokenizer)
    strict.unknown_features = "error"
    strict.save_pretrained(path)


def streaming_patients(
    shards: list[str], seed: int, buffer_size: int = 2048, open_shards: int = 2
) -> datasets.IterableDataset:
    """Patients of Parquet shards, streamed and shuffled within a bounded buffer, so a cohort larger than memory can
    pretrain. The buffer draws from `open_shards` shards at a time and each open shard holds one decoded row group:
    more mixes patients of more shards, but `datasets`' default (10) costs ten row groups of memory."""
    if not shards:
        raise FileNotFoundError("no Parquet shards given")
    if open_shards < 1 or buffer_size < 1:
        raise ValueError(f"open_shards and buffer_size must be at least 1, got {open_shards} and {buffer_size}")
    stream = datasets.load_dataset("parquet", data_files=list(shards), split="train", streaming=True)
    return stream.shuffle(seed=seed, buffer_size=buffer_size, max_buffer_input_shards=open_shards)


def first_patients(stream: datasets.IterableDataset, count: int) -> datasets.Dataset:
    """The stream's first `count` patients, kept as Arrow columns: as Python lists, 5,000 patients of 2,500 events
    took 2.5 GiB more."""
    batches = list(stream.take(count).with_format("arrow").iter(batch_size=256))
    return datasets.Dataset(InMemoryTable(pa.concat_tables(batches)))


def held_out_patients(shards: list[str], training_shards: list[str]) -> datasets.Dataset:
    """A streamed cohort's held-out patients (a few thousand), in memory as Arrow columns, for its validation loss.
    Refused where a shard or a patient is also trained on: the loss would then measure recall, not what the base
    learnt."""
    if not shards:
        raise FileNotFoundError("no validation shards given")
    trained_on = {Path(path).resolve() for path in training_shards}
    if twice := [path for path in shards if Path(path).resolve() in trained_on]:
        raise ValueError(f"{twice[0]} is both a training and a validation shard: the globs overlap")
    table = pa.concat_tables([pq.read_table(path) for path in shards], promote_options="default")
    held_out = set(table["patient_id"].to_pylist())
    for path in training_shards:
        if twice := held_out.intersection(shard_patient_ids(path)):
            raise ValueError(f"{path}: {len(twice)} of its patients (e.g. {sorted(twice)[:3]}) are also among the "
                             f"validation patients of {shards[0]}")
    return datasets.Dataset(InMemoryTable(table))


def training_splits(args, cohort: Cohort, say: Callable[[str], None] = print) -> dict[str, datasets.Dataset]:
    """The cohort's labelled patients by split, the training (`--train_fraction`) and validation
    (`--validation_fraction`) splits cut to a stratified, seeded share where asked: what a fine-tuning run trained
    and was scored on, and so what anything compared with it must use."""
    label = cohort.label_column
    splits = {name: cohort.labelled(name) for name in cohort.splits}
    for name, part in splits.items():
        if len(part) < len(cohort.splits[name]):
            say(f"{name}: {len(cohort.splits[name]) - len(part)} patients without {label!r} left out")
    if args.train_fraction < 1.0:  # the small-target setting of transfer experiments: stratified, seeded, nested
        train = splits["train"]
        splits["train"] = train.select(nested_subset(train[label], args.train_fraction, args.seed))
        say(f"training on {len(splits['train'])} patients ({args.train_fraction:.0%} of the training "
                          "split)")
    if args.validation_fraction < 1.0:  # what a small hospital has to choose epochs on: as few, yet both classes
        validation = splits["validation"]
        splits["validation"] = validation.select(validation_subset(validation[label], args.validation_fraction,
                                                                   args.seed))
        say(f"validating on {len(splits['validation'])} patients ({args.validation_fraction:.0%} of the "
                          f"validation split, at least {MIN_VALIDATION_PER_CLASS} of each class)")
    positives = int(np.sum(splits["train"][label]))
    if len(splits["train"]) < args.batch_size or positives in (0, len(splits["train"])):
        raise SystemExit(f"{cohort.description}: {len(splits['train'])} training patients ({positives} positive, "
                         f"--train_fraction {args.train_fraction}); training needs at least --batch_size "
                         f"({args.batch_size}) and both classes")
    for name in ("validation", "test"):  # before training, not after its first epoch
        positives = int(np.sum(splits[name][label]))
        if positives in (0, len(splits[name])):
            raise SystemExit(f"{cohort.description}: the {name} split's {len(splits[name])} labelled patients are "
                             f"{positives} positive: its AUROC and AUPRC need both classes (see the split file)")
    return splits


def compare_with_the_training_window(cohort: Cohort, tokenizer: MedFuseTokenizer) -> dict[str, Any]:
    """A public cohort's window (its loader's: P12's 48 hours, P19's `--protocol`) against the one the model was
    trained on. A model of P19's first 24 hours scored on whole stays reads hours, and a task, it never trained on:
    kept, as asked, but said, and both are returned for the report."""
    used, trained = dict(cohort.window), tokenizer.event_window
    if trained is not None and used != trained:
        print(f"{cohort.description} is read {_window_text(used)}; the model was trained {_window_text(trained)}: "
              "scoring as asked (a P19 cohort's window is its --protocol first-<H>h)")
    return {"used": used, "trained": "not recorded" if trained is None else trained}


def _window_text(window: Mapping[str, Any]) -> str:
    if window.get("max_hours") is None:
        return "whole, with no window"
    return f"through the first {window['max_hours']:g} hours" + (
        f" from {window['time_zero']}" if window.get("time_zero") else "")


def follow_the_training_window(args, tokenizer: MedFuseTokenizer) -> dict[str, dict]:
    """A long-format table read for a saved model (to score or to evaluate it) through the window the model was
    trained on (`event_window`, recorded by finetune.py), where the flags leave it out; a window given that differs
    (a flag training had otherwise or, where a window is recorded, not at all) is kept, as asked, and said. A model of
    a public cohort counted hours from a time (`time_zero`, ICU admission) that `--anchor_column` names in the table
    (as the model wants, so not said); without it, hours given as numbers are read as they are and timestamps count
    from each patient's first event, which is said. Returns each flag's value used and trained with (None: not
    given; a model with no recorded window: trained unknown), and the time zero's."""
    window = tokenizer.event_window or {}
    time_zero = window.get("time_zero")
    for flag in WINDOW_FLAGS:
        trained, given = window.get(flag), getattr(args, flag)
        if given == trained or (tokenizer.event_window is None and given is not None) or (
                flag == "anchor_column" and time_zero):
            continue
        if given is None:
            setattr(args, flag, trained)
            print(f"--{flag} {trained}: the model's training window")
        else:
            print(f"--{flag} {given}: the model was trained "
                  f"{f'with --{flag} {trained}' if trained is not None else f'without --{flag}'}; scoring as asked")
    unanchored = "no anchor: hours as given, timestamps from each patient's first event"
    if time_zero and args.anchor_column is None:
        print(f"the model's hours count from each stay's {time_zero}: without --anchor_column naming that time, the "
              "table's times are read as given where they are hours, and from each patient's first event where they "
              "are timestamps")
    used = {flag: {"used": getattr(args, flag),
                   "trained": "not recorded" if tokenizer.event_window is None else window.get(flag)}
            for flag in WINDOW_FLAGS}
    return {**used, **({"time_zero": {"used": args.anchor_column or unanchored, "trained": time_zero}}
                       if time_zero else {})}
