"""Patients written as Parquet shards, the input of streamed pretraining (`recipes/pretrain.py --parquet_shards`).

Shards hold events only: `patient_id`, `source`, and the `feature` / `value` / `time` lists. A label, outcome or
descriptor column never enters them, so a corpus cannot leak the targets a later fine-tuning is scored on. Patients
are shuffled before they are cut into shards, and each shard is written in small row groups: the stream's shuffle
buffer then mixes sources and hospitals although it decodes only a few row groups at a time. A share of the
patients can be held out in `validation/`, outside the training shards' glob: pretraining measures its objective on
them each epoch and stops when that loss stops falling (`recipes/pretrain.py --validation_shards --patience`).
"""

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import datasets
import pyarrow.parquet as pq

from ..progress import progress_bar

CORPUS_MANIFEST = "corpus.json"
VALIDATION_FOLDER = "validation"  # held-out patients, beside the training shards and out of their glob
EVENT_FEATURES = datasets.Features({
    "patient_id": datasets.Value("string"),
    "source": datasets.Value("string"),
    "feature": datasets.List(datasets.Value("string")),
    "value": datasets.List(datasets.Value("float64")),
    "time": datasets.List(datasets.Value("float32")),
})


def events_only(dataset: datasets.Dataset, source: str, id_column: str) -> datasets.Dataset:
    """A cohort's events, ids prefixed with `source` ("p12:132539") so that ids of different sources never meet."""
    missing = {id_column, "feature", "value", "time"} - set(dataset.column_names)
    if missing:
        raise ValueError(f"{source}: the cohort lacks the columns {sorted(missing)}")
    events = dataset.select_columns([id_column, "feature", "value", "time"])
    events = events.map(
        lambda ids: {"patient_id": [f"{source}:{patient}" for patient in ids], "source": [source] * len(ids)},
        input_columns=id_column, batched=True, remove_columns=[id_column],
    )
    return events.cast(EVENT_FEATURES)


def shuffled_corpus(sources: Mapping[str, datasets.Dataset], seed: int = 0) -> datasets.Dataset:
    """The patients of every source (already `events_only`) in one seeded random order, each id once."""
    corpus = datasets.concatenate_datasets(list(sources.values())).shuffle(seed=seed).flatten_indices()
    if not len(corpus):
        raise ValueError("no patients to write")
    duplicates = len(corpus) - len(set(corpus["patient_id"]))
    if duplicates:
        raise ValueError(f"{duplicates} patient ids occur twice: a patient would be trained on twice")
    return corpus


def shard_patient_ids(path: str | Path) -> list[str]:
    """The patients a written shard holds, read from its `patient_id` column alone."""
    return pq.read_table(path, columns=["patient_id"])["patient_id"].to_pylist()


def held_out_count(patients: int, fraction: float) -> int:
    """How many of `patients` a corpus holds out for pretraining's validation loss: `fraction` of them, at least one
    where the fraction is not 0, and never all."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the validation fraction must lie in [0, 1), got {fraction}")
    if fraction == 0.0 or patients < 2:
        return 0
    return min(max(1, round(patients * fraction)), patients - 1)


def refuse_written_shards(folder: Path) -> None:
    """Shards already in `folder` would be streamed beside new ones by a glob over it: patients twice."""
    old_shards = sorted(Path(folder).glob("shard-*.parquet"))
    if old_shards:
        raise FileExistsError(f"{folder} already holds {len(old_shards)} shards ({old_shards[0].name}, ...): "
                              "write to an empty folder")


def write_patient_shards(
    corpus: datasets.Dataset, output_dir: str | Path, patients_per_shard: int = 4096, row_group_size: int = 256
) -> list[Path]:
    """Cut `corpus` (`shuffled_corpus`, or a part of it) into numbered shards in `output_dir`, which must hold none."""
    output_dir = Path(output_dir)
    refuse_written_shards(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    count = math.ceil(len(corpus) / patients_per_shard)
    paths = []
    described = f"writing {count} shard{'s' if count > 1 else ''}"
    with progress_bar(total=len(corpus), desc=described, unit=" patients", unit_scale=True) as bar:
        for index in range(count):
            path = output_dir / f"shard-{index:05d}-of-{count:05d}.parquet"
            shard = corpus.shard(count, index, contiguous=True)
            shard.to_parquet(path, batch_size=row_group_size)
            paths.append(path)
            bar.update(len(shard))
    return paths


def write_corpus_manifest(output_dir: str | Path, manifest: Mapping) -> Path:
    """`corpus.json` beside the shards: what they hold (description, sources with licences and citations), read back
    by `read_corpus_manifest` so that a model pretrained on them is carded without retyping it."""
    path = Path(output_dir) / CORPUS_MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def read_corpus_manifest(shards: Sequence[str | Path]) -> dict | None:
    """The manifest of shards that all lie in one folder holding a `corpus.json`, else None."""
    folders = {Path(shard).parent for shard in shards}
    if len(folders) != 1 or not (path := folders.pop() / CORPUS_MANIFEST).exists():
        return None
    return json.loads(path.read_text())


__all__ = [
    "EVENT_FEATURES", "VALIDATION_FOLDER", "events_only", "held_out_count", "read_corpus_manifest",
    "refuse_written_shards", "shuffled_corpus", "write_corpus_manifest", "write_patient_shards",
]
