"""How training and inference speed and peak memory scale with events per patient, each length in a fresh
process (so that one length's peak memory is not another's)."""

import contextlib
import multiprocessing
import time
from pathlib import Path

import torch
from throughput_steps import memory_status_kib, synthetic_batch, timed_steps
from torch.nn.attention import SDPBackend, sdpa_kernel

from medfuse_hf import MedFuseConfig, MedFuseForSequenceClassification

SCALING_LENGTHS = (128, 512, 2048, 8192, 16384)


EVENTS_PER_SCALING_BATCH = 16384


def scaling_child(length: int, attention: str, queue) -> None:
    """One length in a fresh process, so that its peak RSS is its own. `attention="math"` forces PyTorch's unfused
    attention, which materialises the L x L score matrix: what the fused kernel saves."""
    with sdpa_kernel(SDPBackend.MATH) if attention == "math" else contextlib.nullcontext():
        queue.put({"attention": attention, **measure_length(length)})


def measure_length(length: int) -> dict:
    torch.manual_seed(0)
    batch_size = max(1, EVENTS_PER_SCALING_BATCH // length)
    config = MedFuseConfig(num_labels=2)
    model = MedFuseForSequenceClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = synthetic_batch(config.vocab_size, batch_size, length)
    baseline_kib = memory_status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak (VmHWM) to the current RSS
    train = timed_steps(model, optimizer, [batch] * 3)
    peak_kib = memory_status_kib("VmHWM")
    model.eval()
    with torch.inference_mode():
        model(**batch)
        start = time.perf_counter()
        model(**batch)
        inference_seconds = time.perf_counter() - start
    return {"events_per_patient": length, "patients_per_batch": batch_size,
            "train_events_per_second": train["events_per_second"],
            "inference_events_per_second": batch_size * length / inference_seconds,
            "train_peak_memory_increase_mib": (peak_kib - baseline_kib) / 1024}


def scaling(length: int, attention: str) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=scaling_child, args=(length, attention, queue))
    child.start()
    result = queue.get()
    child.join()
    return result
