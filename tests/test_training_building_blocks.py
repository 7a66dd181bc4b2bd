import argparse
import inspect
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from sklearn.metrics import roc_auc_score
from test_recipes_finetune import free_port

from medfuse_hf import MedFuseModel
from medfuse_hf.data import MedFuseDataCollator
from medfuse_hf.training import (
    CorruptCheckpointError,
    binary_metrics,
    bootstrap_intervals,
    load_checkpoint,
    loop,
    resolve_checkpoint,
    save_checkpoint,
)
from medfuse_hf.training.frozen_encoder import memoise_pooled_outputs
from medfuse_hf.training.publishing import readable
from medfuse_hf.training.recipe_config import (
    ENCODER_FIELDS,
    HEAD_FIELDS,
    add_model_arguments,
    add_training_arguments,
    model_overrides,
    parse_with_config,
)


def test_binary_metrics_on_a_known_case():
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.6, 0.7, 0.3])
    metrics = binary_metrics(labels, scores)
    assert metrics["auroc"] == pytest.approx(4 / 6)
    assert metrics["accuracy"] == pytest.approx(3 / 5)  # predicted [0, 0, 1, 1, 0]
    assert metrics["min_recall_precision"] == pytest.approx(0.5)  # recall 1/2, precision 1/2
    assert metrics["brier"] == pytest.approx(np.mean((scores - labels) ** 2))
    with pytest.raises(ValueError, match="both classes"):
        binary_metrics(np.zeros(3), np.ones(3) * 0.5)


def test_paired_bootstrap_gap_is_zero_for_one_model_and_clear_for_a_better_one():
    from medfuse_hf.training.metrics import paired_bootstrap_difference

    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.2).astype(int)
    noisy = labels + rng.normal(0, 1.0, 400)
    sharp = labels + rng.normal(0, 0.3, 400)
    assert (paired_bootstrap_difference(labels, noisy, noisy, num_resamples=100)
            == {"value": 0.0, "low": 0.0, "high": 0.0})
    gap = paired_bootstrap_difference(labels, sharp, noisy, "auroc", num_resamples=200)
    assert 0 < gap["low"] < gap["value"] < gap["high"]
    assert gap["value"] == pytest.approx(roc_auc_score(labels, sharp) - roc_auc_score(labels, noisy))


def test_bootstrap_intervals_bracket_the_estimate_and_are_seeded():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.clip(labels * 0.3 + rng.normal(0.35, 0.2, 300), 0, 1)
    intervals = bootstrap_intervals(labels, scores, num_resamples=200, seed=1)
    assert intervals == bootstrap_intervals(labels, scores, num_resamples=200, seed=1)
    auroc = intervals["auroc"]
    assert auroc["value"] == pytest.approx(roc_auc_score(labels, scores))
    assert auroc["low"] < auroc["value"] < auroc["high"] and auroc["high"] - auroc["low"] < 0.2


@pytest.fixture
def prepared():
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    return accelerator, model, optimizer


def test_checkpoint_round_trip_restores_weights_and_loop_state(tmp_path, prepared):
    accelerator, model, optimizer = prepared
    path = save_checkpoint(accelerator, tmp_path, step=7, loop_state={"epoch": 1, "batch": 3})
    saved = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert load_checkpoint(accelerator, path) == {"epoch": 1, "batch": 3}
    torch.testing.assert_close(model.weight.detach(), saved)


def test_corrupted_or_partial_checkpoints_are_never_loaded(tmp_path, prepared):
    accelerator, model, _ = prepared
    first = save_checkpoint(accelerator, tmp_path, step=5, loop_state={})
    second = save_checkpoint(accelerator, tmp_path, step=10, loop_state={})
    (tmp_path / "step_00000015.partial").mkdir()  # a run killed while saving
    assert resolve_checkpoint("latest", tmp_path) == second
    with pytest.raises(CorruptCheckpointError, match="no medfuse_checkpoint.json; the checkpoint is incomplete"):
        load_checkpoint(accelerator, tmp_path / "step_00000015.partial")
    weights = second / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    before = model.weight.detach().clone()
    with pytest.raises(CorruptCheckpointError, match="model.safetensors does not match its recorded SHA-256"):
        load_checkpoint(accelerator, second)
    torch.testing.assert_close(model.weight.detach(), before)  # nothing was loaded half-way
    (first / "optimizer.bin").unlink()
    with pytest.raises(CorruptCheckpointError, match="optimizer.bin is missing"):
        load_checkpoint(accelerator, first)


def test_yaml_sets_defaults_and_flags_win(tmp_path):
    parser = argparse.ArgumentParser()
    parser.add_argument("--learning_rate", type=float, default=1.0)
    parser.add_argument("--dataset", default="p12-sample")
    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 0.5\ndataset: p12\n")
    args = parse_with_config(parser, ["--config", str(config), "--dataset", "p19"])
    assert (args.learning_rate, args.dataset) == (0.5, "p19")
    config.write_text("learning_rte: 0.5\n")
    with pytest.raises(SystemExit, match=r"run.yaml: unknown settings \['learning_rte'\]"):
        parse_with_config(argparse.ArgumentParser(), ["--config", str(config)])


@pytest.mark.parametrize("text, message", [
    (None, "absent.yaml: cannot be read (No such file or directory)"),
    ("learning_rate: 0.5\n  dataset: [p12\n", "not YAML (line 2)"),
    ("- learning_rate\n- 0.5\n", "give setting: value lines"),
])
def test_a_config_file_that_cannot_be_read_is_a_usage_error_naming_it(tmp_path, capsys, text, message):
    config = tmp_path / "absent.yaml"
    if text is not None:
        config.write_text(text)
    with pytest.raises(SystemExit) as stopped:
        parse_with_config(argparse.ArgumentParser(), ["--config", str(config)])
    assert stopped.value.code == 2 and f"--config: {config}" in (error := capsys.readouterr().err) and message in error


def test_a_privacy_threshold_below_the_floor_is_refused_before_any_training(capsys):
    parser = argparse.ArgumentParser()
    add_training_arguments(parser, output_dir="outputs/x")
    assert parser.parse_args(["--min_patients_for_statistics", "25"]).min_patients_for_statistics == 25
    with pytest.raises(SystemExit):
        parser.parse_args(["--min_patients_for_statistics", "5"])
    assert "5: statistics of fewer than 10 patients are never shared" in capsys.readouterr().err


def test_cards_name_run_folders_as_a_reader_would_type_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert readable(tmp_path / "outputs" / "run" / "model") == "outputs/run/model"  # no /home/... of this machine
    assert readable(Path("/home/someone/icu-project/runs/run-7/model")) == "run-7/model"  # outside it: no home folder


def test_the_clinical_metrics_load_offline_through_evaluate_and_match_the_recipes(monkeypatch, tmp_path):
    import evaluate

    from medfuse_hf.training import CLINICAL_METRICS, binary_metrics, bootstrap_intervals

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.clip(labels * 0.3 + rng.uniform(0, 0.7, 200), 0, 1)
    metric = evaluate.load(CLINICAL_METRICS)
    assert metric.compute(predictions=scores, references=labels) == binary_metrics(labels, scores)
    assert metric.compute(predictions=scores, references=labels, bootstrap_resamples=50, seed=3) == \
        bootstrap_intervals(labels, scores, 50, 3)


def test_trainer_compute_metrics_scores_the_positive_class_of_logits():
    from transformers import EvalPrediction

    from medfuse_hf.training import binary_metrics, trainer_compute_metrics

    logits = np.array([[2.0, -1.0], [0.0, 1.0], [1.0, 1.5], [3.0, 0.0]])
    labels = np.array([0, 1, 1, 0])
    probabilities = np.exp(logits[:, 1]) / np.exp(logits).sum(axis=1)
    assert trainer_compute_metrics(EvalPrediction(predictions=logits, label_ids=labels)) == \
        pytest.approx(binary_metrics(labels, probabilities))


END_OF_A_DISTRIBUTED_RUN = """
import torch, torch.distributed as dist
from accelerate import Accelerator
from medfuse_hf.training.loop import end_training

dist.init_process_group("gloo", rank=0, world_size=1, init_method="tcp://127.0.0.1:{port}")
accelerator = Accelerator(cpu=True)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 1))
model(torch.ones(4, 2)).sum().backward()
try:
    end_training(accelerator)
except RuntimeError as error:
    print("refused:", error)
print("group kept:", dist.is_initialized())
del model
end_training(accelerator)
print("group destroyed:", not dist.is_initialized())
"""


def test_end_training_refuses_to_destroy_the_group_while_a_ddp_model_is_still_referenced():
    """A DDP wrapper outliving the process group made two-rank runs hang at exit (see `end_training`): the recipes
    must drop it first, and forgetting to is an error, not a hang in one run of fifteen."""
    script = END_OF_A_DISTRIBUTED_RUN.format(port=free_port())
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: end_training: 1 DistributedDataParallel model(s) still referenced" in result.stdout
    assert "group kept: True" in result.stdout and "group destroyed: True" in result.stdout
    assert "reduce_op" not in result.stderr  # looking for DDP wrappers must not touch torch's deprecated objects


def test_a_sharded_launch_is_refused_before_the_run_starts(tmp_path, monkeypatch):
    """FSDP or DeepSpeed would hang the recipes' validation, which only some processes make, so `accelerate launch
    --use_fsdp` must stop at once with what to launch instead, before a run folder is written."""
    class ShardingAccelerator(Accelerator):  # what `accelerate launch --use_fsdp` gives each process
        distributed_type = DistributedType.FSDP

    monkeypatch.setattr(loop, "Accelerator", ShardingAccelerator)
    args = argparse.Namespace(output_dir=str(tmp_path / "run"), resume_from_checkpoint=None,
                              overwrite_output_dir=False, cpu=True, mixed_precision="no",
                              gradient_accumulation_steps=1, seed=0)
    with pytest.raises(SystemExit, match=r"FSDP: the recipes train a whole model on every process \(DDP"):
        loop.start_run(args)
    assert not (tmp_path / "run" / "run_info.json").exists()


def test_model_flags_take_their_type_choices_and_help_from_the_config(capsys):
    """A bad value is refused when the flags are read, before any cohort is loaded and tokenized."""
    parser = argparse.ArgumentParser()
    add_model_arguments(parser, (*ENCODER_FIELDS, *HEAD_FIELDS))
    args = parser.parse_args(["--pooling", "per_feature", "--norm_first", "false", "--focal_alpha", "0.25",
                              "--num_hidden_layers", "2"])
    assert (args.pooling, args.norm_first, args.focal_alpha, args.num_hidden_layers) == ("per_feature", False, 0.25, 2)
    assert model_overrides(args, ENCODER_FIELDS) == {"pooling": "per_feature", "norm_first": False,
                                                     "num_hidden_layers": 2}
    with pytest.raises(SystemExit):
        parser.parse_args(["--fusion", "gated"])
    assert "invalid choice: 'gated' (choose from 'multiplicative', 'additive', 'concat', 'scane')" in (
        capsys.readouterr().err)
    assert "(Gorishniy et al. 2022's periodic numerical embedding)" in " ".join(parser.format_help().split())


def test_a_memoised_frozen_encoder_encodes_each_patient_once_and_returns_what_it_computes(cohort, tokenizer,
                                                                                          tiny_config):
    """Patients met again, in other batches padded to other lengths, are looked up, not encoded again."""
    encoder = MedFuseModel(tiny_config()).eval().requires_grad_(False)
    collate = MedFuseDataCollator(tokenizer)
    batches = [collate(cohort[:8]), collate(cohort[4:12]), collate(cohort[:12][::-1])]
    expected = [encoder(**batch).pooler_output for batch in batches]
    encoded = []
    encoder.embeddings.register_forward_hook(lambda module, inputs, output: encoded.append(len(output)))
    memo = memoise_pooled_outputs(encoder)
    for batch, pooled in zip(batches, expected):
        torch.testing.assert_close(encoder(**batch).pooler_output, pooled)
    assert encoded == [8, 4] and len(memo) == 12


def test_a_memoised_encoder_takes_every_argument_the_encoder_takes(cohort, tokenizer, tiny_config):
    """The memo stands in for `MedFuseModel.forward`: an argument added there and not here broke every probe once.
    Tokens given in place of the embeddings' are no patient the memo knows: encoded, never looked up."""
    encoder = MedFuseModel(tiny_config()).eval().requires_grad_(False)
    original = inspect.signature(encoder.forward).parameters
    memoise_pooled_outputs(encoder)
    assert list(inspect.signature(encoder.forward).parameters) == list(original)
    batch = MedFuseDataCollator(tokenizer)(cohort[:4])
    tokens = torch.randn(*batch["feature_ids"].shape, encoder.config.hidden_size)
    pooled = encoder(**batch, inputs_embeds=tokens).pooler_output
    assert not torch.allclose(pooled, encoder(**batch).pooler_output)


def test_a_memoised_encoder_must_be_frozen_and_encodes_anew_while_training(cohort, tokenizer, tiny_config):
    encoder = MedFuseModel(tiny_config(hidden_dropout_prob=0.5))
    with pytest.raises(ValueError, match="the encoder still trains"):
        memoise_pooled_outputs(encoder)
    memo = memoise_pooled_outputs(encoder.requires_grad_(False).train())
    batch = MedFuseDataCollator(tokenizer)(cohort[:8])
    first, second = (encoder(**batch).pooler_output for _ in range(2))  # dropout draws anew each time
    assert not torch.allclose(first, second) and not memo


def test_a_resumed_run_keeps_the_tokenizer_it_started_with(tmp_path, cohort, caplog):
    """Refitted by other code (a later release's quantile knots) or on a changed export, the statistics would no
    longer be those the checkpoint's weights learnt on: the run's own tokenizer comes back, and the difference is
    named."""
    from medfuse_hf import FeatureVocabulary, MedFuseTokenizer
    from medfuse_hf.training.checkpointing import MANIFEST_NAME, run_tokenizer, tokenizer_settings

    args = argparse.Namespace(output_dir=str(tmp_path), resume_from_checkpoint="latest")
    started = MedFuseTokenizer(FeatureVocabulary.from_events(cohort[:40]), unknown_features="drop")
    assert run_tokenizer(args, started, is_main_process=True) is started  # no checkpoint: fitted, and saved
    (tmp_path / "checkpoints" / "step_00000005").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step_00000005" / MANIFEST_NAME).write_text("{}")
    with caplog.at_level("WARNING"):
        assert tokenizer_settings(run_tokenizer(args, started, True)) == tokenizer_settings(started)
        assert not caplog.text  # fitted alike: nothing to say
        refitted = MedFuseTokenizer(FeatureVocabulary.from_events(cohort), unknown_features="drop")
        resumed = run_tokenizer(args, refitted, is_main_process=True)
    assert tokenizer_settings(resumed) == tokenizer_settings(started) != tokenizer_settings(refitted)
    assert "resumed with the tokenizer the run started with" in caplog.text and "sodium" in caplog.text


def test_a_resumed_run_is_refused_a_split_other_than_the_one_it_started_on(tmp_path):
    """A seeded split is redrawn each time the data is read: a resumed run finding another (a new split rule, another
    seed's data) would train and choose epochs on other patients, silently. A run from before the record goes on,
    said; the record is not written then, since it would name a split the run may not have started on."""
    from medfuse_hf.training.cohorts import hospital_split, load_cohort
    from medfuse_hf.training.run_split import SPLIT_RECORD, record_split

    settings = {"dataset": "synthetic", "num_patients": 64, "seed": 0}
    first, other = load_cohort(**settings), load_cohort(**{**settings, "seed": 1})
    record_split(tmp_path / "run", first, settings, resuming=False)
    record_split(tmp_path / "run", first, settings, resuming=True)  # the same split: goes on
    with pytest.raises(SystemExit, match=r"run/split.json: the run started on another split of synthetic .* "
                                         r"\(patients in one and not the other: train: \d+"):
        record_split(tmp_path / "run", other, settings, resuming=True)
    recorded = hospital_split(str(tmp_path / "run" / SPLIT_RECORD))  # the record is a split file too
    assert sorted(recorded) == ["test", "train", "validation"] and len(sum(recorded.values(), [])) == 64
    said = []
    record_split(tmp_path / "older", other, settings, resuming=True, say=said.append)
    assert "predates split.json" in said[0] and not (tmp_path / "older" / SPLIT_RECORD).exists()


def test_a_split_record_names_its_data_so_that_other_commands_compare_with_it(tmp_path, monkeypatch):
    """A public release's ids are its patients' wherever it lies, and the bundled sample's are P12's; an export is
    the files it names, however a command spelled them (relative, a quoted glob, the shell's list); and where the
    data is another's, the check says it did not run rather than passing in silence."""
    from medfuse_hf.training.run_split import SPLIT_RECORD, data_source, refuse_seen_patients

    assert data_source({"dataset": "p12", "data_dir": "/a"}) == data_source({"dataset": "p12-sample"})
    for name in ("a.csv", "b.csv"):
        (tmp_path / name).write_text("")
    monkeypatch.chdir(tmp_path)
    spellings = [{"dataset": "long-format", "events": events}
                 for events in (["a.csv", "b.csv"], "*.csv", [str(tmp_path / "b.csv"), str(tmp_path / "a.csv")])]
    assert all(data_source(spelling) == data_source(spellings[0]) for spelling in spellings)
    assert data_source({"dataset": "long-format", "events": ["a.csv"]}) != data_source(spellings[0])

    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "run" / SPLIT_RECORD).write_text(json.dumps({"data_source": data_source(spellings[0]),
                                                             "train": ["7"], "validation": ["8"], "test": ["9"]}))
    with pytest.raises(SystemExit, match=r"1 of the 2 patients of the test split were in the model's training"):
        refuse_seen_patients(tmp_path / "run" / "model", "test", [7, 9], spellings[1])
    refuse_seen_patients(tmp_path / "run" / "model", "validation", [8, 9], spellings[1])  # its own validation: fine
    said = []
    refuse_seen_patients(tmp_path / "run" / "model", "test", [7, 9], {"dataset": "p19"}, say=said.append)
    assert "whether it trained on any patient scored here is not checked" in said[0]


def test_a_run_resumes_only_under_the_settings_its_checkpoint_was_saved_with(tmp_path):
    """Another start or learning rate would go on from weights trained under the first (a label-efficiency rerun with
    a new base, into the old folders): refused, naming what changed, a base pretrained again in place too. Where the
    run is kept, how it is scored and where its base lies may change, and a recipe may allow more (fine-tuning's
    --max_steps)."""
    from medfuse_hf.training.checkpointing import check_resumed_settings
    from medfuse_hf.training.loop import LoopState

    base = tmp_path / "base"
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"first weights")
    started = argparse.Namespace(output_dir=str(tmp_path / "run"), resume_from_checkpoint="latest",
                                 init_from=str(base), learning_rate=1e-3, bootstrap_resamples=1000, max_steps=0)
    LoopState(step=5).save(Accelerator(cpu=True), started)
    check_resumed_settings(argparse.Namespace(**{**vars(started), "bootstrap_resamples": 50}))
    cut = argparse.Namespace(**{**vars(started), "max_steps": 4})
    check_resumed_settings(cut, may_change=frozenset({"max_steps"}))
    with pytest.raises(SystemExit, match=r"--max_steps was 0, now 4\."):
        check_resumed_settings(cut)
    with pytest.raises(SystemExit, match=r"step_00000005 was made under other settings.*--learning_rate was 0.001, "
                                         r"now 0.0003\. Go on with its own settings"):
        check_resumed_settings(argparse.Namespace(**{**vars(started), "learning_rate": 3e-4}))
    moved = tmp_path / "released"
    base.rename(moved)  # the same weights elsewhere: the same start
    check_resumed_settings(argparse.Namespace(**{**vars(started), "init_from": str(moved)}))
    moved.rename(base)
    (base / "model.safetensors").write_bytes(b"weights pretrained again")
    with pytest.raises(SystemExit, match=r"the weights in --init_from changed\."):
        check_resumed_settings(started)
    check_resumed_settings(argparse.Namespace(**{**vars(started), "resume_from_checkpoint": None}))  # a new start


def test_test_predictions_are_read_by_whatever_id_a_cohort_has_and_older_runs_scores_as_probabilities(tmp_path):
    """A P19 or export run names its ids `patient_id`, P12 `record_id`; runs before the rename wrote `score`."""
    from medfuse_hf.training.evaluation import read_test_predictions

    (tmp_path / "test_predictions.csv").write_text("patient_id,label,score\n007,1,0.9\np2,0,0.2\n")
    frame = read_test_predictions(tmp_path)
    assert list(frame.index) == ["007", "p2"] and list(frame["probability"]) == [0.9, 0.2]


def test_a_feature_matched_by_code_is_held_to_its_counterparts_unit(tmp_path):
    """`--init_from` at a hospital that names creatinine otherwise and writes it in µmol/L: the checkpoint's mg/dL
    statistics would read it 88 times too high. A public cohort's values are in the catalogue's units: a checkpoint
    that has creatinine in µmol/L is refused on P12 too."""
    import datasets

    from medfuse_hf import FeatureSpec, FeatureVocabulary, MedFuseTokenizer
    from medfuse_hf.training.cohorts import Cohort
    from medfuse_hf.training.starting_point import checkpoint_tokenizer

    patients = [{"feature": ["creatinine_serum"] * 20, "value": [0.6 + 0.05 * i for i in range(20)]}]
    checkpoint = FeatureVocabulary([FeatureSpec(name="creatinine_serum", code="2160-0", unit="mg/dL")])
    MedFuseTokenizer(checkpoint.fit_statistics(patients)).save_pretrained(tmp_path / "mg")
    cohort = MedFuseTokenizer(FeatureVocabulary([FeatureSpec(name="creatinine", code="2160-0", unit="umol/L")]))
    splits = {"train": datasets.Dataset.from_list([{"feature": ["creatinine"], "value": [60.0]}])}
    hospital = Cohort(splits, "died", "patient_id", "a hospital's export", units={"creatinine": "umol/L"})
    args = argparse.Namespace(init_from=str(tmp_path / "mg"), max_events=64, strategy="full",
                              new_features="leave_out", value_normalization="robust_zscore", assume_model_units=False)
    with pytest.raises(ValueError, match="feature 'creatinine' is in 'umol/L', but the model's vocabulary has it in "
                                         "'mg/dL'"):
        checkpoint_tokenizer(args, cohort, splits, hospital)
    tokenizer, matching = checkpoint_tokenizer(args, cohort, splits, replace(hospital, units={"creatinine": "mg/dL"}))
    assert matching["matched_by"] == {"code": 1} and tokenizer.feature_vocabulary.id_of("creatinine") == 2
    umol = FeatureVocabulary([FeatureSpec(name="creatinine", unit="umol/L")])
    MedFuseTokenizer(umol.fit_statistics([{"feature": ["creatinine"] * 20, "value": [60.0 + i for i in range(20)]}])
                     ).save_pretrained(tmp_path / "umol")
    args.init_from = str(tmp_path / "umol")
    with pytest.raises(ValueError, match="'creatinine' is in 'mg/dL', but the model's vocabulary has it in 'umol/L'"):
        checkpoint_tokenizer(args, cohort, splits, replace(hospital, units=None, description="PhysioNet 2012"))


def test_patients_without_a_known_event_are_set_aside_by_id(tokenizer):
    """`evaluate.py --unknown_features drop` at a hospital some of whose patients have none of the model's features:
    they are named and left out, not an error that stops the whole evaluation."""
    import datasets

    from medfuse_hf.training.evaluation import patients_with_known_events

    patients = datasets.Dataset.from_list([
        {"stay": "a", "feature": ["sodium", "troponin"], "value": [140.0, 0.1], "time": [0.0, 1.0]},
        {"stay": "b", "feature": ["troponin"], "value": [0.2], "time": [0.0]},
    ])
    kept, left_out = patients_with_known_events(patients, tokenizer, "stay")
    assert kept["stay"] == ["a"] and left_out == ["b"]


def test_a_resumed_run_keeps_the_commit_its_training_began_under(tmp_path):
    """A finished run resumed to be tested again at today's code holds weights trained by older code: its record
    keeps the first start's commit beside this start's, so a result row cannot pass the old weights off as new."""
    from types import SimpleNamespace

    from medfuse_hf.training.run_info import git_commit, write_run_info

    accelerator = SimpleNamespace(num_processes=1, device=torch.device("cpu"), mixed_precision="no",
                                  distributed_type="NO", is_main_process=True)
    older = {"commit": "1ff5bdb5", "uncommitted_changes": False}
    (tmp_path / "run_info.json").write_text(json.dumps({"git": older}))  # written before the first start was kept
    assert write_run_info(tmp_path, {}, accelerator, resuming=True)["git_at_start"] == older
    assert write_run_info(tmp_path, {}, accelerator, resuming=True)["git_at_start"] == older  # kept on every resume
    assert write_run_info(tmp_path, {}, accelerator)["git_at_start"] == git_commit()  # a fresh start is its own
