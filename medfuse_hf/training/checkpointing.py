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
from .cohorts import save_strict_tokenizer

logger = logging.getLogger(__name__)

MANIFEST_NAME = "medfuse_checkpoint.json"
PREFIX = "step_"
# What a resumed run may change: where it and its data are (a moved folder; the tokenizer guards the data's content),
# how it checkpoints, logs and is scored or carded, and where it stops (`--max_steps` cuts a run into pieces).
RESUMABLE_SETTINGS = frozenset({
    "output_dir", "resume_from_checkpoint", "config", "data_dir", "events", "labels", "split_file", "parquet_shards",
    "validation_shards", "checkpoint_every_epoch", "checkpoint_every_steps", "logging_steps", "cpu",
    "eval_batch_size", "bootstrap_resamples", "min_patients_for_statistics", "drop_rare_features", "max_steps",
})


class CorruptCheckpointError(RuntimeError):
    """A checkpoint folder is incomplete or its files changed since it was written."""


def save_checkpoint(
    accelerator: Accelerator, checkpoints_dir: Path, step: int, loop_state: dict, keep: int = 2
) -> Path:
    """Save the full training state at `step`; `loop_state` (epoch, batch, early-stopping state) goes in the
    manifest."""
    final = Path(checkpoints_dir) / f"{PREFIX}{step:08d}"
    staging = final.with_name(final.name + ".partial")
    if accelerator.is_main_process and staging.exists():
        shutil.rmtree(staging)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    if accelerator.is_main_process:
        files = {str(path.relative_to(staging)): sha256_of(path) for path in sorted(staging.rglob("*"))
                 if path.is_file()}
        manifest = {"step": step, "loop_state": loop_state, "files": files}
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


def check_resumed_settings(args) -> None:
    """Refuse to resume a run from its checkpoint under settings other than those it started with
    (`refuse_other_settings`)."""
    output_dir = Path(args.output_dir)
    if args.resume_from_checkpoint and resolve_checkpoint(args.resume_from_checkpoint, output_dir / "checkpoints"):
        refuse_other_settings(args)


def refuse_other_settings(args) -> None:
    """Refuse to go on with the run in `args.output_dir` (resume it, or reuse it finished) under settings other than
    those it started with, its `run_info.json`: its weights would go on under another start, learning rate or cohort,
    and the result would be neither run. An experiment rerun with a new base into the same folders would otherwise
    finish, or reuse, the old base's runs."""
    record = Path(args.output_dir) / "run_info.json"
    if not record.exists():
        return
    started = json.loads(record.read_text())["config"]
    now = json.loads(json.dumps(vars(args), default=str))  # as run_info.json records them
    changed = sorted(key for key in (started.keys() & now.keys()) - RESUMABLE_SETTINGS if started[key] != now[key])
    if changed:
        raise SystemExit(f"{args.output_dir} started with other settings, and cannot go on under these: "
                         + "; ".join(f"--{key} was {started[key]!r}, now {now[key]!r}" for key in changed[:8])
                         + ". Go on with the run's own settings (its run_info.json) or start a new --output_dir")


def run_tokenizer(args, fitted: MedFuseTokenizer, is_main_process: bool) -> MedFuseTokenizer:
    """The run's tokenizer, fixed at its start: saved to `<output_dir>/tokenizer`, and read back when the run resumes
    from a checkpoint, so that the weights it resumes (or, finished, tests again) meet the statistics they were
    trained with, even where this code or data would fit others (a later release's quantile knots, a changed
    export). Where the two differ, a warning says how. Runs saved before this kept it in their `model` folder."""
    output_dir = Path(args.output_dir)
    resuming = args.resume_from_checkpoint and resolve_checkpoint(args.resume_from_checkpoint,
                                                                  output_dir / "checkpoints")
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
