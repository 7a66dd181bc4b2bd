"""Training and inference speed of the default (paper-sized) MedFuse on PhysioNet 2012 batches, on this machine.

    python benchmarks/throughput.py --data_dir ../shared/data/physionet2012     # the real cohort
    python benchmarks/throughput.py                                              # the bundled 600-stay sample

Measures, in one run: the machine's dense fp32 matmul FLOP/s; one full training epoch over the SeFT training split
(events/s, patients/s, padding fraction, achieved FLOP/s and its fraction of the matmul figure); scoring every set-a
patient end to end (tokenization included); one-patient latency from a warm model; how training/inference speed and
peak memory scale with events per patient (128 ... 16,384, each length in a fresh process, 16,384 events per batch);
the same with PyTorch's unfused (math) attention; what each optimisation buys (length-grouped vs random batches,
fused vs math attention, bf16 autocast, scoring batches of 64 vs 256); where a training step's time goes
(torch.profiler); and torch.compile against eager. `--sections` picks some of these.
Writes every figure to `benchmarks/results/throughput.json` (or `--output`).
"""

import argparse
import contextlib
import json
import multiprocessing
import platform
import random
import statistics
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from medfuse_hf import MedFuseConfig, MedFuseForSequenceClassification
from medfuse_hf.data import LengthGroupedBatchSampler, MedFuseDataCollator
from medfuse_hf.training.cohorts import fit_tokenizer, load_cohort
from medfuse_hf.training.evaluation import evaluation_loader

RESULTS = Path(__file__).parent / "results" / "throughput.json"
SECTIONS = ("matmul", "epoch", "scoring", "latency", "scaling", "ledger", "profile", "compile")
SCALING_LENGTHS = (128, 512, 2048, 8192, 16384)
EVENTS_PER_SCALING_BATCH = 16384
LABEL = "in_hospital_death"

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


def new_model(tokenizer) -> tuple[MedFuseForSequenceClassification, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = MedFuseForSequenceClassification(MedFuseConfig(**tokenizer.feature_vocabulary.config_kwargs(),
                                                           num_labels=2))
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


@torch.inference_mode()
def score_all(model, patients: datasets.Dataset, tokenizer, batch_size: int = 64, bf16: bool = False) -> dict:
    """Score every patient end to end through the recipes' own evaluation loader: rows -> tokens -> probabilities,
    batches sorted by length. Batches of 64 beat 256 by ~1.6x on this CPU (their activations stay in cache)."""
    model.eval()
    loader = evaluation_loader(patients, MedFuseDataCollator(tokenizer), batch_size)
    start = time.perf_counter()
    scored = 0
    for batch in loader:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            scored += len(model(**batch).logits.softmax(-1))
    seconds = time.perf_counter() - start
    return {"patients": scored, "seconds": seconds, "patients_per_second": scored / seconds}


@torch.inference_mode()
def single_patient_latency(model, patients: datasets.Dataset, tokenizer, count: int = 200) -> dict:
    model.eval()
    collate = MedFuseDataCollator(tokenizer, pad_to_multiple_of=None)
    picks = random.Random(0).sample(range(len(patients)), min(count, len(patients)))
    timings = []
    for position, index in enumerate([picks[0], *picks]):  # the first call warms up
        start = time.perf_counter()
        model(**collate([patients[index]])).logits.softmax(-1)
        if position:
            timings.append(time.perf_counter() - start)
    quantiles = statistics.quantiles(timings, n=100)
    return {"patients": len(timings), "p50_ms": 1000 * statistics.median(timings), "p90_ms": 1000 * quantiles[89],
            "p99_ms": 1000 * quantiles[98]}


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


def first_batches(train, collate, tokenizer, batch_size: int, count: int, grouped: bool = True) -> list[dict]:
    loader = train_loader(train, collate, batch_size, tokenizer.max_events, grouped=grouped)
    return [batch for batch, _ in zip(loader, range(count))]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", help="PhysioNet 2012 release folder; without it, the bundled sample")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_events", type=int, default=1024)
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="measure only these")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    datasets.disable_progress_bars()

    if args.data_dir:
        seft, set_a = (load_cohort("p12", args.data_dir, protocol) for protocol in ("seft-split", "set-a-test"))
        train, scored, source = (seft.labelled("train"), set_a.splits["test"],
                                 "PhysioNet 2012 (SeFT train split; set-a)")
    else:
        sample = load_cohort("p12-sample")
        train, scored, source = (sample.labelled("train"), datasets.concatenate_datasets(list(sample.splits.values())),
                                 "bundled sample")
    tokenizer = fit_tokenizer(train, args.max_events)
    collate = MedFuseDataCollator(tokenizer, label_column=LABEL)
    results = {"data": source, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "machine": platform.processor() or platform.machine(), "batch_size": args.batch_size,
               "max_events": args.max_events}

    sections = set(args.sections)
    if "matmul" in sections or "epoch" in sections:
        results["matmul_flops_per_second"] = matmul_flops_per_second()
        print(f"dense fp32 matmul (2048^3): {results['matmul_flops_per_second'] / 1e9:.1f} GFLOP/s")

    if "epoch" in sections:
        epoch = results["training_epoch"] = full_epoch(train, collate, tokenizer, args.batch_size)
        epoch["fraction_of_matmul_peak"] = epoch["achieved_flops_per_second"] / results["matmul_flops_per_second"]
        print(f"training epoch: {epoch['patients']:,} patients, {epoch['events']:,} events "
              f"in {epoch['seconds']:.1f} s "
              f"({epoch['patients_per_second']:.1f} patients/s, {epoch['events_per_second']:,.0f} events/s, padding "
              f"{epoch['padding_fraction']:.1%}); {epoch['achieved_flops_per_second'] / 1e9:.1f} GFLOP/s achieved = "
              f"{epoch['fraction_of_matmul_peak']:.0%} of matmul; peak RSS {epoch['peak_rss_mib']:,.0f} MiB "
              f"({epoch['rss_before_epoch_mib']:,.0f} before the epoch)")

    model, _ = new_model(tokenizer)
    if "scoring" in sections:
        for name, precision, scoring_batch in (("fp32", "fp32", 64), ("bf16", "bf16", 64),
                                               ("fp32_batch256", "fp32", 256)):
            scoring = results[f"scoring_{name}"] = score_all(model, scored, tokenizer, scoring_batch,
                                                             bf16=precision == "bf16")
            print(f"scoring ({precision}{' autocast' if precision == 'bf16' else ''}, batches of {scoring_batch}): "
                  f"{scoring['patients']:,} patients in {scoring['seconds']:.2f} s "
                  f"({scoring['patients_per_second']:,.0f} "
                  f"patients/s, tokenization included)")
    if "latency" in sections:
        latency = results["single_patient_latency"] = single_patient_latency(model, scored, tokenizer)
        print(f"one patient, warm model: p50 {latency['p50_ms']:.2f} ms, p90 {latency['p90_ms']:.2f} ms, "
              f"p99 {latency['p99_ms']:.2f} ms over {latency['patients']} patients")

    if "scaling" in sections:
        results["scaling"] = []
        for attention, length in ([("fused", length) for length in SCALING_LENGTHS]
                                  + [("math", length) for length in SCALING_LENGTHS]):
            row = scaling(length, attention)
            results["scaling"].append(row)
            print(f"{attention:>5} attention, {length:>6} events/patient x {row['patients_per_batch']:>3} patients: "
                  f"train {row['train_events_per_second']:>8,.0f} "
                  f"events/s, inference {row['inference_events_per_second']:>9,.0f} events/s, training peak memory "
                  f"+{row['train_peak_memory_increase_mib']:,.0f} MiB")

    if "ledger" in sections:
        ledger = results["optimisations"] = optimisation_ledger(train, collate, tokenizer, args.batch_size)
        for name, row in ledger.items():
            print(f"{name:>30}: {row['events_per_second']:>8,.0f} events/s (padding {row['padding_fraction']:.1%})")

    if "profile" in sections:
        profile = results["profile"] = profile_training(train, collate, tokenizer, args.batch_size)
        print(f"profile of {profile['steps']} training steps (share of self CPU time):")
        for kind, share in profile["shares"].items():
            print(f"  {share:6.1%}  {kind}")
        print("  top ops: " + ", ".join(f"{name} {share:.1%}" for name, share in profile["top_ops"].items()))

    if "compile" in sections:
        compile_result = results["torch_compile"] = compiled_vs_eager(train, collate, tokenizer, args.batch_size)
        for name, row in compile_result.items():
            graphs = (f" ({row['graph_breaks']} graph breaks, {row['unique_graphs']} graphs)" if "graph_breaks" in row
                      else "")
            print(f"{name:>36}: {row['events_per_second']:>8,.0f} events/s over {row['seconds']:.1f} s{graphs}")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
