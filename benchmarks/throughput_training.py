"""Training speed: a full epoch over the training split, what each optimisation buys, where a step's time goes
(torch.profiler), and torch.compile against eager."""

import contextlib
import time
from pathlib import Path

import numpy as np
import torch
from throughput_scoring import score_all
from throughput_steps import (
    OP_KINDS,
    OPTIMIZER_RANGE,
    first_batches,
    flops_per_patient,
    memory_status_kib,
    new_model,
    timed_steps,
    train_loader,
    training_step,
)
from torch.nn.attention import SDPBackend, sdpa_kernel


def full_epoch(train, collate, tokenizer, batch_size: int) -> dict:
    model, optimizer = new_model(tokenizer)
    coefficients = flops_per_patient(model, optimizer)
    loader = train_loader(train, collate, batch_size, tokenizer.max_events)
    patients = events = computed = 0
    flops = 0.0
    baseline_kib = memory_status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak (VmHWM) to the current RSS
    start = time.perf_counter()
    for batch in loader:  # collation included: it is part of what an epoch costs
        training_step(model, optimizer, batch)
        size, length = batch["attention_mask"].shape
        patients += size
        events += int(batch["attention_mask"].sum())
        computed += size * length
        flops += size * (coefficients @ np.array([1.0, length, length**2]))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "patients": patients, "events": events, "patients_per_second": patients / seconds,
            "peak_rss_mib": memory_status_kib("VmHWM") / 1024, "rss_before_epoch_mib": baseline_kib / 1024,
            "events_per_second": events / seconds, "padding_fraction": 1 - events / computed,
            "flops": flops, "achieved_flops_per_second": flops / seconds}


def optimisation_ledger(train, collate, tokenizer, batch_size: int, num_batches: int = 12) -> dict:
    """Each optimisation against its absence on the same patients and model: events/s of training steps."""
    grouped = first_batches(train, collate, tokenizer, batch_size, num_batches)
    shuffled = first_batches(train, collate, tokenizer, batch_size, num_batches, grouped=False)
    ledger = {}
    model, optimizer = new_model(tokenizer)
    ledger["random_batches"] = timed_steps(model, optimizer, shuffled)
    ledger["length_grouped_batches"] = timed_steps(model, optimizer, grouped)
    with sdpa_kernel(SDPBackend.MATH):
        ledger["length_grouped_math_attention"] = timed_steps(model, optimizer, grouped)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ledger["length_grouped_bf16_autocast"] = timed_steps(model, optimizer, grouped)
    return ledger


GROWN_VOCABULARY = 1_000  # feature ids of a hospital vocabulary with its own items beside P12's 42


def pooling_cost(train, scored, collate, tokenizer, batch_size: int, num_batches: int = 12,
                 repeats: int = 3) -> dict:
    """What the per-feature view of a stay costs against the mean pool over events (the accuracy issue's lever):
    training steps on the same length-grouped batches, and scoring every patient end to end; also with the
    vocabulary grown to `GROWN_VOCABULARY` ids, as a hospital's own items grow it, since the per-feature view reads
    every feature of the vocabulary. The models alternate `repeats` times and each keeps its fastest pass, so drift
    in the machine's speed hits all alike."""
    batches = first_batches(train, collate, tokenizer, batch_size, num_batches)
    models = {pooling: new_model(tokenizer, pooling=pooling) for pooling in ("mean", "per_feature")}
    grown, _ = new_model(tokenizer, pooling="per_feature")  # resizing replaces the tables its optimizer holds
    grown.resize_token_embeddings(GROWN_VOCABULARY)
    models[f"per_feature_{GROWN_VOCABULARY}"] = grown, torch.optim.AdamW(grown.parameters(), lr=1e-3)
    passes = {pooling: {"training": [], "scoring": []} for pooling in models}
    for _ in range(repeats):
        for pooling, (model, optimizer) in models.items():
            passes[pooling]["training"].append(timed_steps(model.train(), optimizer, batches))
            passes[pooling]["scoring"].append(score_all(model, scored, tokenizer))
    return {pooling: {"parameters": sum(p.numel() for p in models[pooling][0].parameters()),
                      "training": max(runs["training"], key=lambda run: run["events_per_second"]),
                      "scoring": max(runs["scoring"], key=lambda run: run["patients_per_second"])}
            for pooling, runs in passes.items()}


def profile_training(train, collate, tokenizer, batch_size: int, num_steps: int = 10) -> dict:
    """Where a training step's CPU time goes (torch.profiler self time, grouped by `OP_KINDS`): profile first,
    then optimise what is big."""
    batches = first_batches(train, collate, tokenizer, batch_size, num_steps + 1)
    model, optimizer = new_model(tokenizer)
    training_step(model, optimizer, batches[0])  # warm-up, not profiled
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for batch in batches[1:]:
            training_step(model, optimizer, batch)
    averages = profiler.key_averages()
    self_times = {event.key: event.self_cpu_time_total for event in averages}
    total = sum(self_times.values())
    shares = {kind: sum(time for name, time in self_times.items() if any(part in name for part in parts)) / total
              for kind, parts in OP_KINDS.items()}  # none of these ops runs inside the optimizer range
    shares[OPTIMIZER_RANGE] = next(event.cpu_time_total for event in averages if event.key == OPTIMIZER_RANGE) / total
    shares["everything else (element-wise, LayerNorm, GELU, copies)"] = 1 - sum(shares.values())
    top = sorted(self_times.items(), key=lambda item: -item[1])[:10]
    return {"steps": num_steps, "shares": shares, "top_ops": {name: time / total for name, time in top}}


def compiled_vs_eager(train, collate, tokenizer, batch_size: int, num_batches: int = 20) -> dict:
    """torch.compile(dynamic=True) against eager on the same batches, in fp32 and under bf16 autocast: the first
    pass includes every compilation (the first, and any recompilation a new shape triggers), as a real run pays
    them; the second runs compiled code. Graph breaks and compiled graphs are counted by dynamo."""
    from torch._dynamo.utils import counters

    batches = first_batches(train, collate, tokenizer, batch_size, num_batches)
    result = {}
    for precision, autocast in (("fp32", contextlib.nullcontext),
                                ("bf16_autocast", lambda: torch.autocast("cpu", dtype=torch.bfloat16))):
        with autocast():
            model, optimizer = new_model(tokenizer)
            result[f"eager_{precision}"] = timed_steps(model, optimizer, batches)
            torch._dynamo.reset()
            counters.clear()
            model, optimizer = new_model(tokenizer)
            compiled = torch.compile(model, dynamic=True)
            result[f"compiled_{precision}_first_pass"] = timed_steps(compiled, optimizer, batches, warm_up=False)
            result[f"compiled_{precision}_second_pass"] = timed_steps(compiled, optimizer, batches, warm_up=False)
            result[f"compiled_{precision}_second_pass"].update(
                graph_breaks=sum(counters["graph_break"].values()), unique_graphs=counters["stats"]["unique_graphs"])
    return result
