"""The patients of each split a run trained, chose epochs and was tested on, kept in its folder (`split.json`).

A seeded split is redrawn from the data each time a recipe reads it, so a change in how it is drawn (a new
library version, another `--split_file`, another P12 protocol over the same stays) would silently give a resumed
run other training patients, or score a saved model on patients it trained on. The record catches both. It holds
patient ids and so stays in the run folder: `publish.py` copies named files only, never this one. It is a split file
too (`--split_file`), which also names the data its ids are of.
"""

import glob
import json
from collections.abc import Callable, Mapping
from pathlib import Path

from ..data.splits import DATA_SOURCE_KEY, check_disjoint, load_split, save_split
from .cohorts import COHORT_SOURCES, Cohort

SPLIT_RECORD = "split.json"


def cohort_split(cohort: Cohort) -> dict[str, list[str]]:
    """Every part's patient ids, labelled or not, as text (as a long-format split file reads them), sorted, and
    checked disjoint on every process (a Parquet cohort's parts are as written)."""
    split = {name: sorted(str(patient_id) for patient_id in part[cohort.id_column])
             for name, part in cohort.splits.items()}
    check_disjoint(split, cohort.description)
    return split


def record_split(output_dir: str | Path, cohort: Cohort, settings: Mapping, resuming: bool, writes: bool = True,
                 say: Callable[[str], None] = print) -> None:
    """Write the cohort's split, and the data it was read from (`settings`: the recipe's), into a new run's folder
    (`writes`: on the main process only); a run resuming a checkpoint must find the split it started on. A run from
    before the record resumes with a warning: its split cannot be checked."""
    output_dir = Path(output_dir)
    split = cohort_split(cohort)
    if not resuming:
        if writes:
            output_dir.mkdir(parents=True, exist_ok=True)
            save_split(split, output_dir / SPLIT_RECORD, data_source(settings))
        return
    if not refuse_another_split(output_dir, cohort, "resuming would train or choose epochs on other patients"):
        say(f"{output_dir}: the run predates {SPLIT_RECORD}, so the split it resumes on cannot be checked against "
            "the one it started on")  # nor is it written now: it would name a split the run may not have started on


def refuse_another_split(run_dir: str | Path, cohort: Cohort, consequence: str) -> bool:
    """Refuse, saying `consequence`, where the cohort's split is not the one the run recorded; False where the run
    recorded none (it predates the record)."""
    path = Path(run_dir) / SPLIT_RECORD
    if not path.is_file():
        return False
    recorded = load_split(path)
    moved = {name: len(set(recorded.get(name, ())) ^ set(ids)) for name, ids in cohort_split(cohort).items()}
    if any(moved.values()):
        changes = ", ".join(f"{name}: {count}" for name, count in moved.items() if count)
        raise SystemExit(f"{path}: the run started on another split of {cohort.description} than the data gives "
                         f"now (patients in one and not the other: {changes}); {consequence}. Start it afresh, or "
                         f"give the recorded split (long-format: --split_file {path})")
    return True


def refuse_seen_patients(model_dir: str | Path, scored_split: str, scored_ids: list, settings: Mapping,
                         say: Callable[[str], None] = print) -> None:
    """Refuse to report a held-out score for patients the model trained or chose epochs on: a split drawn otherwise
    than the run's, or another protocol over the same stays (P12's set-a test holds SeFT training stays). Checked
    where the model's folder lies in a run that recorded its split, and the data is the run's (`data_source`):
    another hospital's ids may coincide, and where the data differs, that is said."""
    path = Path(model_dir).parent / SPLIT_RECORD
    if not Path(model_dir).is_dir() or not path.is_file():  # a Hub model, or a run from before the record
        return
    recorded = json.loads(path.read_text(encoding="utf-8"))
    if recorded.get(DATA_SOURCE_KEY) != data_source(settings):
        say(f"the model's run read other data ({recorded.get(DATA_SOURCE_KEY)}) than this ({data_source(settings)}): "
            "whether it trained on any patient scored here is not checked")
        return
    seen_parts = {"validation": ("train",), "test": ("train", "validation")}.get(scored_split, ())
    seen = {patient_id for part in seen_parts for patient_id in recorded[part]}
    overlap = sorted(str(patient_id) for patient_id in scored_ids if str(patient_id) in seen)
    if overlap:
        raise SystemExit(f"{len(overlap)} of the {len(scored_ids)} patients of the {scored_split} split were in the "
                         f"model's training or validation split ({path}; e.g. {overlap[:5]}): their scores would not "
                         f"be held out. Score with the run's own split (long-format: --split_file {path}; P12: its "
                         "--protocol and --seed) or on patients it never saw")


def data_source(settings: Mapping) -> list:
    """What names the patients a recipe read (`CohortSource.release` or `.identifies`) as JSON, paths absolute and
    globs expanded, so that a run's record compares with another command's from another folder."""
    dataset = settings.get("dataset")
    source = COHORT_SOURCES.get(dataset)
    if source is None:  # a run that read no cohort (a streamed pretraining corpus)
        return [dataset]
    if source.release:
        return [source.release]
    return [dataset, *(located(settings.get(name)) if name in PATH_SETTINGS else settings.get(name)
                       for name in source.identifies)]


PATH_SETTINGS = ("data_dir", "events")


def located(paths: str | Path | list | None) -> list[str] | None:
    """Files and folders (one, a list, or quoted globs) as the sorted absolute paths they name."""
    if paths is None:
        return None
    named = [paths] if isinstance(paths, (str, Path)) else paths
    found = [match for path in named for match in (glob.glob(str(Path(path).expanduser())) or [str(path)])]
    return sorted(str(Path(match).expanduser().resolve()) for match in found)
