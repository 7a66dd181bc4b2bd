"""The fine-tuning recipe as users run it: one process, two CPU processes, killed and resumed."""

import argparse
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from itertools import product
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from conftest import load_script
from safetensors.torch import load_file, save_file

from medfuse_hf import FeatureVocabulary, MedFuseConfig, MedFuseTokenizer
from medfuse_hf.data import MedFuseDataCollator
from medfuse_hf.synthetic import make_sodium_cohort
from medfuse_hf.training import cohorts, read_metrics, starting_point, summary_baseline
from medfuse_hf.training.cohorts import fit_tokenizer, load_cohort_from_settings, training_splits
from medfuse_hf.training.recipe_config import parse_with_config

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "finetune.py"
EVALUATE = ROOT / "recipes" / "evaluate.py"
PUBLISH = ROOT / "recipes" / "publish.py"
TINY = [
    "--dataset", "synthetic", "--num_patients", "256", "--hidden_size", "32", "--value_embedding_size", "8",
    "--intermediate_size", "32", "--num_attention_heads", "2", "--hidden_dropout_prob", "0",
    "--attention_probs_dropout_prob", "0", "--classifier_dropout", "0", "--batch_size", "32",
    "--bootstrap_resamples", "50", "--learning_rate", "3e-3",
]


def free_port() -> int:
    """A free port from this pytest-xdist worker's own 500, below Linux's ephemeral range: a port the OS hands out
    (bind to 0) is free again once probed, and another worker could be handed it before the launcher binds it."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")) % 24
    for port in random.sample(range(20000 + 500 * worker, 20500 + 500 * worker), 500):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in 20000 + 500 x {worker} onwards")


def kill_ranks_of(output_dir: str, sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal every process whose command line names this run's output folder: a rank stuck at teardown (seen
    in gloo's destructor on a loaded machine) would otherwise hold the pipes open and hang the suite."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if output_dir.encode() in cmdline.read_bytes():
                os.kill(int(cmdline.parent.name), sig)
        except (OSError, ValueError):
            continue


def recipe_env() -> dict[str, str]:
    """CPU runs everywhere, also on a GPU machine, so that the runs a test compares share their arithmetic (and the
    two gloo ranks below do not look for a second GPU). PYTHONFAULTHANDLER: a rank sent SIGABRT prints every thread's
    stack, so a hang's failure says where it hung."""
    return dict(os.environ, CUDA_VISIBLE_DEVICES="", ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1",
                PYTHONFAULTHANDLER="1")


def run(args: list[str], processes: int = 1, timeout: int = 300, recipe: Path = RECIPE) -> subprocess.CompletedProcess:
    env = recipe_env()
    if processes == 1:
        command = [sys.executable, str(recipe)]
    else:  # `accelerate launch --cpu` starts one process only (accelerate#2741); this starts two gloo ranks
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                   "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
                   "--dynamo_backend", "no", "--main_process_port", str(free_port()), str(recipe)]
    # A session of its own, so that a hung launcher and its ranks can be ended together.
    process = subprocess.Popen(command + args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # Ranks are found by their run's output folder; a recipe without one (publish) is one process in this session.
        output_dir = args[args.index("--output_dir") + 1] if "--output_dir" in args else None
        if output_dir:
            kill_ranks_of(output_dir, signal.SIGABRT)  # stacks first, into the pipe read below
        time.sleep(5)
        os.killpg(process.pid, signal.SIGKILL)
        if output_dir:
            kill_ranks_of(output_dir)  # torch's launcher gives ranks sessions of their own
        stdout, stderr = process.communicate(timeout=60)
        stacks = "\n".join(line for line in stderr.splitlines() if not line.startswith("Extension modules:"))
        pytest.fail(f"recipe timed out after {timeout} s: {stacks[-6000:]}")
    assert process.returncode == 0, stderr[-3000:]
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(output_dir / "model" / "model.safetensors")


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("single")
    run(TINY + ["--num_epochs", "2", "--output_dir", str(output_dir)])
    return output_dir


def test_single_process_run_writes_model_metrics_plots_and_run_record(single_process_run):
    output_dir = single_process_run
    result = json.loads((output_dir / "test_metrics.json").read_text())
    assert set(result["test"]) == {"auroc", "auprc", "accuracy", "f1", "min_recall_precision", "brier"}
    auroc = result["test"]["auroc"]
    assert auroc["low"] <= auroc["value"] <= auroc["high"]
    predictions = pd.read_csv(output_dir / "test_predictions.csv")  # accuracy also at the cut validation chose
    at_threshold = ((predictions["probability"] >= result["validation_threshold"]) == predictions["label"]).mean()
    assert result["accuracy_at_validation_threshold"] == pytest.approx(at_threshold)
    assert {p.name for p in (output_dir / "plots").iterdir()} == {
        "roc_curve.png", "pr_curve.png", "calibration_curve.png", "training_curves.png"
    }
    card = (output_dir / "model" / "README.md").read_text()
    assert "Not a medical device" in card and "**not** the 2022 multimodal" in card
    assert "to predict a label that rises at both ends of the sodium range" in card  # what the label means
    auroc_row = f"| auroc | {auroc['value']:.4f} | {auroc['low']:.4f} – {auroc['high']:.4f} |"
    assert auroc_row in card  # this run's test metric, with its interval
    assert f"- test patients: {result['test_patients']:,}" in card and "- Licence of the data:" in card
    assert "features, " in card and "in the canonical clinical catalogue" in card  # vocabulary coverage
    embeddings_card = (output_dir / "feature_embeddings" / "README.md").read_text()
    assert "Not a medical device" in embeddings_card and "load_feature_embeddings(" in embeddings_card
    assert "calibration curve" in card and "calibration curve" not in embeddings_card  # it predicts nothing
    assert (output_dir / "feature_embeddings" / "embedding_config.json").exists()
    # the recipe dropped features its training split lacked; the published tokenizer is strict, as users expect
    assert json.loads((output_dir / "model" / "preprocessor_config.json").read_text())["unknown_features"] == "error"
    config = json.loads((output_dir / "model" / "config.json").read_text())  # risks at the cohort's prevalence
    assert config["logit_offsets"] == pytest.approx([-math.log(weight) for weight in config["class_weights"]])
    assert result["train_seconds"] > 0 and result["events_per_second"] > 0 and result["patients_trained"] > 0
    header, *lines = (output_dir / "test_predictions.csv").read_text().splitlines()
    assert header == "record_id,label,probability" and len(lines) == result["test_patients"]
    assert all(line.split(",")[0].isdigit() and line.split(",")[1] in ("0", "1") for line in lines)  # ids as ids
    validations = [row for row in read_metrics(output_dir / "logs" / "metrics.jsonl") if "validation_auprc" in row]
    best = max(validations, key=lambda row: row["validation_auprc"])  # the first of equals, as early stopping keeps
    assert result["best_validation"] == {"auprc": best["validation_auprc"], "epoch": best["epoch"] + 1}
    run_info = json.loads((output_dir / "run_info.json").read_text())
    assert run_info["config"]["seed"] == 0 and run_info["versions"]["torch"] and "commit" in run_info["git"]
    assert torch.backends.cpu.get_cpu_capability() in run_info["processor"]  # what a seeded run's figures depend on
    from transformers import AutoModelForSequenceClassification

    import medfuse_hf  # noqa: F401  (registers the Auto classes)

    assert type(AutoModelForSequenceClassification.from_pretrained(output_dir / "model")).__name__ == (
        "MedFuseForSequenceClassification"
    )


def test_two_cpu_processes_train_like_one(tmp_path, single_process_run):
    output_dir = tmp_path / "two"
    run(TINY + ["--num_epochs", "2", "--output_dir", str(output_dir)], processes=2)
    result = json.loads((output_dir / "test_metrics.json").read_text())
    assert result["num_processes"] == 2
    assert len(result["batches_by_process"]) == 2 and min(result["batches_by_process"]) > 0  # both ranks trained
    first, second = result["weights_checksum_by_process"]
    assert first == second  # replicas ended identical
    predictions = np.genfromtxt(output_dir / "test_predictions.csv", delimiter=",", names=True)
    assert len(predictions) == result["test_patients"] == 26
    assert len(np.unique(predictions["record_id"])) == 26  # every test patient scored exactly once
    single = weights(single_process_run)
    for name, tensor in weights(output_dir).items():  # same global batches: same optimisation, up to float noise
        torch.testing.assert_close(tensor, single[name], atol=2e-4, rtol=1e-3)
    single_result = json.loads((single_process_run / "test_metrics.json").read_text())
    assert abs(result["test"]["auroc"]["value"] - single_result["test"]["auroc"]["value"]) < 0.02


def creatinine_in_umol(model_dir: Path, copy: Path) -> Path:
    """A copy of a saved model whose tokenizer says its creatinine statistics are of values in µmol/L."""
    shutil.copytree(model_dir, copy)
    saved = MedFuseTokenizer.from_pretrained(copy)
    saved.feature_vocabulary = FeatureVocabulary([replace(spec, unit="umol/L") if spec.name == "creatinine" else spec
                                                  for spec in saved.feature_vocabulary])
    saved.save_pretrained(copy)
    return copy


def test_evaluate_recipe_scores_the_saved_model_as_training_did(tmp_path, single_process_run):
    """`recipes/evaluate.py` reads only what the run saved (model and tokenizer): on the same test split it must give
    the same scores, so a published model can be re-checked anywhere."""
    output_dir = tmp_path / "evaluated"
    run(["--model_dir", str(single_process_run / "model"), "--dataset", "synthetic", "--num_patients", "256",
         "--bootstrap_resamples", "50", "--output_dir", str(output_dir)], recipe=EVALUATE)
    evaluated = pd.read_csv(output_dir / "test_predictions.csv").sort_values("record_id", ignore_index=True)
    trained = pd.read_csv(single_process_run / "test_predictions.csv").sort_values("record_id", ignore_index=True)
    pd.testing.assert_frame_equal(evaluated, trained, check_exact=False, atol=1e-5, rtol=0)
    result = json.loads((output_dir / "test_metrics.json").read_text())
    training_result = json.loads((single_process_run / "test_metrics.json").read_text())
    assert result["test"]["auroc"] == pytest.approx(training_result["test"]["auroc"], abs=1e-6)
    assert result["model_dir"] == str(single_process_run / "model")
    # a model whose creatinine was learnt in µmol/L, scored on a cohort in the catalogue's mg/dL: refused unwritten
    other_units = creatinine_in_umol(single_process_run / "model", tmp_path / "umol")
    refused = subprocess.run([sys.executable, str(EVALUATE), "--model_dir", str(other_units), "--dataset", "synthetic",
                              "--num_patients", "256", "--output_dir", str(tmp_path / "refused")],
                             capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert refused.returncode != 0 and "'creatinine' is in 'mg/dL', but the model's vocabulary has it in 'umol/L'" \
        in refused.stderr and not (tmp_path / "refused").exists()


def test_publish_rewrites_both_cards_from_what_the_run_recorded(tmp_path, single_process_run):
    run_dir = tmp_path / "run"
    shutil.copytree(single_process_run, run_dir)
    (run_dir / "model" / "README.md").unlink()
    run(["--run_dir", str(run_dir), "--card_copy", str(tmp_path / "cards" / "tiny.md")], recipe=PUBLISH)
    card = (tmp_path / "cards" / "tiny.md").read_text()
    assert card == (run_dir / "model" / "README.md").read_text()
    auroc = json.loads((run_dir / "test_metrics.json").read_text())["test"]["auroc"]["value"]
    assert f"| auroc | {auroc:.4f} |" in card
    embedding_card = (tmp_path / "cards" / "tiny-feature-embeddings.md").read_text()
    assert embedding_card == (run_dir / "feature_embeddings" / "README.md").read_text() and embedding_card != card
    (tmp_path / "table.md").write_text("| arm | AUPRC |\n")  # a downstream table belongs to a pretraining run only
    refused = subprocess.run([sys.executable, str(PUBLISH), "--run_dir", str(run_dir),
                              "--evaluation", str(tmp_path / "table.md")],
                             capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert (refused.returncode != 0 and "is a fine-tuning run" in refused.stderr
            and not (run_dir / "evaluation.md").exists())


def test_bf16_mixed_precision_trains_like_full_precision(tmp_path, single_process_run):
    """The autocast path GPUs run, exercised on CPU: master weights stay fp32 and training ends where fp32 does."""
    output_dir = tmp_path / "bf16"
    run(TINY + ["--num_epochs", "2", "--mixed_precision", "bf16", "--output_dir", str(output_dir)])
    assert json.loads((output_dir / "run_info.json").read_text())["distributed"]["mixed_precision"] == "bf16"
    bf16, full = weights(output_dir), weights(single_process_run)
    assert all(tensor.dtype == torch.float32 for tensor in bf16.values())
    gamma = "medfuse.embeddings.value_fusion.gamma"  # initialised to ones: how far it moved is what training did
    drift, learned = (bf16[gamma] - full[gamma]).abs().mean().item(), (full[gamma] - 1).abs().mean().item()
    assert drift < 0.25 * learned  # bf16 rounding moves weights far less than training itself did
    result = json.loads((output_dir / "test_metrics.json").read_text())
    single_result = json.loads((single_process_run / "test_metrics.json").read_text())
    assert abs(result["test"]["auroc"]["value"] - single_result["test"]["auroc"]["value"]) < 0.05


def test_small_training_fraction_gets_at_least_min_steps(tmp_path):
    output_dir = tmp_path / "small"
    run(TINY + ["--train_fraction", "0.25", "--num_epochs", "1", "--min_steps", "4", "--checkpoint_every_epoch",
                "--output_dir", str(output_dir)])
    result = json.loads((output_dir / "test_metrics.json").read_text())
    assert result["steps"] == 4 and result["epochs"] == 4  # one 32-patient batch per epoch from ~45 patients
    validations = [row for row in read_metrics(output_dir / "logs" / "metrics.jsonl") if "validation_auprc" in row]
    assert len(validations) == 1  # validated once per num_epochs' worth of steps, not after every tiny epoch
    # yet checkpointed after every epoch, as asked (the newest two are kept)
    assert [path.name for path in sorted((output_dir / "checkpoints").iterdir())] == ["step_00000003", "step_00000004"]
    # the card sizes the cohort the run trained on, as the run and publish.py write it
    card = (output_dir / "model" / "README.md").read_text()
    trained = int(re.search(r"- train patients: (\d+)", card).group(1))
    assert 40 <= trained <= 55 and f"- test patients: {result['test_patients']}\n" in card
    (output_dir / "model" / "README.md").unlink()
    run(["--run_dir", str(output_dir)], recipe=PUBLISH)
    assert (output_dir / "model" / "README.md").read_text() == card


def test_a_run_stopped_by_max_steps_before_any_validation_still_tests_a_validated_model(tmp_path):
    """LP-FT's second stage reads the probe's `model/`, and a test must score what validation saw."""
    output_dir = tmp_path / "short"
    run(TINY + ["--max_steps", "1", "--output_dir", str(output_dir)])  # five steps to an epoch
    result = json.loads((output_dir / "test_metrics.json").read_text())
    assert result["steps"] == 1 and result["best_validation"]["epoch"] == 1
    validations = [row for row in read_metrics(output_dir / "logs" / "metrics.jsonl") if "validation_auprc" in row]
    assert len(validations) == 1 and (output_dir / "model" / "model.safetensors").exists()


def test_a_fresh_run_in_the_folder_of_an_earlier_one_is_refused_unless_asked_to_overwrite_it(single_process_run,
                                                                                              tmp_path):
    finetune = load_script("recipes/finetune.py")
    with pytest.raises(SystemExit, match=rf"{single_process_run} holds an earlier run's model/ and no checkpoint to "
                                         "resume: start afresh with --overwrite_output_dir"):
        finetune.main(TINY + ["--output_dir", str(single_process_run)])
    with pytest.raises(SystemExit, match="holds an earlier run's model/"):  # LP-FT: before its probe trains
        finetune.main(TINY + ["--output_dir", str(single_process_run), "--strategy", "lp-ft",
                              "--init_from", str(single_process_run / "model")])
    earlier = shutil.copytree(single_process_run, tmp_path / "run")  # two epochs
    with pytest.raises(SystemExit, match="give one"):
        finetune.main(TINY + ["--output_dir", str(earlier), "--overwrite_output_dir", "--resume_from_checkpoint",
                              "latest"])
    run(TINY + ["--num_epochs", "1", "--output_dir", str(earlier), "--overwrite_output_dir"])
    validations = [row for row in read_metrics(earlier / "logs" / "metrics.jsonl") if "validation_auprc" in row]
    assert json.loads((earlier / "test_metrics.json").read_text())["epochs"] == 1 and len(validations) == 1


def test_a_validation_split_of_one_class_is_refused_before_training():
    finetune = load_script("recipes/finetune.py")
    args = finetune.build_parser().parse_args(TINY)
    cohort = load_cohort_from_settings(vars(args))
    cohort.splits["validation"] = cohort.splits["validation"].filter(lambda died: died == 0,
                                                                     input_columns=cohort.label_column)
    with pytest.raises(SystemExit, match=r"the validation split's \d+ labelled patients are 0 positive"):
        training_splits(args, cohort)


def test_static_features_are_named_on_the_command_line_and_saved_as_ids(tmp_path):
    run(TINY + ["--train_fraction", "0.25", "--num_epochs", "1", "--static_features", "heart_rate",
                "--output_dir", str(tmp_path)])
    saved = MedFuseTokenizer.from_pretrained(tmp_path / "model")
    assert (json.loads((tmp_path / "model" / "config.json").read_text())["static_feature_ids"]
            == [saved.feature_vocabulary.id_of("heart_rate")])
    assert saved.pinned_features == ["heart_rate"]  # a long stay scored later keeps what the statics read
    with pytest.raises(SystemExit, match=r"--static_features: \['age'\] are not in the tokenizer's vocabulary"):
        starting_point.static_feature_ids(["heart_rate", "age"], MedFuseTokenizer.from_pretrained(tmp_path / "model"))


def test_gradient_accumulation_counts_optimizer_steps_not_batches(tmp_path, single_process_run):
    run(TINY + ["--batch_size", "16", "--gradient_accumulation_steps", "2", "--num_epochs", "2",
                "--output_dir", str(tmp_path)])
    accumulated = json.loads((tmp_path / "test_metrics.json").read_text())
    plain = json.loads((single_process_run / "test_metrics.json").read_text())  # batches of 32, 2 epochs
    assert accumulated["steps"] == plain["steps"] and accumulated["batches_by_process"] == [2 * plain["steps"]]


def test_training_subset_smaller_than_a_batch_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, str(RECIPE), *TINY, "--train_fraction", "0.1",
                             "--output_dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert (result.returncode != 0
            and "training needs at least --batch_size (32)" in result.stderr), result.stderr[-2000:]


def kill_once_checkpointed(command: list[str], checkpoint: Path) -> None:
    """Start a recipe and kill it (SIGKILL, as a preempted job dies) once `checkpoint` is complete."""
    process = subprocess.Popen(command, env=recipe_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not checkpoint.exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    """Dropout and event dropout included: Accelerate collates a batch ahead, so a checkpoint's global random state
    is a batch on from the step it saves, and its loaders draw from torch's as a pass starts or is skipped into."""
    args = TINY + ["--num_patients", "512", "--batch_size", "16", "--num_epochs", "3", "--checkpoint_every_steps", "5",
                   "--event_dropout", "0.2", "--hidden_dropout_prob", "0.1", "--classifier_dropout", "0.3"]
    uninterrupted = tmp_path / "uninterrupted"
    run(args + ["--output_dir", str(uninterrupted)])

    interrupted = tmp_path / "interrupted"
    kill_once_checkpointed([sys.executable, str(RECIPE), *args, "--output_dir", str(interrupted),
                            "--resume_from_checkpoint", "latest"],  # as the benchmarks start every run
                           interrupted / "checkpoints" / "step_00000010")  # mid-epoch: 25 batches per epoch
    assert not (interrupted / "test_metrics.json").exists()
    assert (interrupted / "split.json").exists()  # `latest` with nothing to resume is a start: its split recorded

    resumed = run(args + ["--output_dir", str(interrupted), "--resume_from_checkpoint", "latest"])
    resumed_line = next(line for line in resumed.stdout.splitlines() if line.startswith("resumed from"))
    assert int(resumed_line.rsplit("step ", 1)[1]) >= 10  # it continued from where the killed run had got to
    expected = weights(uninterrupted)
    for name, tensor in weights(interrupted).items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-6, rtol=1e-5)


def with_a_feature_the_base_lacks(patients: datasets.Dataset) -> datasets.Dataset:
    """The synthetic stays, each with one more event: a `bedside_score`, which `tiny_base` never saw."""
    return patients.map(lambda patient: {"feature": [*patient["feature"], "bedside_score"],
                                         "value": [*patient["value"], 3.0], "time": [*patient["time"], 1.0]})


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A pretrained base (two forecasting steps) for the fine-tuning strategies to start from."""
    base = tmp_path_factory.mktemp("base")
    run(["--dataset", "synthetic", "--num_patients", "256", "--hidden_size", "32", "--value_embedding_size", "8",
         "--intermediate_size", "32", "--num_attention_heads", "2", "--batch_size", "32", "--max_steps", "2",
         "--output_dir", str(base)], recipe=ROOT / "recipes" / "pretrain.py")
    return base


def test_a_probe_changes_only_the_head_and_lp_ft_fine_tunes_everything_from_the_probes_head(tmp_path, tiny_base):
    base = tiny_base
    output = tmp_path / "lp-ft"
    with_dropout = ["--classifier_dropout", "0.3", "--event_dropout", "0.2", "--checkpoint_every_epoch"]
    run(TINY + ["--init_from", str(base / "model"), "--strategy", "lp-ft", "--num_epochs", "2", *with_dropout,
                "--output_dir", str(output)])
    pretrained = load_file(base / "model" / "model.safetensors")
    probe = load_file(output / "probe" / "model" / "model.safetensors")
    tuned = load_file(sorted((output / "checkpoints").glob("step_*"))[-1] / "model.safetensors")  # the last epoch
    encoder = [name for name in probe if name.startswith("medfuse.")]
    head = [name for name in probe if name.startswith("classifier.")]
    assert encoder and head
    assert all(torch.equal(probe[name], pretrained[name]) for name in encoder)  # frozen while probing
    assert any(not torch.equal(tuned[name], pretrained[name]) for name in encoder)  # then fine-tuned
    assert any(not torch.equal(tuned[name], probe[name]) for name in head)
    settings = json.loads((output / "run_info.json").read_text())["config"]
    assert (settings["init_from"], settings["strategy"]) == (str(output / "probe" / "model"), "full")
    assert settings["learning_rate"] == pytest.approx(3e-4)  # a tenth of the probe's 3e-3
    finetune = load_script("recipes/finetune.py")  # the second stage starts from the probe's head
    args = finetune.build_parser().parse_args(TINY + ["--init_from", str(output / "probe" / "model")])
    cohort = load_cohort_from_settings(vars(args))
    tokenizer, matching = starting_point.build_tokenizer(args, cohort.splits, cohort)
    start = starting_point.build_model(args, tokenizer, 0.5, matching)[0].state_dict()
    assert all(torch.equal(start[name], probe[name]) for name in head)
    alone = tmp_path / "probe"  # LP-FT's first stage is the probe alone, dropout draws included: label_efficiency.py
    # takes one for the other
    run(TINY + ["--init_from", str(base / "model"), "--strategy", "probe", "--num_epochs", "2", *with_dropout,
                "--output_dir", str(alone)])
    alone_weights = load_file(alone / "model" / "model.safetensors")
    assert all(torch.equal(alone_weights[name], tensor) for name, tensor in probe.items())


def test_lp_ft_reads_the_cohort_once_for_both_stages(tmp_path, tiny_base, monkeypatch, capsys):
    """A hospital's export is read anew at every load, minutes at scale: the probe and the full stage share one."""
    finetune = load_script("recipes/finetune.py")
    loads = []

    def counted(settings):
        loads.append(settings["strategy"])
        return load_cohort_from_settings(settings)

    monkeypatch.setattr(finetune, "load_cohort_from_settings", counted)
    output = tmp_path / "lp-ft"
    finetune.main(TINY + ["--init_from", str(tiny_base / "model"), "--strategy", "lp-ft", "--probe_epochs", "1",
                          "--num_epochs", "1", "--output_dir", str(output)])
    assert loads == ["lp-ft"]
    probe = json.loads((output / "probe" / "test_metrics.json").read_text())["best_validation"]["auprc"]
    assert f"LP-FT: the probe's validation auprc is {probe:.4f}; now everything is fine-tuned from it at 0.0003" in (
        capsys.readouterr().out)


def test_lp_ft_keeps_the_probe_unless_fine_tuning_beats_it_on_validation(tmp_path, tiny_base):
    """The probe is the full stage's epoch 0. At a learning rate of 0 no epoch can beat it (its weights, and so its
    validation figure, stay the probe's), and the probe is what the run keeps, tests and publishes."""
    output = tmp_path / "lp-ft"
    run(TINY + ["--init_from", str(tiny_base / "model"), "--strategy", "lp-ft", "--probe_epochs", "2",
                "--num_epochs", "1", "--lpft_learning_rate_scale", "0", "--output_dir", str(output)])
    probe, kept = (json.loads((folder / "test_metrics.json").read_text()) for folder in (output / "probe", output))
    assert kept["best_validation"] == {"auprc": probe["best_validation"]["auprc"], "epoch": 0}
    assert kept["test"]["auprc"]["value"] == probe["test"]["auprc"]["value"]
    probe_weights = load_file(output / "probe" / "model" / "model.safetensors")
    assert all(torch.equal(tensor, probe_weights[name]) for name, tensor in weights(output).items())


def test_lp_ft_keeps_a_probe_that_left_new_features_out_as_its_own_run_tested_it(tmp_path, tiny_base):
    """A cohort with a feature the base lacks: the probe leaves it out, the second stage adds it, so the probe is a
    model the second stage cannot hold. Kept (here no epoch runs to beat it), it is the run's model and figures."""
    finetune = load_script("recipes/finetune.py")
    cohort = tmp_path / "cohort"
    for name, split in load_cohort_from_settings(vars(finetune.build_parser().parse_args(TINY))).splits.items():
        with_a_feature_the_base_lacks(split).rename_column("record_id", "patient_id").to_parquet(
            cohort / f"{name}.parquet")
    output = tmp_path / "lp-ft"
    run(["--dataset", "parquet", "--data_dir", str(cohort), "--label_column", "label", *TINY[4:],
         "--init_from", str(tiny_base / "model"), "--strategy", "lp-ft", "--probe_epochs", "2", "--num_epochs", "0",
         "--assume_model_units", "--output_dir", str(output)])  # Parquet keeps no units
    probe, kept = (json.loads((folder / "test_metrics.json").read_text()) for folder in (output / "probe", output))
    assert kept["best_validation"] == {"auprc": probe["best_validation"]["auprc"], "epoch": 0}
    assert kept["test"] == probe["test"] and kept["transferred_features"]["new_at_target"] == 1
    assert kept["kept_start"] == "probe/model"  # the report is released with the run: no site path in it
    assert (output / "test_predictions.csv").read_text() == (output / "probe" / "test_predictions.csv").read_text()
    probe_weights = load_file(output / "probe" / "model" / "model.safetensors")
    assert all(torch.equal(tensor, probe_weights[name]) for name, tensor in weights(output).items())
    assert "bedside_score" not in MedFuseTokenizer.from_pretrained(output / "model").feature_vocabulary
    assert "bedside_score" in MedFuseTokenizer.from_pretrained(output / "tokenizer").feature_vocabulary


def test_a_finished_probe_of_another_start_is_not_taken_as_lp_fts_first_stage(tmp_path, tiny_base):
    """LP-FT reuses a finished probe. Rerun from another checkpoint into the same folder, or on another split, it would
    fine-tune from the old start's probe and report it as the new one's."""
    output = tmp_path / "lp-ft"
    flags = ["--strategy", "lp-ft", "--probe_epochs", "1", "--num_epochs", "1", "--output_dir", str(output)]
    run(TINY + ["--init_from", str(tiny_base / "model"), *flags])
    result = subprocess.run([sys.executable, str(RECIPE), *TINY, "--init_from", str(output / "model"), *flags],
                            capture_output=True, text=True, timeout=300, cwd=ROOT, env=recipe_env())
    assert result.returncode != 0
    assert f"--init_from was '{tiny_base / 'model'}', now '{output / 'model'}'" in result.stderr
    # a probe from before --new_features, which left the new features out, is no probe that learns them
    info = output / "probe" / "run_info.json"
    recorded = json.loads(info.read_text())
    del recorded["config"]["new_features"]
    info.write_text(json.dumps(recorded))
    result = subprocess.run([sys.executable, str(RECIPE), *TINY, "--init_from", str(tiny_base / "model"), *flags,
                             "--new_features", "learn"], capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env=recipe_env())
    assert result.returncode != 0 and "--new_features was 'leave_out', now 'learn'" in result.stderr
    # nor is a probe trained on other patients than the data's split gives now
    split = json.loads((output / "probe" / "split.json").read_text())
    split["validation"].append(split["train"].pop())
    (output / "probe" / "split.json").write_text(json.dumps(split))
    result = subprocess.run([sys.executable, str(RECIPE), *TINY, "--init_from", str(tiny_base / "model"), *flags,
                             "--resume_from_checkpoint", "latest"], capture_output=True, text=True, timeout=300,
                            cwd=ROOT, env=recipe_env())
    assert result.returncode != 0
    assert "the full stage would start from a probe trained on other patients" in result.stderr


def test_a_models_tokenizer_records_its_cohorts_window_a_long_format_anchor_alone_too(tmp_path, monkeypatch):
    """Hours counted from another time zero shift every time embedding: predict.py must follow a model's anchor
    though training set no --max_hours or --end_column, and a P12 model's 48 hours from ICU admission, which its
    files hold no column of."""
    patients = [f"p{number}" for number in range(40)]
    pd.DataFrame({"patient_id": patients, "time": 1, "feature": "sodium", "value": 140}).to_csv(
        tmp_path / "events.csv", index=False)
    pd.DataFrame({"patient_id": patients, "INTIME": 0, "died": [number % 2 for number in range(40)]}).to_csv(
        tmp_path / "labels.csv", index=False)
    anchored = load_cohort_from_settings({"dataset": "long-format", "events": [str(tmp_path / "events.csv")],
                                          "labels": str(tmp_path / "labels.csv"), "label_column": "died",
                                          "anchor_column": "INTIME"})
    p12 = load_cohort_from_settings({"dataset": "p12-sample"})
    assert anchored.window == {"anchor_column": "INTIME"}
    assert p12.window == {"time_zero": "ICU admission", "max_hours": 48.0}
    stays = datasets.Dataset.from_dict({"patient_id": patients, "sepsis": [number % 2 for number in range(40)]})
    monkeypatch.setattr(cohorts, "load_p19_task", lambda root, protocol, hospital: stays)
    for protocol, window in (("first-24h", {"time_zero": "ICU admission", "max_hours": 24.0}),
                             ("whole-stay", {"time_zero": "ICU admission"})):  # P19's ICULOS, every hour of it
        assert load_cohort_from_settings({"dataset": "p19", "data_dir": "p19", "protocol": protocol}).window == window
    args = load_script("recipes/finetune.py").build_parser().parse_args(TINY[2:])
    for cohort in (anchored, p12):
        tokenizer, _ = starting_point.build_tokenizer(args, cohort.splits, cohort)
        tokenizer.save_pretrained(tmp_path / "tokenizer")
        assert MedFuseTokenizer.from_pretrained(tmp_path / "tokenizer").event_window == cohort.window


def test_a_checkpoints_features_keep_the_normalisation_its_weights_learnt_on(tiny_base):
    """Quantile values asked of a robust-z-score base: the base's features stay z-scored (its weights read them so),
    and the run counts them rather than appear to have done what it was asked."""
    finetune = load_script("recipes/finetune.py")
    args = finetune.build_parser().parse_args(TINY + ["--init_from", str(tiny_base / "model"),
                                                      "--value_normalization", "quantile"])
    cohort = load_cohort_from_settings(vars(args))
    tokenizer, matching = starting_point.build_tokenizer(args, cohort.splits, cohort)
    numeric = [spec for spec in tokenizer.feature_vocabulary if spec.statistics is not None]
    assert numeric and {spec.statistics.normalization for spec in numeric} == {"robust_zscore"}
    assert matching["kept_checkpoint_normalization"] == {"robust_zscore": len(numeric)}
    args.value_normalization = "robust_zscore"
    assert starting_point.build_tokenizer(args, cohort.splits, cohort)[1]["kept_checkpoint_normalization"] == {}


def test_a_table_without_units_starts_from_a_checkpoint_only_when_its_owner_vouches_for_them(tiny_base, tmp_path,
                                                                                               capsys):
    """The checkpoint normalises sodium with statistics of mmol/L values: a hospital's table that gives no unit
    cannot be checked against them, so starting from it needs the owner's word; a unit column is checked instead."""
    finetune = load_script("recipes/finetune.py")
    args = finetune.build_parser().parse_args(TINY + ["--init_from", str(tiny_base / "model")])
    cohort = load_cohort_from_settings(vars(args))
    base_units = {spec.name: spec.unit for spec in MedFuseTokenizer.from_pretrained(tiny_base / "model")
                  .feature_vocabulary if spec.unit}
    assert "sodium" in base_units
    with pytest.raises(ValueError, match=r"--init_from .* gives no unit for .*sodium \(mmol/L\)"):
        starting_point.build_tokenizer(args, cohort.splits, replace(cohort, units={}))  # read with no unit column
    assert starting_point.build_tokenizer(args, cohort.splits, replace(cohort, units=base_units))[1][
        "units_assumed"] == {}
    assert starting_point.build_tokenizer(args, cohort.splits, cohort)[1]["units_assumed"] == {}  # the catalogue's
    args.assume_model_units = True
    assert starting_point.build_tokenizer(args, cohort.splits, replace(cohort, units={}))[1][
        "units_assumed"] == base_units
    (tmp_path / "events.csv").write_text("patient_id,time,feature,value\np1,1,sodium,140\n")
    with pytest.raises(SystemExit):  # a model trained afresh has no units to assume
        finetune.main([flag for flag in TINY if flag not in ("--dataset", "synthetic", "--num_patients", "256")]
                      + ["--dataset", "long-format", "--events", str(tmp_path / "events.csv"), "--assume_model_units"])
    assert "--assume_model_units reads a table in the units of the checkpoint" in capsys.readouterr().err


def test_a_checkpoint_saved_in_bf16_is_fine_tuned_with_fp32_weights(tiny_base, tmp_path):
    """transformers loads a bf16 base as bf16, where AdamW's small steps would round away; the weights train in fp32
    (low precision is --mixed_precision's autocast), starting from the checkpoint's own values."""
    shutil.copytree(tiny_base / "model", tmp_path / "bf16")
    saved = load_file(tiny_base / "model" / "model.safetensors")
    bf16 = {name: tensor.to(torch.bfloat16) for name, tensor in saved.items()}
    save_file(bf16, tmp_path / "bf16" / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    (tmp_path / "bf16" / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))  # as saved from bf16
    finetune = load_script("recipes/finetune.py")
    args = finetune.build_parser().parse_args(TINY + ["--init_from", str(tmp_path / "bf16")])
    cohort = load_cohort_from_settings(vars(args))
    tokenizer, matching = starting_point.build_tokenizer(args, cohort.splits, cohort)
    model = starting_point.build_model(args, tokenizer, 0.5, matching)[0]
    assert {parameter.dtype for parameter in model.parameters()} == {torch.float32}
    loaded = model.state_dict()
    encoder = [name for name in bf16 if name.startswith("medfuse.")]
    assert encoder and all(torch.equal(loaded[name], bf16[name].float()) for name in encoder)


def test_a_probe_leaves_out_the_features_its_frozen_encoder_never_learnt_and_full_fine_tuning_adds_them(tiny_base):
    finetune = load_script("recipes/finetune.py")
    args = finetune.build_parser().parse_args(TINY + ["--init_from", str(tiny_base / "model"), "--strategy", "probe"])
    cohort = load_cohort_from_settings(vars(args))
    splits = {**cohort.splits, "train": with_a_feature_the_base_lacks(cohort.splits["train"])}
    probed, matching = starting_point.build_tokenizer(args, splits, cohort)
    assert matching["new_features"] == ["bedside_score"] and "bedside_score" not in probed.feature_vocabulary
    assert len(probed.feature_vocabulary) == matching["checkpoint_feature_ids"]
    args.strategy = "full"
    assert "bedside_score" in starting_point.build_tokenizer(args, splits, cohort)[0].feature_vocabulary


def test_a_probe_that_learns_new_features_moves_only_their_rows_of_the_frozen_encoder(tiny_base):
    """`--new_features learn`: a hospital's feature the base lacks gets its own rows of the encoder's tables, and
    only they and the head train; what the base learnt stays as loaded under AdamW's weight decay."""
    finetune = load_script("recipes/finetune.py")
    args = finetune.build_parser().parse_args(TINY + ["--init_from", str(tiny_base / "model"), "--strategy", "probe",
                                                      "--new_features", "learn", "--weight_decay", "0.1"])
    cohort = load_cohort_from_settings(vars(args))
    train = with_a_feature_the_base_lacks(cohort.splits["train"])
    tokenizer, matching = starting_point.build_tokenizer(args, {**cohort.splits, "train": train}, cohort)
    assert "bedside_score" in tokenizer.feature_vocabulary
    assert matching["new_features_are"] == "learning their own rows of the frozen encoder"
    model, _ = starting_point.model_for(args, tokenizer, 0.5, matching, None, Accelerator(cpu=True))
    new_id = tokenizer.feature_vocabulary.id_of("bedside_score")
    learning = {name for name, parameter in model.medfuse.named_parameters() if parameter.requires_grad}
    assert "embeddings.feature_embeddings.weight" in learning
    tables = {name: len(parameter) for name, parameter in model.medfuse.named_parameters() if name in learning}
    assert set(tables.values()) == {new_id + 1}  # only the tables the new feature grew
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    optimizer = torch.optim.AdamW([parameter for parameter in model.parameters() if parameter.requires_grad],
                                  lr=1e-2, weight_decay=0.1)
    batch = MedFuseDataCollator(tokenizer, label_column="label")([train[index] for index in range(32)])
    for _ in range(3):
        model(**batch).loss.backward()
        gradient = model.medfuse.embeddings.feature_embeddings.weight.grad
        assert gradient[new_id].abs().sum() > 0 and not gradient[:new_id].any()  # the new row learns from the loss
        optimizer.step()
        optimizer.zero_grad()
    after = model.state_dict()
    encoder = [name for name in before if name.startswith("medfuse.")]
    assert all(torch.equal(after[name][:new_id], before[name][:new_id]) for name in encoder)  # as loaded
    assert all(torch.equal(after[name], before[name]) for name in encoder if name.removeprefix("medfuse.")
               not in learning)
    assert not torch.equal(after["medfuse.embeddings.feature_embeddings.weight"][new_id],
                           before["medfuse.embeddings.feature_embeddings.weight"][new_id])
    assert any(not torch.equal(after[name], before[name]) for name in before if name.startswith("classifier."))


def test_a_probe_refuses_encoder_parts_its_checkpoint_never_trained(tiny_base, tmp_path):
    """Per-feature pooling on a mean-pooled base: frozen, the new pooler would stay random; fine-tuned, it learns."""
    finetune = load_script("recipes/finetune.py")
    for strategy in ("probe", "lp-ft", "full"):
        args = finetune.build_parser().parse_args(TINY + ["--init_from", str(tiny_base / "model"), "--strategy",
                                                          strategy, "--pooling", "per_feature"])
        cohort = load_cohort_from_settings(vars(args))
        tokenizer, matching = starting_point.build_tokenizer(args, cohort.splits, cohort)
        if strategy == "full":
            assert starting_point.build_model(args, tokenizer, 0.5, matching)[0].config.pooling == "per_feature"
            continue
        with pytest.raises(SystemExit, match=f"--strategy {strategy} freezes the encoder .* would stay random"):
            starting_point.build_model(args, tokenizer, 0.5, matching)


BALANCED_AT_ONE_IN_FIVE = [0.625, 2.5]  # each class half of the loss, or of the batches, at a 20 % rate
OFFSETS = [-math.log(weight) for weight in BALANCED_AT_ONE_IN_FIVE]


@pytest.mark.parametrize("sampling, loss, asked, weights, offsets", [
    ("length_grouped", "cross_entropy", "auto", BALANCED_AT_ONE_IN_FIVE, OFFSETS),
    ("balanced", "cross_entropy", "auto", None, OFFSETS),
    ("length_grouped", "focal", "auto", None, None),
    ("length_grouped", "cross_entropy", "none", None, None),
    ("balanced", "cross_entropy", "balanced", "--sampling balanced already balances the classes", None),
    ("length_grouped", "focal", "balanced", "focal loss .* already balances the classes", None),
])
def test_the_classes_are_balanced_once_and_the_risks_take_it_back_off(sampling, loss, asked, weights, offsets):
    """Balanced batches, or focal loss's α, and inverse-frequency weights on top would count a death about six times
    at P12's rate. `auto` weights the loss only where nothing else balances the classes; either way of balancing
    gets the logit offsets that bring the risks back to the cohort's prevalence."""
    args = argparse.Namespace(sampling=sampling, class_weighting=asked)
    config = MedFuseConfig(vocab_size=4, classification_loss=loss)
    if isinstance(weights, str):
        with pytest.raises(SystemExit, match=weights):
            starting_point.weigh_the_classes(config, args, 0.2)
        return
    starting_point.weigh_the_classes(config, args, 0.2)
    assert config.class_weights == (pytest.approx(weights) if weights else None)
    assert config.logit_offsets == (pytest.approx(offsets) if offsets else None)


@pytest.mark.parametrize("flags, message", [
    (["--init_from", "base", "--preset", "paper_p12"], "--preset paper_p12 builds a model afresh"),
    (["--freeze_transferred"], "--freeze_transferred keeps what --init_embeddings_from loads"),
    (["--init_from", "base", "--match_by", "name"], "--match_by name says how --init_embeddings_from matches"),
    (["--init_from", "base", "--new_features", "learn"], "--new_features says what a probe"),
    (["--hospital", "A"], "--dataset synthetic does not read --hospital;"),
    (["--time_zone", "Europe/Berlin", "--protocol", "random"], "does not read --protocol, --time_zone;"),
])
def test_flags_that_would_be_ignored_are_refused(flags, message, capsys):
    finetune = load_script("recipes/finetune.py")
    with pytest.raises(SystemExit):
        finetune.main(TINY + flags)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, message", [
    ("patience", "0", "argument --patience: 0: give 1 or more"),  # would test the untrained model as a result
    ("logging_steps", "0", "argument --logging_steps: 0: give 1 or more"),  # would divide by zero at step one
    ("max_steps", "-1", "argument --max_steps: -1: give 0 or more"),
    ("bootstrap_resamples", "0", "argument --bootstrap_resamples: 0: give 1 or more"),  # an IndexError after testing
])
def test_counts_that_would_train_nothing_are_refused_from_the_command_line_and_a_config(flag, value, message, tmp_path,
                                                                                         capsys):
    finetune = load_script("recipes/finetune.py")
    with pytest.raises(SystemExit):
        finetune.main(TINY + [f"--{flag}", value])
    assert message in capsys.readouterr().err
    config = tmp_path / "run.yaml"
    config.write_text(f"{flag}: {value}\n")  # YAML's int, which argparse would take unchecked
    with pytest.raises(SystemExit):
        finetune.main(TINY + ["--config", str(config)])
    assert f"--config: {config}: {flag}: {value}: give" in capsys.readouterr().err


def test_a_config_may_give_a_mapping_as_yaml_and_no_epochs_with_min_steps_is_no_division_by_zero(tmp_path):
    finetune = load_script("recipes/finetune.py")
    (tmp_path / "events.csv").write_text("patient_id,time,feature,value\np1,1,hr,80\n")
    (tmp_path / "run.yaml").write_text("label_map: {alive: 0, dead: 1}\n")  # what --label_map alive=0,dead=1 reads
    flags = ["--dataset", "long-format", "--events", str(tmp_path / "events.csv"), "--config"]
    args = parse_with_config(finetune.build_parser(), flags + [str(tmp_path / "run.yaml")])
    assert args.label_map == {"alive": 0, "dead": 1}
    budget = argparse.Namespace(num_epochs=0, min_steps=4)  # --num_epochs 0: the start scored as it is
    assert finetune.epoch_budget(budget, 5, Accelerator(cpu=True)) == (0, 1)


def test_a_config_key_the_dataset_does_not_read_is_refused_and_run_records_keep_only_what_it_reads(tmp_path, capsys):
    """A P19 config reused for a hospital's export would otherwise carry `hospital: A` along unread."""
    from medfuse_hf.training.checkpointing import recorded_settings

    finetune = load_script("recipes/finetune.py")
    (config := tmp_path / "p19.yaml").write_text("hospital: A\n")
    with pytest.raises(SystemExit):
        finetune.main(TINY + ["--config", str(config)])
    assert "--dataset synthetic does not read --hospital;" in capsys.readouterr().err
    settings = recorded_settings(argparse.Namespace(dataset="long-format", num_patients=512, events=["a.csv"],
                                                    time_zone=None, hospital=None, seed=3))
    assert settings == {"dataset": "long-format", "events": ["a.csv"], "time_zone": None, "seed": 3}


def test_a_mistyped_starting_point_is_refused_as_the_flags_are_read(tiny_base, capsys):
    """Not after the cohort has loaded, with transformers' "Can't load feature extractor" traceback."""
    finetune = load_script("recipes/finetune.py")
    for given, message in [(tiny_base / "modle", "no such folder"),
                           (tiny_base, f"without config.json or preprocessor_config.json; did you mean "
                                       f"{tiny_base / 'model'}?")]:
        with pytest.raises(SystemExit):
            finetune.build_parser().parse_args(TINY + ["--init_from", str(given)])
        assert f"--init_from: {given}: " in (error := capsys.readouterr().err) and message in error
    assert finetune.build_parser().parse_args(TINY + ["--init_from", "hospital/base"]).init_from == "hospital/base"


def test_balanced_sampling_draws_deaths_as_often_as_survivals():
    """`--sampling balanced` weights each patient by the inverse of its class's share: with 1 death in 10, about half
    of every drawn batch still dies, where length-grouped batches keep the split's share."""
    finetune = load_script("recipes/finetune.py")
    rows = make_sodium_cohort(400, seed=0)
    for index, row in enumerate(rows):
        row["label"] = int(index % 10 == 0)
    train = datasets.Dataset.from_list(rows)
    tokenizer = fit_tokenizer(train, 64)
    share = {}
    for sampling in ("balanced", "length_grouped"):
        args = finetune.build_parser().parse_args(TINY + ["--sampling", sampling])
        loader, reseed = finetune.training_loader(args, train, "label", 0.1, tokenizer)
        reseed(0)
        labels = torch.cat([batch["labels"] for batch in loader])
        share[sampling] = labels.float().mean().item()
    assert 0.4 < share["balanced"] < 0.6 and share["length_grouped"] == pytest.approx(0.1, abs=0.02)


def test_a_patient_drawn_twice_in_an_epoch_loses_other_events_each_time_and_a_rerun_the_same():
    """Balanced sampling draws a death several times an epoch: with event dropout, each copy is another augmented
    stay (one copy repeated would weigh the same events twice), and the epoch's batches are still a function of
    (seed, epoch) alone, so a resumed run sees them again."""
    finetune = load_script("recipes/finetune.py")
    rows = make_sodium_cohort(200, seed=0)
    for index, row in enumerate(rows):
        row["label"] = int(index % 10 == 0)
    train = datasets.Dataset.from_list(rows)
    args = finetune.build_parser().parse_args(TINY + ["--sampling", "balanced", "--event_dropout", "0.5"])
    loader, reseed = finetune.training_loader(args, train, "label", 0.1, fit_tokenizer(train, 64))

    def copies() -> dict[int, list[tuple]]:
        reseed(0)
        drawn = {}
        for batch in loader:
            for row, features, mask in zip(batch["row"].tolist(), batch["feature_ids"], batch["attention_mask"]):
                drawn.setdefault(row, []).append(tuple(features[mask.bool()].tolist()))
        return drawn

    drawn = copies()
    repeated = [events for events in drawn.values() if len(events) > 1]
    differing = [len(set(events)) > 1 for events in repeated]  # a stay of two events may lose the same one twice
    assert len(repeated) > 10 and sum(differing) >= 0.9 * len(repeated)
    assert copies() == drawn
    # Accelerate splits each global batch across processes, as the recipe asks it to
    halves = prepare_data_loader(loader, num_processes=2, process_index=0, split_batches=True, put_on_device=False)
    assert {len(batch["row"]) for batch in halves} == {args.batch_size // 2}


def test_probing_needs_a_checkpoint():
    result = subprocess.run([sys.executable, str(RECIPE), "--strategy", "probe"], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 2 and "--strategy probe starts from a checkpoint: give --init_from" in result.stderr


def test_an_exponential_moving_average_is_what_is_validated_and_kept(tmp_path):
    """With a decay of 0 the average is the last weights, so the run keeps what a run without averaging keeps; a
    decay of 0.9 keeps other weights."""
    kept = {}
    for name, flags in (("plain", []), ("ema0", ["--weight_averaging", "ema", "--ema_decay", "0"]),
                        ("ema9", ["--weight_averaging", "ema", "--ema_decay", "0.9"])):
        run(TINY + ["--num_epochs", "2", "--output_dir", str(tmp_path / name), *flags])
        kept[name] = load_file(tmp_path / name / "model" / "model.safetensors")
    assert all(torch.equal(kept["ema0"][key], kept["plain"][key]) for key in kept["plain"])
    assert any(not torch.equal(kept["ema9"][key], kept["plain"][key]) for key in kept["plain"])


def test_a_run_stopped_mid_epoch_resumes_its_weight_average_too(tmp_path):
    """The average is restored with the rest of the checkpoint: restarted from the weights instead, it would
    validate and keep other weights than the uninterrupted run."""
    args = TINY + ["--num_epochs", "2", "--weight_averaging", "ema", "--ema_decay", "0.9",
                   "--checkpoint_every_steps", "4"]
    run(args + ["--output_dir", str(tmp_path / "uninterrupted")])
    run(args + ["--max_steps", "4", "--output_dir", str(tmp_path / "interrupted")])  # stops mid-epoch, checkpointed
    resumed = run(args + ["--output_dir", str(tmp_path / "interrupted"), "--resume_from_checkpoint", "latest"])
    assert "resumed from" in resumed.stdout and "step 4" in resumed.stdout
    expected = weights(tmp_path / "uninterrupted")
    for name, tensor in weights(tmp_path / "interrupted").items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-6, rtol=1e-5)


def test_a_run_is_compared_with_trees_on_its_own_test_patients(single_process_run, tmp_path, monkeypatch):
    run_dir = Path(shutil.copytree(single_process_run, tmp_path / "run"))  # its folder and card gain a comparison
    compare = ROOT / "recipes" / "compare_with_trees.py"
    run(["--run_dir", str(run_dir), "--bootstrap_resamples", "50"], recipe=compare)
    assert set(json.loads((run_dir / "comparison_with_trees.json").read_text())["trees"]) == {"gbm"}
    # again, with a frozen checkpoint's representation as extra columns: the second comparison replaces the first
    run(["--run_dir", str(run_dir), "--bootstrap_resamples", "50", "--with_representation_of",
         str(run_dir / "model")], recipe=compare)
    result = json.loads((run_dir / "comparison_with_trees.json").read_text())
    assert result["test_patients"] == json.loads((run_dir / "test_metrics.json").read_text())["test_patients"]
    assert set(result["trees"]) == {"gbm", "gbm_with_representation"}
    for tree, metric in product(result["trees"].values(), ("auroc", "auprc")):
        gap = tree["medfuse_minus"][metric]
        assert gap["value"] == pytest.approx(result["medfuse"][metric] - tree[metric])
        assert gap["low"] <= gap["value"] <= gap["high"]
    card = (run_dir / "model" / "README.md").read_text()
    assert card.count("## Compared with trees on this cohort") == 1
    assert "| MedFuse − GBM on summaries |" in card and "| MedFuse − GBM on summaries + representation |" in card
    assert result["gbm_grid"] == {"name": "standard", "settings": 16} and "chosen among 16 settings" in card
    monkeypatch.setattr(summary_baseline, "GBM_MAX_ITERATIONS", 100)  # 54 settings: short, for the suite's time
    standard, wide = (load_script("recipes/compare_with_trees.py").comparison(run_dir, num_resamples=50, gbm_grid=grid)
                      for grid in ("standard", "wide"))
    assert wide["gbm_grid"] == {"name": "wide", "settings": 54}
    # the wide grid holds the standard one, so its choice is never worse on validation
    assert wide["trees"]["gbm"]["validation_auprc"] >= standard["trees"]["gbm"]["validation_auprc"]
    # a checkpoint whose creatinine statistics are of µmol/L values would read the cohort's mg/dL 88 times too low
    in_umol = creatinine_in_umol(run_dir / "model", tmp_path / "umol")
    with pytest.raises(ValueError, match=r"\(--with_representation_of .*umol\): feature 'creatinine' is in 'mg/dL', "
                                         r"but the model's vocabulary has it in 'umol/L'"):
        load_script("recipes/compare_with_trees.py").comparison(run_dir, num_resamples=50, representation_of=in_umol)
    # the data now splits otherwise than when the run trained (one patient moved): the trees would see others
    recorded = json.loads((run_dir / "split.json").read_text())
    recorded["validation"].append(recorded["train"].pop())
    (run_dir / "split.json").write_text(json.dumps(recorded))
    with pytest.raises(SystemExit, match=r"another split of synthetic .* train: 1, validation: 1\); the trees would"):
        load_script("recipes/compare_with_trees.py").comparison(run_dir, num_resamples=50)


@pytest.mark.parametrize("recipe", ["recipes/compare_with_trees.py", "recipes/publish.py"])
def test_a_run_dir_that_holds_no_run_is_refused_naming_it(tmp_path, monkeypatch, recipe):
    """A typo'd or unfinished --run_dir: one line saying what is missing, not a traceback from json or pathlib."""
    (tmp_path / "not-a-run").mkdir()
    monkeypatch.setattr(sys, "argv", [recipe, "--run_dir", str(tmp_path / "not-a-run")])
    with pytest.raises(SystemExit, match=r"not-a-run holds no recipe run \(no run_info.json\)"):
        load_script(recipe).main()


def test_a_stay_with_none_of_the_checkpoints_features_has_a_missing_representation(single_process_run):
    compare = load_script("recipes/compare_with_trees.py")
    stays = datasets.Dataset.from_list([
        {"feature": ["sodium", "sodium"], "value": [140.0, 150.0], "time": [1.0, 2.0]},
        {"feature": ["troponin_x"], "value": [0.2], "time": [1.0]},
    ])
    columns = compare.representation_columns(single_process_run / "model", {"test": stays}, max_events=1024)["test"]
    assert columns.shape == (2, 32) and list(columns.columns[:2]) == ["representation_0", "representation_1"]
    assert columns.iloc[0].notna().all() and columns.iloc[1].isna().all()


