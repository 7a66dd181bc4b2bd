"""The building blocks of the throughput benchmark: a training step as measured (FLOPs, profiler ranges), the
model and batches it runs on, and the machine's matmul peak to compare with."""

import time
from pathlib import Path

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from medfuse_hf import MedFuseConfig, MedFuseForSequenceClassification
from medfuse_hf.data import LengthGroupedBatchSampler

# Self CPU time of these ops (substring of the profiler's op name) is what each kind of work costs.
OP_KINDS = {
    "attention (fused SDPA, forward + backward)": ("scaled_dot_product", "flash_attention"),
    "matmuls of the linear layers": ("aten::addmm", "aten::mm", "aten::bmm"),
    "dropout masks": ("aten::bernoulli_",),
}


OPTIMIZER_RANGE = "gradient clipping + AdamW step"


# torch's FLOP counter knows the CUDA attention kernels; CPU's fused kernel has the same arithmetic.
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: (
        lambda query, key, value, *args, out_shape=None, **kwargs: sdpa_flop_count(query, key, value)),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: (
        lambda grad, query, key, value, *args, out_shape=None, **kwargs:
            sdpa_backward_flop_count(grad, query, key, value)),
}


def matmul_flops_per_second(size: int = 2048, repeats: int = 5, trials: int = 5) -> float:
    """Best of `trials`: this is a shared virtual machine whose speed varies from minute to minute, and the best
    trial is the closest to what the cores can do."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = 0.0
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - start))
    return best


def memory_status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (Linux): VmRSS now, VmHWM its peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}: this measurement needs Linux")


def training_step(model, optimizer, batch) -> None:
    model(**batch).loss.backward()
    with torch.profiler.record_function(OPTIMIZER_RANGE):  # its element-wise ops are told apart from the model's
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    optimizer.zero_grad()


def synthetic_batch(vocab_size: int, patients: int, length: int) -> dict[str, torch.Tensor]:
    """Random feature ids at sorted random times within 48 h; values 0, a valid input for numeric and categorical
    features alike. Speed and memory depend on the shape only."""
    return {"feature_ids": torch.randint(2, vocab_size, (patients, length)), "values": torch.zeros(patients, length),
            "times": torch.rand(patients, length).mul(48).sort(dim=1).values,
            "attention_mask": torch.ones(patients, length, dtype=torch.long),
            "labels": torch.randint(0, 2, (patients,))}


def flops_per_patient(model, optimizer, lengths=(128, 512, 1024)) -> np.ndarray:
    """(c, a, b) with FLOPs of one training step on one patient of L (padded) events = c + a·L + b·L², counted by
    torch at three lengths: linear layers grow with L, attention with L², the head is constant. The optimiser's
    element-wise update is not counted (torch counts matmuls and attention only)."""
    counts = []
    for length in lengths:
        batch = synthetic_batch(model.config.vocab_size, 1, length)
        with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
            model(**batch).loss.backward()
        optimizer.zero_grad()
        counts.append(counter.get_total_flops())
    design = np.array([[1.0, length, length**2] for length in lengths])
    return np.linalg.solve(design, np.array(counts, dtype=np.float64))


def new_model(tokenizer, **config) -> tuple[MedFuseForSequenceClassification, torch.optim.Optimizer]:
    """The default model (or one with `config` changed) over the tokenizer's vocabulary, and its optimizer."""
    torch.manual_seed(0)
    model = MedFuseForSequenceClassification(MedFuseConfig(**tokenizer.feature_vocabulary.config_kwargs(),
                                                           num_labels=2, **config))
    return model.train(), torch.optim.AdamW(model.parameters(), lr=1e-3)


def train_loader(
    train: datasets.Dataset, collate, batch_size: int, max_events: int, grouped: bool = True
) -> DataLoader:
    lengths = [min(len(features), max_events) for features in train["feature"]]
    if grouped:
        return DataLoader(train, batch_sampler=LengthGroupedBatchSampler(lengths, batch_size, seed=0, drop_last=True),
                          collate_fn=collate)
    return DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True, collate_fn=collate,
                      generator=torch.Generator().manual_seed(0))


def timed_steps(model, optimizer, batches: list[dict], warm_up: bool = True) -> dict:
    """Events/s and padding of training steps over pre-collated batches (the first one, with `warm_up`, untimed)."""
    if warm_up:
        training_step(model, optimizer, batches[0])
        batches = batches[1:]
    start = time.perf_counter()
    for batch in batches:
        training_step(model, optimizer, batch)
    seconds = time.perf_counter() - start
    real = sum(int(batch["attention_mask"].sum()) for batch in batches)
    computed = sum(batch["attention_mask"].numel() for batch in batches)
    return {"events_per_second": real / seconds, "padding_fraction": 1 - real / computed, "seconds": seconds}


def first_batches(train, collate, tokenizer, batch_size: int, count: int, grouped: bool = True) -> list[dict]:
    loader = train_loader(train, collate, batch_size, tokenizer.max_events, grouped=grouped)
    return [batch for batch, _ in zip(loader, range(count))]
