"""The patients of each split a run trained, chose epochs and was tested on, kept in its folder (`split.json`).

A seeded split is redrawn from the data each time a recipe reads it, so a change in how it is drawn (a new
library version, another `--split_file`, another P12 protocol over the same stays) would silently give a resumed
run other training patients, or score a saved model on patients it trained on. The record catches both. It holds
patient ids and so stays in the run folder: `publish.py` copies named files only, never this one.
"""

from collections.abc import Callable, Mapping
from pathlib import Path

from ..data.splits import load_split, save_split
from .cohorts import COHORT_SOURCES, Cohort
from .run_info import read_run_settings

SPLIT_RECORD = "split.json"


def cohort_split(cohort: Cohort) -> dict[str, list[str]]:
    """Every part's patient ids, labelled or not, as text (as a long-format split file reads them), sorted."""
    return {name: sorted(str(patient_id) for patient_id in part[cohort.id_column])
            for name, part in cohort.splits.items()}


def record_split(output_dir: str | Path, cohort: Cohort, resuming: bool, writes: bool = True,
                 say: Callable[[str], None] = print) -> None:
    """Write the cohort's split into a new run's folder (`writes`: on the main process only); a resumed run must find
    the split it started on. A run from before the record resumes with a warning: its split cannot be checked."""
    output_dir = Path(output_dir)
    if not resuming:
        if writes:
            output_dir.mkdir(parents=True, exist_ok=True)
            save_split(cohort_split(cohort), output_dir / SPLIT_RECORD)
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


def patients_seen_in_training(model_dir: str | Path, scored_split: str) -> tuple[Path, set[str]] | None:
    """The ids a saved model's run trained on, with those it chose epochs on unless `scored_split` is the
    validation split itself; None where the model's folder lies in no run with a split record (a Hub model, an
    older run)."""
    path = Path(model_dir).parent / SPLIT_RECORD
    if not path.is_file():
        return None
    recorded = load_split(path)
    seen_parts = {"validation": ("train",), "test": ("train", "validation")}.get(scored_split, ())
    return path, {patient_id for part in seen_parts for patient_id in recorded.get(part, ())}


def refuse_seen_patients(model_dir: str | Path, scored_split: str, scored_ids: list, settings: Mapping) -> None:
    """Refuse to report a held-out score for patients the model trained or chose epochs on: a split drawn otherwise
    than the run's, or another protocol over the same stays (P12's set-a test holds SeFT training stays). Only
    where the patients are the run's own (`data_source`): another hospital's ids may coincide."""
    seen = patients_seen_in_training(model_dir, scored_split)
    if seen is None or data_source(read_run_settings(Path(model_dir).parent)) != data_source(settings):
        return
    path, seen_ids = seen
    overlap = sorted(str(patient_id) for patient_id in scored_ids if str(patient_id) in seen_ids)
    if overlap:
        raise SystemExit(f"{len(overlap)} of the {len(scored_ids)} patients of the {scored_split} split were in the "
                         f"model's training or validation split ({path}; e.g. {overlap[:5]}): their scores would not "
                         f"be held out. Score with the run's own split (long-format: --split_file {path}; P12: its "
                         "--protocol and --seed) or on patients it never saw")


def data_source(settings: Mapping) -> tuple:
    """What identifies the patients a recipe read (`CohortSource.identifies`), paths resolved."""
    dataset = settings.get("dataset")
    if dataset not in COHORT_SOURCES:  # a run that read no cohort (a streamed pretraining corpus)
        return (dataset,)
    return (dataset, *(resolved(settings.get(name)) for name in COHORT_SOURCES[dataset].identifies))


def resolved(value):
    """Paths (one, or a list of tables) as absolute paths; other settings as they are."""
    if isinstance(value, (list, tuple)):
        return tuple(resolved(item) for item in value)
    if isinstance(value, (str, Path)):
        return str(Path(value).expanduser().resolve())
    return value
