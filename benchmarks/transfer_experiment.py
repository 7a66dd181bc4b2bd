"""The transfer experiment of issue 6: PhysioNet 2019 hospital A -> B, B -> A, and P19 -> PhysioNet 2012.

    nohup python benchmarks/transfer_experiment.py > outputs/transfer.log 2>&1 &
    python benchmarks/transfer_experiment.py --summary_only    # tables and plots of the runs finished so far

P19 is the early-prediction task `first-24h` (events of the first 24 ICU hours; label: sepsis labelled later in
the stay; see `medfuse_hf.training.cohorts`), P12 the SeFT split. Each direction is one `recipes/transfer.py` run
(source fine-tuning -> published feature embeddings -> target fine-tuning on 1 %, 5 %, 10 %, 25 %, 100 % of the
target's training patients, with and without the embeddings, seeds 0-2), resumable cell by cell. P19 -> P12
reuses hospital A's source model from A -> B: the same published embeddings a P19 hospital would share.
Results, tables and plots are copied to `benchmarks/results/transfer/<direction>/`, the source models' and feature
embeddings' model cards to `model_cards/`, and `benchmarks/results/transfer/gains.png` sets the paired gains of all
directions side by side.
"""

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from protocol import BUDGET as TABLE_BUDGET
from protocol import ROOT

DATA = ROOT.parent / "shared" / "data"
CARDS = ROOT / "model_cards"
# Sepsis predicted from the first 24 ICU hours, before it is labelled: P19's whole-stay label is learnt from
# events after onset and from stay length (AUROC ~0.8 after five steps), which would hide what transfer does.
P19_TASK = "first-24h"
# The P12 table's budget, plus a floor of optimizer steps so that 1 % of a cohort (~150 patients) is trained too.
BUDGET = shlex.join([*TABLE_BUDGET, "--min_steps", "300"])


def directions(data: Path, output: Path) -> dict[str, list[str]]:
    p19 = ["--source_dataset", "p19", "--source_data_dir", str(data / "physionet2019"), "--source_protocol", P19_TASK]
    p19_target = ["--target_dataset", "p19", "--target_data_dir", str(data / "physionet2019"), "--target_protocol",
                  P19_TASK]
    p12 = str(data / "physionet2012")
    return {
        "p19-A-to-B": [*p19, "--source_hospital", "A", *p19_target, "--target_hospital", "B"],
        "p19-B-to-A": [*p19, "--source_hospital", "B", *p19_target, "--target_hospital", "A"],
        "p19-A-to-p12": [*p19, "--source_hospital", "A", "--target_dataset", "p12", "--target_data_dir", p12,
                         "--target_protocol", "seft-split",
                         "--source_embeddings", str(output / "p19-A-to-B" / "source" / "feature_embeddings")],
    }


def flag_value(flags: list[str], name: str) -> str | None:
    return flags[flags.index(name) + 1] if name in flags else None


def plot_gains(results: Path) -> Path | None:
    """Paired gain (transfer minus scratch, same seed) against the target's share of training patients, one line per
    direction: the figure that answers whether transfer helps most when the target is small."""
    tables = {path.parent.name: json.loads(path.read_text()) for path in sorted(results.glob("*/table.json"))}
    if not tables:
        return None
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for axis, metric in zip(axes, ("auroc", "auprc")):
        for name, table in tables.items():
            paired = [cell for cell in table if "paired_seeds" in cell]
            axis.errorbar([cell["fraction"] for cell in paired], [cell[f"{metric}_gain_mean"] for cell in paired],
                          yerr=[cell[f"{metric}_gain_std"] for cell in paired], marker="o", capsize=3, label=name)
        axis.axhline(0.0, color="grey", linewidth=0.8)
        axis.set(xscale="log", xlabel="share of target training patients",
                 ylabel=f"{metric.upper()} gain, transfer minus scratch")
        axis.legend()
    figure.suptitle("Gain from transferred feature embeddings (mean ± std over paired seeds)")
    figure.tight_layout()
    path = results / "gains.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, default=DATA)
    parser.add_argument("--output_dir", type=Path, default=ROOT / "outputs" / "transfer")
    parser.add_argument("--only", nargs="+", help="run only these directions")
    parser.add_argument("--summary_only", action="store_true",
                        help="train nothing: tables, plots and copies of the cells finished so far")
    args = parser.parse_args()
    results = ROOT / "benchmarks" / "results" / "transfer"
    for name, flags in directions(args.data_dir, args.output_dir).items():
        if args.only and name not in args.only:
            continue
        out = args.output_dir / name
        if args.summary_only:
            if not (out / "results.json").exists():
                print(f"{name}: no finished run yet")
                continue
            flags.append("--summary_only")
        reused = flag_value(flags, "--source_embeddings")
        if reused is not None and not Path(reused).exists():
            raise SystemExit(f"{name} reuses the source model of another direction, not run yet: {reused} is missing")
        subprocess.run([sys.executable, str(ROOT / "recipes" / "transfer.py"), *flags, "--finetune_args", BUDGET,
                        "--output_dir", str(out)], check=True,
                       stdout=subprocess.DEVNULL if args.summary_only else None)
        (results / name).mkdir(parents=True, exist_ok=True)
        for produced in ("results.json", "table.md", "table.json", "transfer.png"):
            shutil.copy(out / produced, results / name / produced)
        source = out / "source"
        if source.exists():  # the published checkpoints' cards, as a hospital would post them
            stem = (f"medfuse-{flag_value(flags, '--source_dataset')}-{flag_value(flags, '--source_hospital')}-"
                    f"{P19_TASK}")
            shutil.copy(source / "model" / "README.md", CARDS / f"{stem}.md")
            shutil.copy(source / "feature_embeddings" / "README.md", CARDS / f"{stem}-feature-embeddings.md")
        print(f"{name}:\n{(out / 'table.md').read_text()}", flush=True)
        print(f"paired gains of every direction so far: {plot_gains(results)}", flush=True)


if __name__ == "__main__":
    main()
