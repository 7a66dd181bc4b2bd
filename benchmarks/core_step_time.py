"""Parameter counts of the default MedFuse config, and forward+backward time of one 32 × 512-event batch on CPU.

    python benchmarks/core_step_time.py
"""

import json
import platform
import statistics
import time
from pathlib import Path

import torch

from medfuse_hf import MedFuseConfig, MedFuseForSequenceClassification

BATCH_SIZE, NUM_EVENTS, REPEATS = 32, 512, 20


def main() -> None:
    torch.manual_seed(0)
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(),
               "machine": platform.processor() or platform.machine()}
    for fusion in ("multiplicative", "additive", "concat", "scane"):
        config = MedFuseConfig(num_labels=2, fusion=fusion)  # defaults: the paper's P12 sizes, vocab_size 64
        model = MedFuseForSequenceClassification(config)
        parameters = sum(p.numel() for p in model.parameters())
        feature_ids = torch.randint(2, config.vocab_size, (BATCH_SIZE, NUM_EVENTS))
        batch = {
            "feature_ids": feature_ids,
            "values": torch.randn(BATCH_SIZE, NUM_EVENTS),
            "times": torch.rand(BATCH_SIZE, NUM_EVENTS).mul(48).sort(dim=1).values,
            "attention_mask": torch.ones(BATCH_SIZE, NUM_EVENTS, dtype=torch.long),
            "labels": torch.randint(0, 2, (BATCH_SIZE,)),
        }
        timings = []
        for repeat in range(REPEATS + 3):
            start = time.perf_counter()
            model(**batch).loss.backward()
            if repeat >= 3:  # the first calls warm up allocator and kernels
                timings.append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
        median = statistics.median(timings)
        results[fusion] = {"parameters": parameters, "forward_backward_seconds_median": median,
                           "events_per_second": BATCH_SIZE * NUM_EVENTS / median}
        print(f"{fusion:>14}: {parameters:,} parameters; forward+backward of {BATCH_SIZE}x{NUM_EVENTS} events: "
              f"median {median * 1000:.1f} ms over {REPEATS} ({BATCH_SIZE * NUM_EVENTS / median:,.0f} events/s)")
    out = Path(__file__).parent / "results" / "core_step_time.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
