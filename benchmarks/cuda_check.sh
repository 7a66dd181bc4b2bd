#!/usr/bin/env bash
# What only a CUDA GPU can check, in one go (CI has no GPU):
#   1. tests/test_cuda.py: CUDA against the CPU, bf16/fp16 autocast, frozen transfer and vocabulary growth on the GPU,
#      the per-feature pooling bit for bit under deterministic algorithms;
#   2. the whole test suite on that machine (the pretraining and transfer recipe tests train on CUDA; the
#      fine-tuning recipe tests compare runs, so they hide the GPU and run them all on the CPU);
#   3. P12 fine-tuning (the accuracy search's leader, `medfuse_round_two`: per-feature pooling, quantile values; SeFT
#      split, seed 0, cut to 15 epochs to fit a short lease) in fp32, bf16 and fp16 autocast.
#
#   bash benchmarks/cuda_check.sh ../shared/data/physionet2012 outputs/cuda-check [/tmp/cuda-check-runs]
#
# The three P12 runs and the suite share the GPU and the CPUs at the same time, to fit a short GPU lease: their
# metrics are real, their seconds are not throughput figures (benchmarks/throughput.py measures those).
set -uo pipefail
data_dir=${1:?the PhysioNet 2012 release folder}
out=${2:?a folder for the figures}
runs=${3:-/tmp/cuda-check-runs}
mkdir -p "$out" "$runs"
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, transformers, accelerate, datasets; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'| transformers', transformers.__version__, '| accelerate', accelerate.__version__, '| datasets', datasets.__version__)"
} | tee "$out/summary.txt"

timeout 180 python3 -m pytest -q -p no:cacheprovider -n 0 tests/test_cuda.py 2>&1 | tee "$out/test_cuda.txt"

for precision in no bf16 fp16; do
  timeout 330 python3 benchmarks/p12_table.py --data_dir "$data_dir" --models medfuse_round_two --protocols seft-split \
    --seeds 0 \
    --extra_args "--mixed_precision $precision --num_epochs 15" --results "$out/p12_$precision.json" \
    --output_dir "$runs/$precision" \
    > "$runs/$precision.log" 2>&1 &
done
timeout 240 python3 -m pytest -q -p no:cacheprovider -n 6 tests > "$runs/suite.log" 2>&1
tail -n 40 "$runs/suite.log" > "$out/suite.txt"
wait

for precision in no bf16 fp16; do
  echo "== P12 run, mixed precision: $precision"
  tail -n 4 "$runs/$precision.log"
done
python3 - "$runs" <<'EOF' | tee -a "$out/summary.txt"
import json, sys
from pathlib import Path
print("| mixed precision | test AUROC | test AUPRC | accuracy | epochs (best) | steps | peak GPU MiB | device |")
print("|---|---|---|---|---|---:|---:|---|")
for precision in ("no", "bf16", "fp16"):
    path = Path(sys.argv[1]) / precision / "seft-split-medfuse_round_two-seed0" / "test_metrics.json"
    if not path.exists():
        print(f"| {precision} | run did not finish: see its log |")
        continue
    report = json.loads(path.read_text())
    info = json.loads(path.with_name("run_info.json").read_text())["distributed"]
    test = report["test"]
    print(f"| {precision} | {test['auroc']['value']:.4f} | {test['auprc']['value']:.4f} | {test['accuracy']['value']:.4f} "
          f"| {report['epochs']} ({report['best_validation'].get('epoch')}) | {report['steps']} "
          f"| {report.get('peak_gpu_memory_mib')} | {info['device_name']}, {info['mixed_precision']} |")
EOF
