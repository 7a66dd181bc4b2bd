"""Training checkpoints that are either complete or ignored, never loaded half-way.

`accelerator.save_state` writes model, optimizer, scheduler and every process's RNG states into a staging folder;
the main process then records each file's SHA-256 and the loop position in a manifest and renames the folder into
place. A kill at any moment leaves either the previous checkpoints or a `.partial` folder that is never loaded.
Loading re-hashes every file against the manifest first. A run's tokenizer is saved at its start and read back when
it resumes (`run_tokenizer`), so the weights a checkpoint holds always meet the statistics they learnt on, and a run
resumes only under the settings it started with (`check_resumed_settings`).
"""

import json
import logging
import shutil
from pathlib import Path

from accelerate import Accelerator

from ..integrity import sha256_of
from ..tokenization_medfuse import MedFuseTokenizer
from .cohorts import save_strict_tokenizer, unread_cohort_settings

logger = logging.getLogger(__name__)

MANIFEST_NAME = "medfuse_checkpoint.json"
PREFIX = "step_"
# What a resumed run may change: where it is kept, how it checkpoints and logs, and how it is scored and carded. Its
# data, its start and its optimisation may not; a recipe adds what only stops it (fine-tuning's --max_steps).
RESUMABLE_SETTINGS = frozenset({
    "output_dir", "resume_from_checkpoint", "overwrite_output_dir", "config", "checkpoint_every_epoch",
    "checkpoint_every_steps",
    "logging_steps", "cpu", "eval_batch_size", "bootstrap_resamples", "min_patients_for_statistics",
    "drop_rare_features",
})
STARTING_WEIGHTS = ("init_from", "init_embeddings_from")  # folders of weights a run starts from


class CorruptCheckpointError(RuntimeError):
    """A checkpoint folder is incomplete or its files changed since it was written."""


def save_checkpoint(
    accelerator: Accelerator, checkpoints_dir: Path, step: int, loop_state: dict, keep: int = 2,
    settings: dict | None = None,
) -> Path:
    """Save the full training state at `step`; `loop_state` (epoch, batch, early-stopping state) and the run's
    `settings` (`recorded_settings`, checked when it resumes) go in the manifest."""
    final = Path(checkpoints_dir) / f"{PREFIX}{step:08d}"
    staging = final.with_name(final.name + ".partial")
    if accelerator.is_main_process and staging.exists():
        shutil.rmtree(staging)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    if accelerator.is_main_process:
        files = {str(path.relative_to(staging)): sha256_of(path) for path in sorted(staging.rglob("*"))
                 if path.is_file()}
        manifest = {"step": step, "loop_state": loop_state, "settings": settings, "files": files}
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        for old in complete_checkpoints(checkpoints_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def complete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Checkpoints with a manifest, oldest first; `.partial` folders (a run killed while saving) are skipped."""
    folder = Path(checkpoints_dir)
    if not folder.is_dir():
        return []
    partial = sorted(folder.glob(f"{PREFIX}*.partial"))
    if partial:
        logger.warning("ignoring incomplete checkpoints (a run stopped while saving): %s", [p.name for p in partial])
    return sorted(path for path in folder.glob(f"{PREFIX}*") if (path / MANIFEST_NAME).exists())


def resolve_checkpoint(resume_from: str, checkpoints_dir: Path) -> Path | None:
    """`"latest"` -> newest complete checkpoint (None if there is none yet), else the given folder."""
    if resume_from == "latest":
        found = complete_checkpoints(checkpoints_dir)
        return found[-1] if found else None
    return Path(resume_from)


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict:
    """Verify every file against the manifest, then restore the state; returns the saved loop state."""
    manifest_path = Path(path) / MANIFEST_NAME
    if not manifest_path.exists():
        raise CorruptCheckpointError(
            f"{path}: no {MANIFEST_NAME}; the checkpoint is incomplete (the run stopped while saving it) or is not "
            "a MedFuse training checkpoint. Resume from an earlier one or with --resume_from_checkpoint latest."
        )
    manifest = json.loads(manifest_path.read_text())
    for name, expected in manifest["files"].items():
        file = Path(path) / name
        if not file.exists():
            raise CorruptCheckpointError(f"{path}: {name} is missing; refusing to load a partial checkpoint")
        if sha256_of(file) != expected:
            raise CorruptCheckpointError(f"{path}: {name} does not match its recorded SHA-256; the file is corrupted")
    accelerator.load_state(str(path))
    return manifest["loop_state"]


def recorded_settings(args) -> dict:
    """A run's settings as its checkpoints and `run_info.json` record them (JSON values), with the weights it starts
    from named by their hashes too: a base pretrained again in place keeps its path. Cohort settings the dataset does
    not read (`--num_patients` of a hospital's export) are left out."""
    settings = json.loads(json.dumps(vars(args), default=str))
    unread = unread_cohort_settings(settings)
    settings = {key: value for key, value in settings.items() if key not in unread}
    for key in STARTING_WEIGHTS:
        if getattr(args, key, None) and Path(getattr(args, key)).is_dir():
            settings[f"{key}_weights"] = {file.name: sha256_of(file)
                                          for file in sorted(Path(getattr(args, key)).glob("*.safetensors"))}
    return settings


def checkpoint_to_resume(args) -> Path | None:
    """The checkpoint `--resume_from_checkpoint` names (`latest`: the newest complete one), or None where the run
    starts afresh (no flag, or `latest` with no checkpoint yet)."""
    if not args.resume_from_checkpoint:
        return None
    return resolve_checkpoint(args.resume_from_checkpoint, Path(args.output_dir) / "checkpoints")


def check_resumed_settings(args, may_change: frozenset[str] = frozenset()) -> None:
    """Refuse to resume a checkpoint under settings other than those it was saved with (its manifest's): its weights
    would go on under another start, learning rate or cohort, and the result would be neither run. An experiment
    rerun with a new base into the same folders would otherwise finish the old base's runs. `may_change`: the
    recipe's own settings that may differ besides `RESUMABLE_SETTINGS`. Checkpoints saved before settings were
    recorded are resumed unchecked."""
    checkpoint = checkpoint_to_resume(args)
    if checkpoint is None or not (checkpoint / MANIFEST_NAME).exists():  # none yet; an incomplete one fails to load
        return
    saved = json.loads((checkpoint / MANIFEST_NAME).read_text()).get("settings")
    if saved is not None:
        refuse_other_settings(saved, args, checkpoint, may_change)


def changed_settings(started: dict, args, may_change: frozenset[str] = frozenset()) -> list[str]:
    """How `args` differ from the settings `started` a run was made with, beyond `RESUMABLE_SETTINGS` and
    `may_change`, a phrase each. Weights a run starts from are judged by their hashes where both record them: a base
    or a run folder moved elsewhere is the same start."""
    now = recorded_settings(args)
    moved = {key for key in STARTING_WEIGHTS
             if started.get(f"{key}_weights") and started.get(f"{key}_weights") == now.get(f"{key}_weights")}
    changed = sorted(key for key in (started.keys() & now.keys()) - RESUMABLE_SETTINGS - may_change - moved
                     if started[key] != now[key])
    return [f"the weights in --{key.removesuffix('_weights')} changed" if key.endswith("_weights")
            else f"--{key} was {started[key]!r}, now {now[key]!r}" for key in changed]


def refuse_other_settings(started: dict, args, where: Path, may_change: frozenset[str] = frozenset()) -> None:
    """Refuse to go on from `where` (a checkpoint, a finished run) under `args` where they differ from the settings
    `started` it was made with (`changed_settings`)."""
    if said := changed_settings(started, args, may_change):
        raise SystemExit(f"{where} was made under other settings, and the run cannot go on from it under these: "
                         + "; ".join(said[:8]) + ". Go on with its own settings (the run's run_info.json) or start "
                         "a new --output_dir")


def run_tokenizer(args, fitted: MedFuseTokenizer, is_main_process: bool) -> MedFuseTokenizer:
    """The run's tokenizer, fixed at its start: saved to `<output_dir>/tokenizer`, and read back when the run resumes
    from a checkpoint, so that the weights it resumes (or, finished, tests again) meet the statistics they were
    trained with, even where this code or data would fit others (a later release's quantile knots, a changed
    export). Where the two differ, a warning says how. Runs saved before this kept it in their `model` folder."""
    output_dir = Path(args.output_dir)
    resuming = checkpoint_to_resume(args) is not None
    saved = next((folder for folder in (output_dir / "tokenizer", output_dir / "model")
                  if (folder / "preprocessor_config.json").exists()), None)
    if not (resuming and saved):
        if is_main_process:
            save_strict_tokenizer(fitted, output_dir / "tokenizer")
        return fitted
    tokenizer = MedFuseTokenizer.from_pretrained(saved, unknown_features=fitted.unknown_features)
    if tokenizer_settings(tokenizer) != tokenizer_settings(fitted):
        fitted_specs = {spec.name: spec for spec in fitted.feature_vocabulary}
        differing = [spec.name for spec in tokenizer.feature_vocabulary if fitted_specs.get(spec.name) != spec]
        logger.warning("%s: resumed with the tokenizer the run started with; fitted now it would differ%s", saved,
                       f" for {len(differing)} feature(s): {', '.join(differing[:10])}" if differing else
                       " in its settings")
    return tokenizer


def tokenizer_settings(tokenizer: MedFuseTokenizer) -> dict:
    """What a tokenizer encodes with: its saved settings, less where its code is found (`auto_map`, set on loading)."""
    return {key: value for key, value in tokenizer.to_dict().items() if key != "auto_map"}
