"""Pretraining: the recipe end to end, fine-tuning from its output, and streaming with bounded memory."""

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from accelerate import Accelerator
from conftest import load_script
from safetensors.torch import load_file
from test_recipes_finetune import ROOT, kill_once_checkpointed, weights
from test_recipes_finetune import run as run_finetune
from torch.utils.data import DataLoader

from medfuse_hf import (
    FeatureVocabulary,
    MedFuseForPreTraining,
    MedFuseForSequenceClassification,
    MedFuseTokenizer,
)
from medfuse_hf.data import ForecastingCollator
from medfuse_hf.data.shards import write_corpus_manifest
from medfuse_hf.synthetic import make_sodium_cohort
from medfuse_hf.training import read_metrics
from medfuse_hf.training.cohorts import held_out_patients, streaming_patients
from medfuse_hf.training.run_info import read_run_settings

PRETRAIN = ROOT / "recipes" / "pretrain.py"
TINY_MODEL = ["--hidden_size", "32", "--value_embedding_size", "8", "--intermediate_size", "32"]


def run_pretrain(args: list[str], processes: int = 1) -> subprocess.CompletedProcess:
    """One process as users start it (on CUDA where there is one); several through the fine-tuning tests' gloo
    launcher."""
    if processes > 1:
        return run_finetune(args, processes=processes, recipe=PRETRAIN)
    result = subprocess.run([sys.executable, str(PRETRAIN), *args], capture_output=True, text=True, timeout=300,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def write_shards(folder: Path, count: int, patients: int = 2000, events: int = 200, seed: int = 0,
                 id_prefix: str = "") -> list[str]:
    """Shards of synthetic patients in the loaders' layout: `feature`/`value`/`time` lists per row."""
    rng = np.random.default_rng(seed)
    names = np.array(["heart_rate", "sodium", "creatinine"])
    paths = []
    for shard in range(count):
        offsets = pa.array(np.arange(patients + 1, dtype=np.int32) * events)
        table = pa.table({
            "patient_id": [f"{id_prefix}{shard}-{i}" for i in range(patients)],
            "feature": pa.ListArray.from_arrays(offsets, pa.array(names[rng.integers(0, 3, patients * events)])),
            "value": pa.ListArray.from_arrays(offsets, pa.array(rng.normal(100, 10, patients * events))),
            "time": pa.ListArray.from_arrays(offsets, pa.array(np.tile(np.linspace(0, 47, events), patients))),
        })
        path = folder / f"shard-{shard:03d}.parquet"
        pq.write_table(table, path)
        paths.append(str(path))
    return paths


def test_pretrained_model_is_a_starting_point_for_finetuning(tmp_path):
    pretrained = tmp_path / "pretrained"
    result = run_pretrain(["--dataset", "synthetic", "--num_patients", "128", "--num_epochs", "1",
                           "--output_dir", str(pretrained), *TINY_MODEL])
    assert "validation forecasting MSE" in result.stdout
    assert ({"model.safetensors", "config.json", "preprocessor_config.json"}
            <= {p.name for p in (pretrained / "model").iterdir()})
    finetuned = tmp_path / "finetuned"
    run_finetune(["--dataset", "synthetic", "--num_patients", "128", "--num_epochs", "1",
                  "--bootstrap_resamples", "20", "--init_from", str(pretrained / "model"),
                  "--output_dir", str(finetuned)])
    assert json.loads((finetuned / "test_metrics.json").read_text())["test_patients"] == 13
    # another hospital: a long-format table without creatinine and with a score of its own
    patients = make_sodium_cohort(128, seed=5)
    events = [(f"s{patient['record_id']}", time, name, value) for patient in patients
              for name, value, time in zip(patient["feature"], patient["value"], patient["time"])
              if name != "creatinine"]
    events += [(f"s{patient['record_id']}", 1.0, "bedside_score", patient["label"] + i % 3)
               for i, patient in enumerate(patients)]
    pd.DataFrame(events, columns=["patient_id", "time", "feature", "value"]).to_csv(tmp_path / "events.csv",
                                                                                    index=False)
    pd.DataFrame({"patient_id": [f"s{patient['record_id']}" for patient in patients],
                  "died": [patient["label"] for patient in patients]}).to_csv(tmp_path / "labels.csv", index=False)
    other_site = tmp_path / "other-site"
    result = run_finetune(["--dataset", "long-format", "--events", str(tmp_path / "events.csv"), "--labels",
                           str(tmp_path / "labels.csv"), "--label_column", "died", "--num_epochs", "1",
                           "--bootstrap_resamples", "20", "--init_from", str(pretrained / "model"),
                           "--assume_model_units", "--output_dir", str(other_site)])  # the table gives no unit
    assert "2 of the cohort's features matched" in result.stdout and "['bedside_score']" in result.stdout
    metrics = json.loads((other_site / "test_metrics.json").read_text())
    assert metrics["transferred_features"] == {"matched": 2, "new_at_target": 1, "only_at_source": 1,  # creatinine
                                               "kept_checkpoint_normalization": {},
                                               "units_assumed": {"heart_rate": "bpm", "sodium": "mmol/L"}}
    saved = MedFuseTokenizer.from_pretrained(other_site / "model").feature_vocabulary
    assert [spec.name for spec in saved][-1] == "bedside_score"  # appended: the checkpoint's ids unchanged


def test_masked_value_pretraining_learns_to_read_values_back(tmp_path):
    """The token-level objective end to end. A synthetic patient's repeated measurements of a feature scatter
    around its own level, so the hidden ones can be read from the others: validation MSE falls well below 1, about
    what guessing each feature's cohort mean scores on z-scored values."""
    pretrained = tmp_path / "masked"
    result = run_pretrain(["--dataset", "synthetic", "--num_patients", "256", "--num_epochs", "6", "--batch_size", "8",
                           "--learning_rate", "5e-3", "--objective", "masked_values", "--mask_probability", "0.3",
                           "--output_dir", str(pretrained), *TINY_MODEL])
    losses = [float(line.rsplit(" ", 1)[1]) for line in result.stdout.splitlines() if line.startswith("epoch")]
    assert len(losses) == 6 and losses[-1] < 0.5 < losses[0]
    card = (pretrained / "model" / "README.md").read_text()
    assert "predicts the hidden values of 30% of the numeric events" in card


def test_two_processes_pretrain_with_the_same_global_batches_as_one(tmp_path):
    """`--batch_size` is the global batch in pretraining as in fine-tuning: two processes split each batch, so they
    take as many optimizer steps as one process and the learning-rate schedule ends where it should."""
    args = ["--dataset", "synthetic", "--num_patients", "128", "--num_epochs", "1", "--batch_size", "16", *TINY_MODEL]
    one = run_pretrain(args + ["--output_dir", str(tmp_path / "one")])
    two = run_pretrain(args + ["--output_dir", str(tmp_path / "two")], processes=2)
    steps = [line.split(" steps")[0] for result in (one, two) for line in result.stdout.splitlines()
             if line.startswith("pretrained for")]
    assert steps[0] == steps[1] == "pretrained for 6"  # 102 training patients // 16


def test_streamed_shards_pretrain(tmp_path):
    shards = write_shards(tmp_path, 2, patients=200, events=50)
    result = run_pretrain(["--parquet_shards", str(tmp_path / "*.parquet"), "--max_steps", "4", "--batch_size", "16",
                           "--statistics_patients", "95", "--min_patients_for_statistics", "95", "--shuffle_buffer",
                           "64", "--group_by_length", "true", "--data_description", "two synthetic shards",
                           "--output_dir", str(tmp_path / "out"), *TINY_MODEL])
    assert "pretrained for 4 steps" in result.stdout
    assert len(shards) == 2
    published = tmp_path / "out" / "feature_embeddings"
    assert json.loads((published / "embedding_config.json").read_text())["source"] == "two synthetic shards"
    assert "forecasts each feature's values" in (tmp_path / "out" / "model" / "README.md").read_text()
    assert all(str(tmp_path) not in file.read_text() for file in published.glob("*.json"))  # no site paths shared
    cards = [published / "README.md", tmp_path / "out" / "model" / "README.md"]  # they name the run's own folder
    assert all(".parquet" not in card.read_text() and "two synthetic shards" in card.read_text() for card in cards)
    cost = json.loads((tmp_path / "out" / "pretraining_metrics.json").read_text())
    assert cost["steps"] == 4 and cost["patients_trained"] == 64 and cost["events_per_second"] > 0
    card = cards[1].read_text()
    assert "## Pretraining" in card and "4 optimizer steps of 16 patients" in card
    assert (tmp_path / "out" / "model" / "pretraining_curves.png").exists()

    # the release a hospital may publish: counts rounded to tens, cards naming the release, the run left exact
    released = tmp_path / "medfuse-base"
    (tmp_path / "table.md").write_text("| fraction | arm | AUPRC |\n|---:|---|---|\n| 0.01 | pretrained | 0.2632 |\n")
    subprocess.run([sys.executable, str(ROOT / "recipes" / "publish.py"), "--run_dir", str(tmp_path / "out"),
                    "--release_dir", str(released), "--evaluation", str(tmp_path / "table.md")],
                   check=True, capture_output=True, timeout=300, cwd=tmp_path)
    counts = {path: [spec.statistics.count for spec in MedFuseTokenizer.from_pretrained(path).feature_vocabulary]
              for path in (tmp_path / "out" / "model", released / "model")}
    assert (all(count % 10 == 0 for count in counts[released / "model"])
            and counts[released / "model"] != counts[tmp_path / "out" / "model"])
    assert "--init_from medfuse-base/model" in (released / "model" / "README.md").read_text()
    assert "4 optimizer steps of 16 patients" in (released / "model" / "README.md").read_text()
    for card in (tmp_path / "out" / "model" / "README.md", released / "model" / "README.md"):  # and the run keeps it
        assert "### What fine-tuning from it measured\n\n| fraction | arm | AUPRC |" in card.read_text()
    assert MedFuseForSequenceClassification.from_pretrained(released / "model", num_labels=2).config.vocab_size == 5
    # what is withheld is decided on the exact counts (95 patients a feature), not on the release's (rounded to 90)
    for folder in (tmp_path / "out", released):
        card = (folder / "feature_embeddings" / "README.md").read_text()
        assert "fewer than 95 patients, or more than half of whose values one patient gave, are withheld (none here)" \
            in card
    for inside_out in (tmp_path, tmp_path / "out" / "model"):  # the run's folder, or one of the run's
        refused = subprocess.run([sys.executable, str(ROOT / "recipes" / "publish.py"), "--run_dir",
                                  str(tmp_path / "out"), "--release_dir", str(inside_out)],
                                 capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert refused.returncode != 0 and "holds the run or lies in it" in refused.stderr
    assert (tmp_path / "out" / "pretraining_metrics.json").exists() and (tmp_path / "out" / "model").exists()
    # cards written to be pushed say to fine-tune from the repo, never from this machine's folder
    base = MedFuseForPreTraining.from_pretrained(tmp_path / "out" / "model")
    load_script("recipes/publish.py").write_cards(
        tmp_path / "out", base, MedFuseTokenizer.from_pretrained(tmp_path / "out" / "model"),
        read_run_settings(tmp_path / "out"), "hospital/medfuse-base", None)
    card = (tmp_path / "out" / "model" / "README.md").read_text()
    assert "--init_from hospital/medfuse-base" in card and str(tmp_path) not in card


@pytest.mark.parametrize("accumulation, steps", [(1, 8), (3, 4)])
def test_streamed_shards_size_the_schedule_to_their_passes_without_max_steps(tmp_path, accumulation, steps):
    """A hospital's corpus has its own size: the schedule's length comes from the shards' row counts, so the
    learning rate reaches the end of its schedule at the last batch of the last pass, and no step more is taken.
    With gradient accumulation, a pass's last batches make a step of their own."""
    write_shards(tmp_path, 2, patients=25, events=20)  # 50 patients: passes of 3 batches of 16 and a short one
    run_pretrain(["--parquet_shards", str(tmp_path / "*.parquet"), "--num_epochs", "2", "--batch_size", "16",
                  "--gradient_accumulation_steps", str(accumulation), "--statistics_patients", "50",
                  "--lr_scheduler", "linear", "--warmup_ratio", "0", "--logging_steps", "1", "--data_description",
                  "two synthetic shards", "--output_dir", str(tmp_path / "out"), *TINY_MODEL])
    metrics = json.loads((tmp_path / "out" / "pretraining_metrics.json").read_text())
    assert (metrics["steps"], metrics["epochs"], metrics["last_pass_cut_short"]) == (steps, 2, False)
    assert json.loads((tmp_path / "out" / "run_info.json").read_text())["config"]["max_steps"] == steps
    rates = [row["learning_rate"] for row in read_metrics(tmp_path / "out" / "logs" / "metrics.jsonl")
             if "learning_rate" in row]
    assert len(rates) == steps and rates[-1] == 0.0 and rates[-2] > 0.0


def test_streamed_pretraining_is_reproducible_from_its_command(tmp_path):
    """The base release promises that its committed command rebuilds its weights: the shard order, the batches and
    the masked values all follow `--seed`, so two runs of one command agree bit for bit, and another seed does not.

    Bit for bit holds at one thread count: float sums are split by thread (this run's weights differ between one and
    two threads), and a loaded machine may give a run fewer threads than the one before. So the runs here, like the
    fine-tuning runs the tests compare, each get one thread."""
    write_shards(tmp_path, 2, patients=100, events=40)
    args = ["--parquet_shards", str(tmp_path / "*.parquet"), "--max_steps", "3", "--batch_size", "16",
            "--statistics_patients", "50", "--objective", "masked_values", "--data_description", "synthetic shards",
            *TINY_MODEL]
    runs = {name: tmp_path / name for name in ("first", "again", "other_seed")}
    for name, output_dir in runs.items():
        run_finetune([*args, "--seed", "1" if name == "other_seed" else "0", "--output_dir", str(output_dir)],
                     recipe=PRETRAIN)
    first, again, other = (load_file(output_dir / "model" / "model.safetensors") for output_dir in runs.values())
    assert first.keys() == again.keys()
    differing = {name: (first[name] - again[name]).abs().max().item() for name in first
                 if not torch.equal(first[name], again[name])}
    assert not differing, f"one command, two sets of weights (largest difference per tensor): {differing}"
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_the_base_card_gives_each_sources_coverage_of_the_vocabulary(tmp_path):
    write_shards(tmp_path, 1, patients=100, events=20)
    write_corpus_manifest(tmp_path, {"description": "one synthetic shard", "sources": {
        "left": {"patients": 60, "events": 1200, "license": "CC-BY 4.0", "citation": "Left et al.",
                 "features": ["heart_rate", "sodium"]},
        "right": {"patients": 40, "events": 800, "license": "ODC-BY 1.0", "citation": "Right et al.",
                  "features": ["creatinine"]}}})
    run_pretrain(["--parquet_shards", str(tmp_path / "*.parquet"), "--max_steps", "2", "--batch_size", "16",
                  "--statistics_patients", "100", "--output_dir", str(tmp_path / "out"), *TINY_MODEL])
    card = (tmp_path / "out" / "model" / "README.md").read_text()
    assert "`left`: 60 patients, 1,200 events; 2 of the vocabulary's 3 features; CC-BY 4.0" in card
    assert "`right`: 40 patients, 800 events; 1 of the vocabulary's 3 features; ODC-BY 1.0" in card
    assert "Left et al." in card and "Right et al." in card  # both sources' citations, from corpus.json


def test_streaming_holds_at_most_open_shards_at_once(tmp_path):
    """Streamed memory is the shuffle buffer plus one decoded row group per open shard, whatever the cohort's size:
    the buffer must draw from `open_shards` shards at a time (`datasets`' own default opens ten) and lose no one."""
    shards = write_shards(tmp_path, 6, patients=200, events=5)

    def shards_in_first_buffer(open_shards: int) -> set[str]:
        stream = streaming_patients(shards, seed=0, buffer_size=100, open_shards=open_shards)
        patients = [patient["patient_id"] for patient in stream]
        assert sorted(patients) == sorted(f"{shard}-{i}" for shard in range(6) for i in range(200))
        return {patient.split("-")[0] for patient in patients[:100]}

    assert len(shards_in_first_buffer(open_shards=2)) <= 2
    assert len(shards_in_first_buffer(open_shards=6)) > 2
    with pytest.raises(ValueError, match="buffer_size must be at least 1, got 2 and 0"):
        streaming_patients(shards, seed=0, buffer_size=0)  # `datasets` would stream it unshuffled, silently


def test_transfer_experiment_runs_every_cell_and_resumes(tmp_path, monkeypatch, capsys):
    output_dir = tmp_path / "transfer"
    command = [sys.executable, str(ROOT / "recipes" / "transfer.py"), "--source_dataset", "synthetic",
               "--target_dataset", "synthetic", "--fractions", "0.5", "--seeds", "0",
               "--finetune_args", "--num_patients 128 --num_epochs 1 --bootstrap_resamples 20 " + " ".join(TINY_MODEL),
               "--output_dir", str(output_dir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((output_dir / "results.json").read_text())
    assert sorted((row["fraction"], row["transfer"]) for row in rows) == [(0.5, False), (0.5, True)]
    assert all((row["transferred_features"] or 0) > 0 for row in rows if row["transfer"])
    assert (output_dir / "transfer.png").exists() and "| 0.5 | yes | 1 |" in (output_dir / "table.md").read_text()
    cell = next(cell for cell in json.loads((output_dir / "table.json").read_text())
                if cell["fraction"] == 0.5 and cell["transfer"])
    auroc = {row["transfer"]: row["auroc"] for row in rows if row["fraction"] == 0.5}
    assert cell["paired_seeds"] == 1 and cell["auroc_gain_mean"] == pytest.approx(auroc[True] - auroc[False])
    assert cell["auroc_gains"] == [pytest.approx(auroc[True] - auroc[False])]
    assert f"fraction 0.5, paired gain per seed: AUROC {auroc[True] - auroc[False]:+.3f}" in result.stdout
    # the rest trains nothing, so it runs in this process (a recipe process costs seconds to start)
    transfer = load_script("recipes/transfer.py")

    def rerun(arguments: list[str]) -> None:
        monkeypatch.setattr(sys, "argv", ["transfer.py", *arguments])
        transfer.main()

    rerun(command[2:])
    assert "seed 0" not in capsys.readouterr().out  # every cell was already done: nothing re-run
    other_budget = [*command[2:command.index("--finetune_args") + 1], "--num_patients 128 --num_epochs 2",
                    *command[command.index("--finetune_args") + 2:]]
    with pytest.raises(SystemExit, match="other finetune_args"):  # not mixed into this table
        rerun(other_budget)
    (output_dir / "table.md").unlink()
    rerun(["--output_dir", str(output_dir), "--summary_only"])  # a summary trains nothing, needs no flags
    assert "seed 0" not in capsys.readouterr().out and "| 0.5 | yes | 1 |" in (output_dir / "table.md").read_text()
    with pytest.raises(SystemExit, match="no finished run yet"):
        rerun(["--output_dir", str(tmp_path / "empty"), "--summary_only"])


def test_transfer_table_reports_sample_std_and_the_gain_paired_by_seed():
    transfer = load_script("recipes/transfer.py")
    rows = [{"fraction": 0.1, "transfer": arm, "seed": seed, "auroc": 0.8, "auprc": auprc}
            for arm, figures in ((True, (0.30, 0.32, 0.34)), (False, (0.28, 0.31, 0.30)))
            for seed, auprc in enumerate(figures)]
    scratch, transferred = transfer.summarise(rows)
    assert (transferred["seeds"] == 3 and abs(transferred["auprc_mean"] - 0.32) < 1e-12
            and abs(transferred["auprc_std"] - 0.02) < 1e-12)
    # gains 0.02, 0.01, 0.04: paired by seed, not the difference of two unpaired means with their own spreads
    assert (abs(transferred["auprc_gain_mean"] - 0.07 / 3) < 1e-12
            and abs(transferred["auprc_gain_std"] - 0.0152753) < 1e-6)
    assert transferred["paired_seeds"] == 3 and "auprc_gain_mean" not in scratch
    *rows_lines, _, per_seed = transfer.format_table([scratch, transferred]).splitlines()
    assert rows_lines[-1] == ("| 0.1 | yes | 3 | 0.8000 (same on every seed) | 0.3200 ± 0.0200 | 3 | "
                              "+0.0000 (same on every seed) | +0.0233 ± 0.0153 |")
    assert per_seed == "fraction 0.1, paired gain per seed: AUROC +0.000, +0.000, +0.000; AUPRC +0.020, +0.010, +0.040"
    (alone,) = transfer.summarise([{"fraction": 0.5, "transfer": True, "seed": 0, "auroc": 0.7, "auprc": 0.2}])
    # no ± nan
    assert transfer.format_table([alone]).splitlines()[-1] == "| 0.5 | yes | 1 | 0.7000 | 0.2000 |  |  |  |"


def test_a_source_without_labels_transfers_what_forecasting_pretraining_learned(tmp_path):
    output_dir = tmp_path / "transfer"
    tiny = " ".join(TINY_MODEL)
    result = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "transfer.py"), "--source_dataset", "synthetic", "--target_dataset",
         "synthetic", "--source_objective", "forecasting",
         "--pretrain_args", f"--num_patients 128 --num_epochs 1 {tiny}",
         "--finetune_args", f"--num_patients 128 --num_epochs 1 --bootstrap_resamples 20 {tiny}",
         "--fractions", "1.0", "--seeds", "0", "--output_dir", str(output_dir)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    source = json.loads((output_dir / "source" / "model" / "config.json").read_text())
    assert source["architectures"] == ["MedFuseForPreTraining"]
    transferred = next(row for row in json.loads((output_dir / "results.json").read_text()) if row["transfer"])
    assert transferred["transferred_features"] == 3  # the synthetic cohort's features, all learned by forecasting
    assert (json.loads((output_dir / "experiment.json").read_text())["source_pretraining"][:2]
            == ["--num_patients", "128"])
    mismatched = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "transfer.py"), "--source_dataset", "synthetic", "--target_dataset",
         "synthetic", "--source_objective", "forecasting", "--pretrain_args", "--hidden_size 64",
         "--finetune_args", tiny, "--output_dir", str(tmp_path / "mismatched")],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert mismatched.returncode != 0 and "must fit the target's model" in mismatched.stderr
    assert not (tmp_path / "mismatched" / "source").exists()  # refused before pretraining


def test_a_long_format_table_without_labels_pretrains(tmp_path):
    rows = [(f"s{patient['record_id']}", time, name, value) for patient in make_sodium_cohort(96, seed=4)
            for name, value, time in zip(patient["feature"], patient["value"], patient["time"])]
    pd.DataFrame(rows, columns=["patient_id", "time", "feature", "value"]).to_csv(tmp_path / "events.csv", index=False)
    run_pretrain(["--dataset", "long-format", "--events", str(tmp_path / "events.csv"), "--num_epochs", "1",
                  "--batch_size", "16", "--hidden_size", "32", "--value_embedding_size", "8",
                  "--intermediate_size", "32", "--output_dir", str(tmp_path / "run")])
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()


def test_the_per_feature_base_pretrains_and_a_probe_reads_its_trained_pooler(tmp_path):
    """The next base's architecture: the forecasting objective trains the per-feature pooler (masked-value
    pretraining would leave it untrained), so a probe, which refuses encoder parts its checkpoint never trained,
    starts from it."""
    base = tmp_path / "base"
    run_pretrain(["--dataset", "synthetic", "--num_patients", "128", "--num_epochs", "1", "--pooling", "per_feature",
                  "--value_normalization", "quantile", "--output_dir", str(base), *TINY_MODEL])
    config = json.loads((base / "model" / "config.json").read_text())
    assert config["pooling"] == "per_feature"
    assert "pooler.not_measured" in {key.removeprefix("medfuse.") for key in load_file(base / "model" /
                                                                                        "model.safetensors")}
    probe = tmp_path / "probe"
    run_finetune(["--dataset", "synthetic", "--num_patients", "128", "--num_epochs", "1", "--bootstrap_resamples",
                  "20", "--init_from", str(base / "model"), "--strategy", "probe", "--output_dir", str(probe)])
    assert json.loads((probe / "test_metrics.json").read_text())["test_patients"] == 13


def test_pretraining_stops_when_the_validation_loss_stops_falling_and_keeps_its_lowest_epoch(tmp_path):
    """`--patience` for a base pretrained until its objective flattens. At a learning rate of 0 the loss never falls
    after the first epoch: one more epoch, then a stop, and the run reports and keeps the first."""
    output = tmp_path / "patient"
    result = run_pretrain(["--dataset", "synthetic", "--num_patients", "64", "--num_epochs", "5", "--batch_size", "16",
                           "--learning_rate", "0", "--patience", "1", "--output_dir", str(output), *TINY_MODEL])
    losses = [float(line.rsplit(" ", 1)[1]) for line in result.stdout.splitlines() if line.startswith("epoch")]
    metrics = json.loads((output / "pretraining_metrics.json").read_text())
    assert len(losses) == 2 and metrics["epochs"] == 2
    assert metrics["best_validation"] == {"loss": pytest.approx(losses[0], abs=1e-4), "epoch": 1}  # printed to 4
    assert metrics["validation_loss"] == pytest.approx(metrics["best_validation"]["loss"])  # the kept epoch's


def test_a_tokenizer_to_reuse_is_refused_where_it_would_be_ignored(tmp_path, capsys):
    (tmp_path / "preprocessor_config.json").write_text("{}")  # a saved tokenizer, as far as the flag's type looks
    with pytest.raises(SystemExit):
        load_script("recipes/pretrain.py").main(["--dataset", "synthetic", "--tokenizer_from", str(tmp_path)])
    assert "--tokenizer_from is for streamed shards" in capsys.readouterr().err


def test_a_tokenizer_to_reuse_must_read_the_shards_in_its_units(tmp_path, tokenizer):
    """Its statistics normalise the shards' values: a tokenizer fitted on sodium in mEq/L against shards in the
    catalogue's mmol/L (as public shards are; a corpus.json records an export's units) is refused before training."""
    write_shards(tmp_path, 1, patients=40, events=10)
    in_meq = [replace(spec, unit="mEq/L") if spec.name == "sodium" else spec for spec in tokenizer.feature_vocabulary]
    MedFuseTokenizer(FeatureVocabulary(in_meq), max_events=64).save_pretrained(tmp_path / "tokenizer")
    with pytest.raises(ValueError, match=r"one synthetic shard \(--tokenizer_from .*\): feature 'sodium' is in "
                                         r"'mmol/L', but the tokenizer's vocabulary has it in 'mEq/L'"):
        load_script("recipes/pretrain.py").main(
            ["--parquet_shards", str(tmp_path / "*.parquet"), "--data_description", "one synthetic shard",
             "--tokenizer_from", str(tmp_path / "tokenizer"), "--output_dir", str(tmp_path / "out"), *TINY_MODEL])
    assert not (tmp_path / "out" / "model").exists()


def test_a_streamed_base_stops_on_its_held_out_patients_loss_and_cards_it(tmp_path):
    """A base pretrained on shards until its objective flattens, measured on patients it never trains on. At a
    learning rate of 0 the loss never falls after the first pass, and the first is kept. `--max_steps` ends the run
    exactly at the end of the second pass, which still counts, and is validated, as a pass."""
    write_shards(tmp_path, 1, patients=64, events=20)
    (tmp_path / "validation").mkdir()
    write_shards(tmp_path / "validation", 1, patients=24, events=20, seed=1, id_prefix="held-out-")
    write_corpus_manifest(tmp_path, {"description": "synthetic shards", "validation": {"patients": 24}, "sources": {
        "synthetic": {"patients": 88, "events": 1760, "license": "CC0", "citation": ""}}})
    output = tmp_path / "run"
    result = run_pretrain(["--parquet_shards", str(tmp_path / "*.parquet"), "--validation_shards",
                           str(tmp_path / "validation" / "*.parquet"), "--max_steps", "8", "--num_epochs", "5",
                           "--batch_size", "16", "--learning_rate", "0", "--patience", "2", "--statistics_patients",
                           "64", "--output_dir", str(output), *TINY_MODEL])
    losses = [float(line.rsplit(" ", 1)[1]) for line in result.stdout.splitlines() if line.startswith("epoch")]
    metrics = json.loads((output / "pretraining_metrics.json").read_text())
    assert len(losses) == 2 and metrics["epochs"] == 2 and metrics["steps"] == 8  # 64 patients / 16, twice
    assert metrics["best_validation"]["epoch"] == 1 and metrics["validation_patients"] == 24
    card = (output / "model" / "README.md").read_text()
    assert "`synthetic`: 88 patients" in card and "of these, 24 patients held out (not trained on)" in card
    assert f"MSE on 24 held-out patients: {metrics['validation_loss']:.4f}, at epoch 1 of 2, the lowest" in card


def test_a_pass_cut_short_by_the_step_limit_is_validated_and_may_be_kept(tmp_path):
    """14 steps over 6 a pass: the third pass stops after 2. Its weights are trained, so they are validated and kept
    if their loss is the lowest (here it is), and the card says the pass was cut. A run stopped after its checkpoint
    at step 14 and before that validation does it when resumed."""
    output = tmp_path / "run"
    command = ["--dataset", "synthetic", "--num_patients", "128", "--num_epochs", "5", "--batch_size", "16",
               "--learning_rate", "1e-2", "--max_steps", "14", "--patience", "3", "--checkpoint_every_steps", "7",
               "--output_dir", str(output), *TINY_MODEL]
    result = run_pretrain(command)
    lines = [line for line in result.stdout.splitlines() if line.startswith("epoch")]
    losses = [float(line.rsplit(" ", 1)[1]) for line in lines]
    metrics = json.loads((output / "pretraining_metrics.json").read_text())
    assert len(losses) == 3 and "(cut short by --max_steps)" in lines[2] and "cut short" not in lines[1]
    assert metrics["steps"] == 14 and metrics["epochs"] == 2 and metrics["last_pass_cut_short"]
    assert metrics["best_validation"]["epoch"] == 3 == 1 + losses.index(min(losses))
    assert metrics["validation_loss"] == pytest.approx(losses[2], abs=1e-4)  # the cut pass's weights, kept
    card = (output / "model" / "README.md").read_text()
    assert "at epoch 3 of 3 (the last cut short by the step limit), the lowest" in card

    shutil.rmtree(output / "model")  # as if stopped between the checkpoint at step 14 and the cut pass's validation
    resumed = run_pretrain([*command, "--resume_from_checkpoint", "latest"])
    assert [line for line in resumed.stdout.splitlines() if line.startswith("epoch")] == lines[2:]
    again = json.loads((output / "pretraining_metrics.json").read_text())
    assert again["best_validation"] == metrics["best_validation"] and again["last_pass_cut_short"]


def test_two_processes_measure_the_held_out_loss_of_a_streamed_base_as_one_does(tmp_path):
    """Under two ranks the run validates each pass and keeps the lowest, as one process does, and its held-out loss is
    the one a single process computes for the same weights, though each rank scores every other batch: 25 patients
    in batches of 16 leave a last batch that an even split could only fill by repeating a patient. The training
    stream, batched by length, is read by one rank and its batches dispatched."""
    write_shards(tmp_path, 1, patients=64, events=20)
    (tmp_path / "validation").mkdir()
    held_out = write_shards(tmp_path / "validation", 1, patients=25, events=20, seed=1, id_prefix="held-out-")
    output = tmp_path / "run"
    result = run_pretrain(["--parquet_shards", str(tmp_path / "*.parquet"), "--validation_shards",
                           str(tmp_path / "validation" / "*.parquet"), "--num_epochs", "2", "--logging_steps", "1",
                           "--batch_size", "16", "--patience", "2", "--statistics_patients", "64",
                           "--group_by_length", "true", "--data_description", "synthetic shards", "--output_dir",
                           str(output), *TINY_MODEL], processes=2)
    losses = [float(line.rsplit(" ", 1)[1]) for line in result.stdout.splitlines() if line.startswith("epoch")]
    metrics = json.loads((output / "pretraining_metrics.json").read_text())
    assert len(losses) == 2 and metrics["num_processes"] == 2 and metrics["steps"] == 8  # 2 passes of 64 // 16
    rates = [row["learning_rate"] for row in read_metrics(output / "logs" / "metrics.jsonl") if "learning_rate" in row]
    assert rates[-1] == 0.0 and rates[-2] > 0.0  # the schedule, sized from the shards, ends at the last step
    assert metrics["validation_loss"] == pytest.approx(min(losses), abs=1e-4)  # the kept pass's, printed to 4
    pretrain = load_script("recipes/pretrain.py")
    collate = ForecastingCollator(MedFuseTokenizer.from_pretrained(output / "model"), row_key="patient_id")
    one_process = pretrain.validation_loss(
        MedFuseForPreTraining.from_pretrained(output / "model"),
        DataLoader(held_out_patients(held_out, []), batch_size=16, collate_fn=collate), Accelerator(cpu=True))
    assert metrics["validation_patients"] == 25 and metrics["validation_loss"] == pytest.approx(one_process, rel=1e-5)


@pytest.mark.parametrize(("objective", "streamed"), [("forecasting", False), ("masked_values", True)])
def test_a_killed_pretraining_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, objective, streamed):
    """Accelerate collates a batch ahead and a resumed stream collates the batches it skips, so the global random
    state a checkpoint saves is off by a batch or more: each patient's cut-off or hidden values are keyed to (seed,
    epoch, patient) instead."""
    if streamed:
        write_shards(tmp_path, 1, patients=320, events=20)
        cohort = ["--parquet_shards", str(tmp_path / "*.parquet"), "--data_description", "synthetic shards",
                  "--statistics_patients", "320"]
    else:
        cohort = ["--dataset", "synthetic", "--num_patients", "384"]
    args = [*cohort, "--objective", objective, "--batch_size", "16", "--num_epochs", "2", "--checkpoint_every_steps",
            "5", *TINY_MODEL]
    # on the CPU and one thread, as the killed run is, so that the runs share their arithmetic
    run_finetune([*args, "--output_dir", str(tmp_path / "uninterrupted")], recipe=PRETRAIN)
    interrupted = tmp_path / "interrupted"
    kill_once_checkpointed([sys.executable, str(PRETRAIN), *args, "--output_dir", str(interrupted)],
                           interrupted / "checkpoints" / "step_00000010")  # mid-epoch: about 20 batches per epoch
    resumed = run_finetune([*args, "--output_dir", str(interrupted), "--resume_from_checkpoint", "latest"],
                           recipe=PRETRAIN)
    assert "resumed from" in resumed.stdout
    expected = weights(tmp_path / "uninterrupted")
    for name, tensor in weights(interrupted).items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-6, rtol=1e-5)


def test_held_out_patients_are_refused_where_they_are_also_trained_on(tmp_path):
    training = write_shards(tmp_path, 2, patients=10, events=5)
    (tmp_path / "validation").mkdir()
    copied = write_shards(tmp_path / "validation", 1, patients=3, events=5)  # ids 0-0 .. 0-2: the first shard's
    with pytest.raises(ValueError, match=r"shard-000.parquet: 3 of its patients \(e.g. \['0-0', '0-1', '0-2'\]\)"):
        held_out_patients(copied, training)
    with pytest.raises(ValueError, match="both a training and a validation shard"):
        held_out_patients(training[1:], training)
    assert held_out_patients(write_shards(tmp_path / "validation", 1, patients=3, events=5, id_prefix="new-"),
                             training)["patient_id"] == ["new-0-0", "new-0-1", "new-0-2"]


@pytest.mark.parametrize(("flags", "message"), [
    (["--patience", "2"], "a streamed cohort has none: give its held-out patients with --validation_shards"),
    (["--dataset", "synthetic", "--validation_shards", "SHARDS"], "a cohort in memory has its own validation"),
    (["--dataset", "synthetic", "--group_by_length", "true"], "a cohort in memory is always batched by length"),
    (["--parquet", "--dataset", "p19", "--hospital", "A"],
     "--parquet_shards streams its own corpus, not --dataset, --hospital;"),
])
def test_a_validation_loss_is_asked_for_where_it_can_be_measured(tmp_path, capsys, flags, message):
    """Flags that only one kind of cohort reads are refused with the other, never silently dropped."""
    streamed = "--dataset" not in flags or flags[0] == "--parquet"
    write_shards(tmp_path, 1, patients=4, events=3)
    written = str(tmp_path / "*.parquet")
    shards = ["--parquet_shards", written] if streamed else []
    flags = [written if flag == "SHARDS" else flag for flag in flags if flag != "--parquet"]
    with pytest.raises(SystemExit):
        load_script("recipes/pretrain.py").main([*shards, "--max_steps", "2", *flags])
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--parquet_shards", "--validation_shards"])
@pytest.mark.parametrize(("given", "message"), [
    pytest.param("empty/*.parquet", "no file matches this pattern", id="a-glob-matching-nothing"),
    pytest.param("empty", "a folder; name its shards, e.g. '{}/*.parquet'", id="a-folder"),
])
def test_shards_that_are_not_there_are_refused_as_the_flags_are_read(tmp_path, capsys, flag, given, message):
    """A glob that matches nothing, or a folder named in place of its shards, is a usage error naming the flag and
    what it was given, before a run folder is begun: never a traceback from the stream or an empty corpus."""
    (tmp_path / "corpus").mkdir()
    (tmp_path / "empty").mkdir()
    write_shards(tmp_path / "corpus", 1, patients=4, events=3)
    shards, given = str(tmp_path / "corpus" / "*.parquet"), str(tmp_path / given)
    flags = (["--parquet_shards", given] if flag == "--parquet_shards"
             else ["--parquet_shards", shards, "--validation_shards", given])
    with pytest.raises(SystemExit) as stopped:
        load_script("recipes/pretrain.py").main([*flags, "--output_dir", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and f"{flag}: {given}" in error
    assert message.format(tmp_path / "empty") in error and not (tmp_path / "out").exists()
