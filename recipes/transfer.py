"""Transfer experiment: train at a source hospital, publish its feature embeddings, then fine-tune at a target
hospital on 1%…100% of its training patients, with and without the transferred embeddings, over several seeds.

The source learns its own label (`--source_objective supervised`, with `--finetune_args`), or, for a source without
labels, forecasting (`forecasting`: `recipes/pretrain.py` with `--pretrain_args`; give it the same model sizes).

    python recipes/transfer.py --source_dataset p19 --source_hospital A \
        --source_data_dir ../shared/data/physionet2019 \
        --target_dataset p19 --target_hospital B --target_data_dir ../shared/data/physionet2019 \
        --fractions 0.01 0.05 0.1 0.25 1.0 --seeds 0 1 2 --output_dir outputs/transfer-p19-A-to-B

Each fine-tuning is a `recipes/finetune.py` run in its own process, resumed if it was killed (add
`--launcher "accelerate launch"` for several processes).
Results are appended to `<output_dir>/results.json` as runs finish, and runs already there are skipped, so an
interrupted experiment continues where it stopped. Prints the table and writes it as `table.md` and `table.json`
(mean, std and paired gain per cell), with `transfer.png` (`--summary_only`: of the cells finished so far,
training nothing).
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from medfuse_hf.training.metrics import format_mean_std, mean_and_std
from medfuse_hf.training.recipe_config import recipe_parser
from medfuse_hf.training.runs import ResultRows, run_finetune, run_recipe


def dataset_arguments(args: argparse.Namespace, side: str) -> list[str]:
    flags = []
    for name in ("dataset", "data_dir", "hospital", "protocol"):
        value = getattr(args, f"{side}_{name}")
        if value is not None:
            flags += [f"--{name}", str(value)]
    return flags


def describe(flags: list[str]) -> str:
    """`p19 A first-24h`: one side of the experiment as `dataset_arguments` recorded it, without its folder."""
    return " ".join(value for name, value in zip(flags[::2], flags[1::2]) if name != "--data_dir")


def embedding_settings(flags: list[str]) -> dict[str, str]:
    """The flags a feature-embedding checkpoint must share with the model that loads it."""
    return {name: flags[flags.index(name) + 1] for name in ("--hidden_size", "--value_embedding_size", "--fusion")
            if name in flags}


def check_same_experiment(path: Path, settings: dict) -> None:
    """Cells already in a folder are reused, so the folder must hold this experiment: same data, task, source and
    budget (fractions and seeds may grow). Refuses, naming what differs, rather than mixing two experiments."""
    if path.exists():
        before = json.loads(path.read_text())
        changed = sorted(key for key in settings.keys() | before.keys() if settings.get(key) != before.get(key))
        if changed:
            raise SystemExit(f"{path.parent} holds an experiment with other {', '.join(changed)} "
                             f"({path} has {[before.get(key) for key in changed]}); use another --output_dir")
    path.write_text(json.dumps(settings, indent=1) + "\n")


def summarise(rows: list[dict]) -> list[dict]:
    """Mean ± std per fraction and arm, and for the transfer arm its paired gain: transfer minus scratch of the
    same seed (same split, subset and initial weights), which removes the seed-to-seed spread of the split."""
    table = []
    for fraction in sorted({row["fraction"] for row in rows}):
        arms = {transfer: {row["seed"]: row for row in rows
                           if row["fraction"] == fraction and row["transfer"] == transfer}
                for transfer in (False, True)}
        for transfer, cell in arms.items():
            if not cell:
                continue
            summary = {"fraction": fraction, "transfer": transfer, "seeds": len(cell)}
            for metric in ("auroc", "auprc"):
                summary[f"{metric}_mean"], summary[f"{metric}_std"] = mean_and_std(
                    [row[metric] for row in cell.values()])
            paired = sorted(cell.keys() & arms[False].keys()) if transfer else []
            if paired:
                summary["paired_seeds"] = len(paired)
                for metric in ("auroc", "auprc"):
                    summary[f"{metric}_gains"] = [cell[seed][metric] - arms[False][seed][metric] for seed in paired]
                    summary[f"{metric}_gain_mean"], summary[f"{metric}_gain_std"] = mean_and_std(
                        summary[f"{metric}_gains"])
            table.append(summary)
    return table


def format_table(table: list[dict]) -> str:
    """Markdown: mean ± std per arm, the paired gain on the transfer rows (over `paired_seeds` seeds; no std for
    one seed), then each fraction's gain per seed: whether a mean gain is carried by every seed or by one."""
    lines = [("| target training fraction | transfer | seeds | AUROC | AUPRC | paired seeds | gain AUROC | "
              "gain AUPRC |"),
             "|---:|---|---:|---|---|---:|---|---|"]
    for cell in table:
        figures = [format_mean_std(cell[f"{metric}_mean"], cell[f"{metric}_std"]) for metric in ("auroc", "auprc")]
        gains = [str(cell.get("paired_seeds", ""))] + [
            format_mean_std(cell[f"{metric}_gain_mean"], cell[f"{metric}_gain_std"], "+") if "paired_seeds" in cell
            else ""
            for metric in ("auroc", "auprc")]
        lines.append(f"| {cell['fraction']:g} | {'yes' if cell['transfer'] else 'no'} | {cell['seeds']} | "
                     + " | ".join(figures + gains) + " |")
    per_seed = [f"fraction {cell['fraction']:g}, paired gain per seed: " + "; ".join(
        f"{metric.upper()} " + ", ".join(f"{gain:+.3f}" for gain in cell[f"{metric}_gains"])
        for metric in ("auroc", "auprc"))
        for cell in table if "paired_seeds" in cell]
    return "\n".join(lines + ([""] + per_seed if per_seed else []))


def run_cells(args: argparse.Namespace, extra: list[str], results: ResultRows) -> None:
    """Train the source unless its embeddings are given, then every (fraction, seed, arm) cell not yet in results."""
    embeddings = args.source_embeddings
    if embeddings is None:
        source_dir = args.output_dir / "source"
        if not (source_dir / "feature_embeddings" / "embedding_config.json").exists():  # written last by an export
            pretraining = args.source_objective == "forecasting"
            run_recipe("pretrain.py" if pretraining else "finetune.py",
                       [*dataset_arguments(args, "source"),
                        *shlex.split(args.pretrain_args if pretraining else args.finetune_args)],
                       source_dir, args.launcher)
        embeddings = str(source_dir / "feature_embeddings")
        print(f"source trained; feature embeddings in {embeddings}")
    for fraction in args.fractions:
        for seed in args.seeds:
            for transfer in (False, True):
                if results.done(fraction=fraction, seed=seed, transfer=transfer):
                    continue
                run_dir = args.output_dir / f"target-f{fraction}-s{seed}-{'transfer' if transfer else 'scratch'}"
                flags = [*extra, "--train_fraction", str(fraction), "--seed", str(seed)]
                if transfer:
                    flags += ["--init_embeddings_from", embeddings]
                metrics = run_finetune([*dataset_arguments(args, "target"), *flags], run_dir, args.launcher)
                row = {"fraction": fraction, "seed": seed, "transfer": transfer,
                       "auroc": metrics["test"]["auroc"]["value"], "auprc": metrics["test"]["auprc"]["value"],
                       "train_seconds": metrics["train_seconds"], "epochs": metrics["epochs"],
                       "best_epoch": metrics["best_validation"]["epoch"],
                       "transferred_features": (metrics["transferred_features"] or {}).get("matched"),
                       "git": metrics["git"]}
                results.add(row)
                print(f"fraction {fraction:g}, seed {seed}, {'with' if transfer else 'without'} transfer: "
                      f"AUROC {row['auroc']:.4f}, AUPRC {row['auprc']:.4f}")


def plot_table(table: list[dict], title: str, path: Path) -> None:
    """Against the share of target training patients (log scale): mean ± std of both arms for AUROC and AUPRC,
    and the paired gain (transfer minus scratch, same seed), the figure that says where transfer helps."""
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    for axis, metric in zip(axes, ("auroc", "auprc")):
        for transfer, label in ((False, "from scratch"), (True, "with transferred embeddings")):
            cells = [cell for cell in table if cell["transfer"] == transfer]
            axis.errorbar([cell["fraction"] for cell in cells], [cell[f"{metric}_mean"] for cell in cells],
                          yerr=[cell[f"{metric}_std"] for cell in cells], marker="o", capsize=3, label=label)
        axis.set(xscale="log", xlabel="share of target training patients", ylabel=metric.upper())
        axis.legend()
    gains, paired = axes[2], [cell for cell in table if "paired_seeds" in cell]
    for metric in ("auroc", "auprc"):
        gains.errorbar([cell["fraction"] for cell in paired], [cell[f"{metric}_gain_mean"] for cell in paired],
                       yerr=[cell[f"{metric}_gain_std"] for cell in paired], marker="o", capsize=3,
                       label=metric.upper())
    gains.axhline(0.0, color="grey", linewidth=0.8)
    gains.set(xscale="log", xlabel="share of target training patients", ylabel="transfer minus scratch, same seed")
    gains.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = recipe_parser(__doc__)
    for side in ("source", "target"):
        parser.add_argument(f"--{side}_dataset", help="required unless --summary_only")
        parser.add_argument(f"--{side}_data_dir", help=f"the {side}'s --data_dir")
        parser.add_argument(f"--{side}_hospital", help=f"the {side}'s --hospital (P19: A or B)")
        parser.add_argument(f"--{side}_protocol", help=f"the {side}'s --protocol")
    parser.add_argument("--source_embeddings", help="skip source training: use this published checkpoint")
    parser.add_argument("--source_objective", choices=("supervised", "forecasting"), default="supervised",
                        help="what the source learns: its own label (recipes/finetune.py) or forecasting "
                             "(recipes/pretrain.py)")
    parser.add_argument("--pretrain_args", default="", help="flags for the source's recipes/pretrain.py (forecasting)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.05, 0.1, 0.25, 1.0],
                        help="shares of the target's training patients, each a nested subset")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one target run per seed and fraction")
    parser.add_argument("--finetune_args", default="", help="flags for every fine-tuning run, e.g. model sizes")
    parser.add_argument("--launcher", default=shlex.quote(sys.executable), help='e.g. "accelerate launch"')
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/transfer"),
                        help="the runs, the published source checkpoint and results.json")
    parser.add_argument("--summary_only", action="store_true",
                        help="train nothing: table and plot of the cells already in <output_dir>/results.json")
    args = parser.parse_args()
    results = ResultRows(args.output_dir / "results.json", key=("fraction", "seed", "transfer"))
    if not args.summary_only:
        if not (args.source_dataset and args.target_dataset):
            parser.error("--source_dataset and --target_dataset are required to run the experiment")
        extra = shlex.split(args.finetune_args)
        args.output_dir.mkdir(parents=True, exist_ok=True)
        settings = {"source": dataset_arguments(args, "source"), "target": dataset_arguments(args, "target"),
                    "source_embeddings": args.source_embeddings, "finetune_args": extra}
        if args.source_objective == "forecasting":  # absent for supervised sources, as before the option existed
            settings["source_pretraining"] = shlex.split(args.pretrain_args)
            sizes = {name: embedding_settings(flags)
                     for name, flags in (("--pretrain_args", settings["source_pretraining"]),
                                         ("--finetune_args", extra))}
            # found now, not after pretraining
            if len({json.dumps(size, sort_keys=True) for size in sizes.values()}) > 1:
                parser.error(f"the source's embeddings must fit the target's model: {sizes}")
        check_same_experiment(args.output_dir / "experiment.json", settings)
        run_cells(args, extra, results)
    elif not results.rows:
        raise SystemExit(f"{results.path} holds no finished run yet: nothing to summarise")

    table = summarise(results.rows)
    (args.output_dir / "table.md").write_text(format_table(table) + "\n")
    (args.output_dir / "table.json").write_text(json.dumps(table, indent=1) + "\n")
    print(format_table(table))
    settings = json.loads((args.output_dir / "experiment.json").read_text())  # the experiment the rows belong to
    plot_table(table, f"{describe(settings['source'])} → {describe(settings['target'])}",
               args.output_dir / "transfer.png")


if __name__ == "__main__":
    main()
