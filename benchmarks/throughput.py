"""Training and inference speed of the default (paper-sized) MedFuse on PhysioNet 2012 batches, on this machine.

    python benchmarks/throughput.py --data_dir ../shared/data/physionet2012     # the real cohort
    python benchmarks/throughput.py                                              # the bundled 600-stay sample

Measures, in one run: the machine's dense fp32 matmul FLOP/s; one full training epoch over the SeFT training split
(events/s, patients/s, padding fraction, achieved FLOP/s and its fraction of the matmul figure); scoring every set-a
patient end to end (tokenization included); one-patient latency from a warm model; how training/inference speed and
peak memory scale with events per patient (128 ... 16,384, each length in a fresh process, 16,384 events per batch);
the same with PyTorch's unfused (math) attention; what each optimisation buys (length-grouped vs random batches,
fused vs math attention, bf16 autocast, scoring batches of 64 vs 256); what the per-feature pooling costs against
the mean pool (`pooling`); where a training step's time goes (torch.profiler); and torch.compile against eager.
`--sections` picks some of these. Writes every figure to `benchmarks/results/throughput.json` (or `--output`).
"""

import argparse
import json
import platform
from pathlib import Path

import datasets
import torch
from throughput_scaling import SCALING_LENGTHS, scaling
from throughput_scoring import score_all, single_patient_latency
from throughput_steps import matmul_flops_per_second, new_model
from throughput_training import compiled_vs_eager, full_epoch, optimisation_ledger, pooling_cost, profile_training

from medfuse_hf.data import MedFuseDataCollator
from medfuse_hf.training.cohorts import fit_tokenizer, load_cohort

RESULTS = Path(__file__).parent / "results" / "throughput.json"
SECTIONS = ("matmul", "epoch", "scoring", "latency", "scaling", "ledger", "pooling", "profile", "compile")
LABEL = "in_hospital_death"








































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

    if "pooling" in sections:
        pooling = results["pooling"] = pooling_cost(train, scored, collate, tokenizer, args.batch_size)
        for name, row in pooling.items():
            print(f"{name:>16} pooling ({row['parameters']:,} parameters): training "
                  f"{row['training']['events_per_second']:,.0f} events/s, scoring "
                  f"{row['scoring']['patients_per_second']:,.0f} patients/s")

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
