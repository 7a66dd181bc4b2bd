#!/usr/bin/env bash
# The README's worked long-format example ("Your own hospital's data, with commands only"), run as written from the
# repository root on the MIMIC-III demo, after removing what an earlier run of it left in outputs/: prints what the
# loader kept and skipped, the fine-tuned model's test figures, and predict.py's count, and the time it all took.
#
#   bash benchmarks/readme_long_format.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf outputs/root outputs/mimic3-demo
block=$(awk '/^## Your own hospital.s data/ {section = 1}
             section && /^```bash/ {inside = 1; next}
             inside && /^```/ {exit}
             inside' README.md)
[ -n "$block" ] || { echo "README.md: no bash block under 'Your own hospital's data'" >&2; exit 1; }
bash -euo pipefail -c "$block" 2>&1
echo "the README's block ran in $SECONDS s"
