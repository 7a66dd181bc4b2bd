"""What the recipes share around their own steps: the start of a run, its optimizer and schedule, where it stands
(`LoopState`, saved with every checkpoint and restored on resumption), one epoch resumable at any batch, and the
end of the run."""

import argparse
import gc
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import DistributedType, set_seed
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from transformers import get_scheduler

from ..progress import progress_bar
from .checkpointing import (
    check_resumed_settings,
    checkpoint_to_resume,
    complete_checkpoints,
    load_checkpoint,
    recorded_settings,
    save_checkpoint,
)
from .evaluation import ROW_COLUMN
from .run_info import write_run_info
from .tracking import JSONLinesTracker


@dataclass
class LoopState:
    """Where a run stands: its place in the data, the optimizer steps taken, early stopping's record (fine-tuning),
    and this process's throughput counters. Saved with every checkpoint, so a resumed run goes on from here."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best: float = -math.inf
    best_epoch: int | None = None
    stale_epochs: int = 0
    patients: int = 0
    events: int = 0
    train_seconds: float = 0.0

    def save(self, accelerator: Accelerator, args: argparse.Namespace) -> None:
        """A checkpoint in `<output_dir>/checkpoints` of this state and the run's settings."""
        save_checkpoint(accelerator, Path(args.output_dir) / "checkpoints", self.step, asdict(self),
                        settings=recorded_settings(args))

    def record_validation(self, value: float, epoch: int) -> bool:
        """Early stopping's record after validating `epoch` (counted from 0; higher `value` is better): whether it is
        the best yet, the epoch to keep."""
        if value > self.best:
            self.best, self.best_epoch, self.stale_epochs = value, epoch + 1, 0
            return True
        self.stale_epochs += 1
        return False


SHARDED = (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)


def start_run(args: argparse.Namespace, may_change: frozenset[str] = frozenset()) -> tuple[Accelerator, dict]:
    """The Accelerator a recipe trains under, seeded, with its JSON-lines tracker and the run's record written.
    Each global batch is split across processes, so the optimisation is the same for any process count. A run
    resumed under other settings than its checkpoint's is refused before anything is written (`may_change`: as in
    `check_resumed_settings`)."""
    check_resumed_settings(args, may_change)
    output_dir = Path(args.output_dir)
    refuse_an_earlier_run(args)
    accelerator = Accelerator(cpu=args.cpu, mixed_precision=args.mixed_precision,
                              gradient_accumulation_steps=args.gradient_accumulation_steps,
                              dataloader_config=DataLoaderConfiguration(split_batches=True),
                              log_with=[JSONLinesTracker("logs", output_dir)], project_dir=str(output_dir))
    if args.overwrite_output_dir and accelerator.is_main_process:
        for name in RUN_ARTEFACTS:
            path = output_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    if accelerator.distributed_type in SHARDED:
        raise SystemExit(f"{accelerator.distributed_type.value}: the recipes train a whole model on every process "
                         "(DDP: `accelerate launch --multi_gpu`). MedFuse fits on any device, and a sharded model "
                         "would need every process in forwards that only some make (validation, saving), and hang.")
    set_seed(args.seed)
    run_info = write_run_info(output_dir, recorded_settings(args), accelerator,
                              resuming=checkpoint_to_resume(args) is not None)
    accelerator.init_trackers("logs", config={key: str(value) for key, value in vars(args).items()})
    return accelerator, run_info


# What a run writes in its folder and `--overwrite_output_dir` removes first (not an LP-FT run's `probe/`, a run of
# its own, nor what every run rewrites: run_info.json, tokenizer/).
RUN_ARTEFACTS = ("model", "checkpoints", "logs", "plots", "feature_embeddings", "test_metrics.json",
                 "test_predictions.csv", "pretraining_metrics.json")


def refuse_an_earlier_run(args: argparse.Namespace) -> None:
    """A run not asked to resume must not start in a folder holding another run's checkpoints or model: `latest`
    would later resume the other run's newest checkpoint, and files of both would mix. Nothing is deleted unless
    `--overwrite_output_dir` says so. (Asked to resume `latest` where there is no checkpoint, a run starts afresh, and
    its first validation replaces the model.)"""
    if args.overwrite_output_dir and args.resume_from_checkpoint:
        raise SystemExit("--overwrite_output_dir starts afresh, --resume_from_checkpoint goes on: give one")
    if args.resume_from_checkpoint is not None or args.overwrite_output_dir:
        return
    output_dir = Path(args.output_dir)
    if complete_checkpoints(output_dir / "checkpoints"):
        raise SystemExit(f"{output_dir} holds an earlier run's checkpoints: resume it with --resume_from_checkpoint "
                         "latest, start afresh with --overwrite_output_dir, or give another --output_dir")
    if (output_dir / "model").exists():
        raise SystemExit(f"{output_dir} holds an earlier run's model/ and no checkpoint to resume: start afresh with "
                         "--overwrite_output_dir, or give another --output_dir")


def optimizer_and_scheduler(model: torch.nn.Module, args: argparse.Namespace, total_steps: int) -> tuple:
    """AdamW and `--lr_scheduler` over `total_steps` optimizer steps, warmed up over `--warmup_ratio` of them."""
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]  # a probe's head only
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = get_scheduler(args.lr_scheduler, optimizer, num_warmup_steps=int(args.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    return optimizer, scheduler


def resume(accelerator: Accelerator, args: argparse.Namespace) -> LoopState:
    """After `accelerator.prepare`: `--resume_from_checkpoint` (a folder, or "latest", which starts fresh when there
    is none yet) restores every prepared object and returns where the run stood."""
    checkpoint = checkpoint_to_resume(args)
    if checkpoint is None:
        return LoopState()
    state = LoopState(**load_checkpoint(accelerator, checkpoint))
    accelerator.print(f"resumed from {checkpoint}: epoch {state.epoch}, batch {state.batch}, step {state.step}")
    return state


def train_epoch(
    accelerator: Accelerator,
    model,
    optimizer,
    scheduler,
    train_loader: DataLoader,
    epoch: int,
    state: LoopState,
    args: argparse.Namespace,
    reseed: Callable[[int], None],
    after_step: Callable[[], None] | None = None,
) -> tuple[bool, int]:
    """Train on `epoch` from batch `state.batch` on, updating `state` as it goes (checkpoints save it). Returns
    whether the epoch was completed (not cut by `--max_steps`) and the number of batches this process trained on.
    `after_step` runs after every optimizer step (a weight average's update).

    The data order must be a function of (seed, epoch) alone, so that a resumed run sees the batches it would have
    seen: Accelerate re-applies its loader's epoch counter when iteration starts, and `reseed(epoch)` sets the
    samplers Accelerate cannot reach (a custom batch sampler inside a multi-process shard) and the collator's draws
    (event dropout, pretraining's cut-offs and hidden values). Dropout is seeded per batch, below.
    """
    batches = accelerator.skip_first_batches(train_loader, state.batch) if state.batch else train_loader
    batches.set_epoch(epoch)
    reseed(epoch)
    try:
        total = len(train_loader)
    except TypeError:  # a streamed dataset has no length
        total = None
    trained, start = 0, time.perf_counter()
    for batch in progress_bar(batches, desc=f"epoch {epoch + 1}", disable=not accelerator.is_local_main_process,
                              initial=state.batch, total=total):
        if args.max_steps and state.step >= args.max_steps:  # checked before a batch, so that a pass ending
            return False, trained  # exactly at --max_steps counts as completed (and is validated)
        batch.pop(ROW_COLUMN, None)
        # Dropout's masks keyed to (seed, epoch, batch, process): a resumed run restores the global torch state of
        # its checkpoint, but Accelerate's loaders draw from that state as a pass starts or is skipped into, so the
        # resumed run would drop other units than an uninterrupted one from then on.
        torch.manual_seed(random.Random(f"{args.seed}:{epoch}:{state.batch}:{accelerator.process_index}")
                          .getrandbits(63))
        # Throughput counters of this process; recipes add them up across processes at the end.
        state.patients += len(batch["attention_mask"])
        state.events += int(batch["attention_mask"].sum())
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        state.batch += 1
        state.train_seconds += time.perf_counter() - start
        start = time.perf_counter()
        trained += 1
        if not accelerator.sync_gradients:  # mid-accumulation: no optimizer step yet, so nothing to count or save
            continue
        state.step += 1  # optimizer steps, as --max_steps, --min_steps and the scheduler count them
        if after_step is not None:
            after_step()
        if state.step % args.logging_steps == 0:
            accelerator.log({"train_loss": accelerator.reduce(loss.detach(), "mean").item(),
                             "learning_rate": scheduler.get_last_lr()[0]}, step=state.step)
        if args.checkpoint_every_steps and state.step % args.checkpoint_every_steps == 0:
            state.save(accelerator, args)
    return True, trained


def restore_kept_weights(accelerator: Accelerator, model: torch.nn.Module, folder: Path) -> None:
    """Load the weights early stopping kept in `folder` (the best validation epoch's, saved with `save_pretrained`)
    into the prepared `model`, in place of the last epoch's."""
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.load_state_dict(type(unwrapped).from_pretrained(folder).state_dict())


def end_training(accelerator: Accelerator) -> None:
    """Leave the run on every rank together, and tear it down in an order that cannot hang.

    Call it once the recipe holds no reference of its own to the prepared model (`del model`). With two gloo ranks,
    one run in about fifteen hung at exit: DDP's C++ reducer, freed as the recipe returned, held the last reference
    to the process group, and the group's destructor joined gloo's worker thread while holding the GIL that the
    thread was waiting for, to free a finished barrier's tensors. Collected here, while the group is still
    registered, the wrapper leaves `destroy_process_group` as the group's last owner, and that releases the GIL.
    """
    accelerator.wait_for_everyone()
    accelerator.free_memory()  # the accelerator's own references to what it prepared
    gc.collect()  # the DDP wrapper sits in reference cycles (its patched forward)
    # by type, not isinstance: isinstance reads `__class__`, which warns on torch's deprecated `reduce_op` object
    alive = [obj for obj in gc.get_objects() if issubclass(type(obj), DistributedDataParallel)]
    if alive:
        raise RuntimeError(f"end_training: {len(alive)} DistributedDataParallel model(s) still referenced; drop them "
                           "first (`del model`), or tearing down the process group can hang")
    accelerator.end_training()
