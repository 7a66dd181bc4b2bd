"""The optimisation loop the recipes share: one epoch, resumable at any batch, and the end of a run."""

import argparse
import gc
import time
from collections.abc import Callable
from pathlib import Path

from accelerate import Accelerator
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..progress import progress_bar
from .checkpointing import save_checkpoint
from .evaluation import ROW_COLUMN


def train_epoch(
    accelerator: Accelerator,
    model,
    optimizer,
    scheduler,
    train_loader: DataLoader,
    epoch: int,
    loop: dict,
    args: argparse.Namespace,
    checkpoints_dir: Path,
    reseed: Callable[[int], None],
) -> tuple[bool, int]:
    """Train on `epoch` from batch `loop["batch"]` on; `loop` (epoch, batch, step, ...) is updated in place and
    saved with every checkpoint. Returns whether the epoch was completed (not cut by `--max_steps`) and the number
    of batches this process trained on.

    The data order must be a function of (seed, epoch) alone, so that a resumed run sees the batches it would have
    seen: Accelerate re-applies its loader's epoch counter when iteration starts, and `reseed(epoch)` sets the
    samplers Accelerate cannot reach (a custom batch sampler inside a multi-process shard).
    """
    batches = accelerator.skip_first_batches(train_loader, loop["batch"]) if loop["batch"] else train_loader
    batches.set_epoch(epoch)
    reseed(epoch)
    try:
        total = len(train_loader)
    except TypeError:  # a streamed dataset has no length
        total = None
    trained, start = 0, time.perf_counter()
    for batch in progress_bar(batches, desc=f"epoch {epoch}", disable=not accelerator.is_local_main_process,
                      initial=loop["batch"], total=total):
        batch.pop(ROW_COLUMN, None)
        # Throughput counters of this process; recipes add them up across processes at the end.
        loop["patients"] = loop.get("patients", 0) + len(batch["attention_mask"])
        loop["events"] = loop.get("events", 0) + int(batch["attention_mask"].sum())
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        loop["batch"] += 1
        loop["train_seconds"] = loop.get("train_seconds", 0.0) + time.perf_counter() - start
        start = time.perf_counter()
        trained += 1
        if not accelerator.sync_gradients:  # mid-accumulation: no optimizer step yet, so nothing to count or save
            continue
        loop["step"] += 1  # optimizer steps, as --max_steps, --min_steps and the scheduler count them
        if loop["step"] % args.logging_steps == 0:
            accelerator.log({"train_loss": accelerator.reduce(loss.detach(), "mean").item(),
                             "learning_rate": scheduler.get_last_lr()[0]}, step=loop["step"])
        if args.checkpoint_every_steps and loop["step"] % args.checkpoint_every_steps == 0:
            save_checkpoint(accelerator, checkpoints_dir, loop["step"], loop)
        if args.max_steps and loop["step"] >= args.max_steps:
            return False, trained
    return True, trained


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
    alive = [obj for obj in gc.get_objects() if isinstance(obj, DistributedDataParallel)]
    if alive:
        raise RuntimeError(f"end_training: {len(alive)} DistributedDataParallel model(s) still referenced; drop them "
                           "first (`del model`), or tearing down the process group can hang")
    accelerator.end_training()
