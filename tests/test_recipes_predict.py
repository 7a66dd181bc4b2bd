"""recipes/predict.py: risk scores for unlabeled patients from a long-format table, with what was left out."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import load_script

from medfuse_hf import MedFuseForPreTraining, MedFuseForSequenceClassification, MedFuseTokenizer

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = "patient_id=SUBJECT_ID,time=HOURS,feature=ITEM,value=VALUE"  # EVENTS', which give no unit
EVENTS = """SUBJECT_ID,HOURS,ITEM,VALUE
p1,0.5,sodium,140
p1,1.0,heart_rate,88
p1,2.0,troponin,0.02
p1,3.0,sodium,<150
p2,1.0,lactate,2.1
p3,4.0,creatinine,1.1
p3,5.0,sodium ,133
"""


@pytest.fixture
def predict():
    return load_script("recipes/predict.py")


def test_unlabeled_patients_get_risk_scores_and_a_summary_of_what_was_left_out(
    predict, tmp_path, tokenizer, tiny_config
):
    model = MedFuseForSequenceClassification(tiny_config()).eval()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "events.csv").write_text(EVENTS)
    output = tmp_path / "out" / "predictions.csv"
    stale = output.with_name("predictions.csv.explanations.csv")  # an earlier run's, with --explain
    stale.parent.mkdir()
    stale.write_text("patient_id,rank,feature,hours,value,attribution\np9,1,sodium,1.0,150.0,0.3\n")
    predict.main(
        [
            "--model_dir",
            str(tmp_path / "model"),
            "--events",
            str(tmp_path / "events.csv"),
            "--columns",
            COLUMNS,
            "--assume_model_units",
            "--output",
            str(output),
        ]
    )

    predictions = pd.read_csv(output, dtype={"patient_id": str})
    assert not stale.exists()  # it would sit beside these predictions as if it explained them
    assert predictions["patient_id"].tolist() == ["p1", "p3"]  # p2 has only a feature the model does not know
    assert predictions["events_used"].tolist() == [3, 2]  # troponin left out; "sodium " is sodium
    p1 = [("sodium", 140.0, 0.5), ("heart_rate", 88.0, 1.0), ("sodium", 150.0, 3.0)]  # "<150" kept at its bound
    with torch.no_grad():
        expected = model(**tokenizer([p1], return_tensors="pt")).logits.softmax(-1)[0, 1].item()
    assert predictions["probability"][0] == pytest.approx(expected, abs=1e-6)

    summary = json.loads(output.with_name("predictions.csv.summary.json").read_text())
    assert summary["unknown_features"] == {"troponin": 1, "lactate": 1}
    assert summary["patients_not_scored"] == {"no event of a feature the model knows": 1}
    assert summary["patients_not_scored_examples"] == ["p2"]
    assert summary["loader_notes"] == {"censored value, kept at the bound": 1}
    assert summary["loader_examples"]["censored value, kept at the bound"] == [f"{tmp_path / 'events.csv'}:5"]
    assert summary["patients_scored"] == 2 and summary["events_read"] == 7
    assert summary["patients_cut_to_max_events"] == {"max_events": 64, "patients": 0, "oldest_events_left_out": 0}
    vocabulary = tokenizer.feature_vocabulary  # no unit column: each scored feature read in the model's own unit
    assert summary["units_assumed"] == {name: vocabulary.spec_of(name).unit for name in ("creatinine", "heart_rate",
                                                                                         "sodium")
                                        if vocabulary.spec_of(name).unit}
    assert "sodium" in summary["units_assumed"]


def test_a_table_without_units_is_refused_before_scoring_unless_its_owner_vouches_for_them(
    predict, tmp_path, tokenizer, tiny_config
):
    """A creatinine in µmol/L read as the model's mg/dL is 88 times too high, and nothing could tell: with no unit to
    compare, the table's owner must say that its values are in the model's units; a unit column is checked."""
    MedFuseForSequenceClassification(tiny_config()).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "events.csv").write_text(EVENTS)
    output = tmp_path / "predictions.csv"
    arguments = ["--model_dir", str(tmp_path / "model"), "--events", str(tmp_path / "events.csv"), "--columns",
                 COLUMNS, "--output", str(output)]
    with pytest.raises(ValueError, match=r"gives no unit for 2 of the model's features.*heart_rate \(bpm\), "
                                         r"sodium \(mmol/L\).*--assume_model_units"):
        predict.main(arguments)
    assert not list(tmp_path.glob("predictions.csv*"))  # refused before any file was written
    units = {"sodium": "mmol/L", "heart_rate": "bpm", "troponin": "ng/mL", "lactate": "mmol/L", "creatinine": ""}
    with_units = "".join(line + f",{units[line.split(',')[2].strip()]}\n" if index else line + ",UNIT\n"
                         for index, line in enumerate(EVENTS.splitlines()))
    (tmp_path / "events.csv").write_text(with_units)
    predict.main([*arguments[:5], COLUMNS + ",unit=UNIT", *arguments[6:]])
    assert json.loads(output.with_name("predictions.csv.summary.json").read_text())["units_assumed"] == {}
    # a second feed that leaves the unit blank: its sodium cannot be checked, though the other feed's can
    (tmp_path / "events.csv").write_text(with_units.replace("p3,5.0,sodium ,133,mmol/L", "p3,5.0,sodium ,133,"))
    with pytest.raises(ValueError, match=r"gives no unit for 1 of the model's features \(or for some of their "
                                         r"events\).*sodium \(mmol/L; 1 of its events\)"):
        predict.main([*arguments[:5], COLUMNS + ",unit=UNIT", *arguments[6:]])


def test_the_summary_counts_the_oldest_events_a_long_stay_had_left_out(predict, tmp_path, tokenizer, tiny_config):
    MedFuseForSequenceClassification(tiny_config()).save_pretrained(tmp_path / "model")
    MedFuseTokenizer(tokenizer.feature_vocabulary, max_events=2).save_pretrained(tmp_path / "model")
    (tmp_path / "events.csv").write_text(EVENTS)
    output = tmp_path / "predictions.csv"
    predict.main(["--model_dir", str(tmp_path / "model"), "--events", str(tmp_path / "events.csv"),
                  "--columns", COLUMNS, "--assume_model_units", "--output", str(output)])
    summary = json.loads(output.with_name("predictions.csv.summary.json").read_text())
    assert summary["patients_cut_to_max_events"] == {"max_events": 2, "patients": 1, "oldest_events_left_out": 1}


def test_a_table_scored_a_few_patients_at_a_time_gives_the_same_files(
    predict, tmp_path, tokenizer, tiny_config, monkeypatch
):
    """Scoring writes its rows a chunk of patients at a time, so memory stays flat on a table of any size: chunks
    of one patient give the same predictions, explanations and summary as one chunk of all."""
    MedFuseForSequenceClassification(tiny_config()).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "events.csv").write_text(EVENTS)
    files = {}
    for chunk in (8192, 1):
        monkeypatch.setattr(predict, "PATIENTS_PER_CHUNK", chunk)
        output = tmp_path / f"chunks-of-{chunk}" / "predictions.csv"
        predict.main(["--model_dir", str(tmp_path / "model"), "--events", str(tmp_path / "events.csv"),
                      "--columns", COLUMNS, "--assume_model_units", "--explain", "2",
                      "--output", str(output)])
        files[chunk] = [output.read_text(), output.with_name("predictions.csv.explanations.csv").read_text(),
                        json.loads(output.with_name("predictions.csv.summary.json").read_text())]
        files[chunk][2]["explanations"].pop("file")
    assert files[1] == files[8192] and files[1][0].count("\n") == 3  # a header and p1, p3


def test_a_run_stopped_half_way_leaves_no_file_that_looks_complete(predict, tmp_path, tokenizer, tiny_config,
                                                                    monkeypatch):
    MedFuseForSequenceClassification(tiny_config()).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "events.csv").write_text(EVENTS)
    monkeypatch.setattr(predict, "PATIENTS_PER_CHUNK", 1)
    scored = predict.per_patient_outputs
    calls = []

    def fails_on_the_second_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("a bad row in a later chunk")
        return scored(*args, **kwargs)

    monkeypatch.setattr(predict, "per_patient_outputs", fails_on_the_second_chunk)
    output = tmp_path / "predictions.csv"
    with pytest.raises(ValueError, match="a bad row in a later chunk"):
        predict.main(["--model_dir", str(tmp_path / "model"), "--events", str(tmp_path / "events.csv"),
                      "--columns", COLUMNS, "--assume_model_units",
                      "--output", str(output)])
    assert not output.exists() and (tmp_path / "predictions.csv.partial").read_text().count("\n") == 2


def test_a_stopped_run_resumes_where_it_stopped_and_writes_what_an_unbroken_one_does(
    predict, tmp_path, tokenizer, tiny_config, monkeypatch, capsys
):
    """Scoring a hospital's table with explanations can take hours: the same command after a stop scores only the
    chunks not yet written, cuts off rows a dying run appended after its last counted chunk, and gives the files an
    unbroken run gives. A run of other inputs (here, a changed table) starts afresh."""
    MedFuseForSequenceClassification(tiny_config()).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "events.csv").write_text(EVENTS)
    monkeypatch.setattr(predict, "PATIENTS_PER_CHUNK", 1)  # chunks p1, p2 (no event the model knows), p3

    def run(output: Path, *flags: str) -> list:
        predict.main(["--model_dir", str(tmp_path / "model"), "--events", str(tmp_path / "events.csv"),
                      "--columns", COLUMNS, "--assume_model_units", "--explain", "2", "--output", str(output),
                      *flags])
        summary = json.loads(output.with_name("predictions.csv.summary.json").read_text())
        summary["explanations"].pop("file")
        return [output.read_text(), output.with_name("predictions.csv.explanations.csv").read_text(), summary]

    unbroken = run(tmp_path / "unbroken" / "predictions.csv")
    scored, calls = predict.per_patient_outputs, []

    def counted(*args, **kwargs):
        calls.append(1)
        if fail_at == len(calls):
            raise ValueError("killed")
        return scored(*args, **kwargs)

    monkeypatch.setattr(predict, "per_patient_outputs", counted)
    output, fail_at = tmp_path / "predictions.csv", 2  # p3's chunk
    with pytest.raises(ValueError, match="killed"):
        run(output)
    with (tmp_path / "predictions.csv.partial").open("a") as partial:
        partial.write("p3,0.5,2\n")  # appended by a run that died before counting its chunk
    calls.clear()
    fail_at = None
    assert run(output) == unbroken
    assert len(calls) == 1 and "resuming: 2 patients already scored" in capsys.readouterr().out  # p3 alone
    assert not (tmp_path / "predictions.csv.progress.json").exists()

    fail_at, calls[:] = 2, []
    with pytest.raises(ValueError, match="killed"):  # stopped at p3 again
        run(output)
    explained = predict.explanation_rows

    def dies_after_writing_its_rows(*args, **kwargs):
        raise ValueError("killed before counting its chunk")

    monkeypatch.setattr(predict, "explanation_rows", dies_after_writing_its_rows)
    fail_at = None
    with pytest.raises(ValueError, match="killed before counting"):  # another run's inputs: it starts afresh
        run(output, "--batch_size", "2")
    assert "another run's progress" in capsys.readouterr().out
    monkeypatch.setattr(predict, "explanation_rows", explained)
    calls[:] = []
    assert run(output) == unbroken and len(calls) == 2  # from the start: the other run's p1 row is not resumed into


def test_a_table_whose_every_patient_the_loader_skips_gives_empty_files_and_a_summary(predict, tmp_path, tokenizer,
                                                                                       tiny_config):
    MedFuseForSequenceClassification(tiny_config()).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "events.csv").write_text("SUBJECT_ID,HOURS,ITEM,VALUE\np1,0.5,sodium,high\n")  # no number to read
    output = tmp_path / "predictions.csv"
    predict.main(["--model_dir", str(tmp_path / "model"), "--events", str(tmp_path / "events.csv"),
                  "--columns", COLUMNS, "--assume_model_units", "--output", str(output)])
    assert output.read_text().strip() == "patient_id,probability,events_used"
    assert json.loads(output.with_name("predictions.csv.summary.json").read_text())["patients_scored"] == 0


def test_events_are_required(predict, tmp_path, tokenizer, tiny_config, capsys):
    MedFuseForSequenceClassification(tiny_config()).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(SystemExit):
        predict.main(["--model_dir", str(tmp_path)])
    assert "--events" in capsys.readouterr().err


def test_a_long_format_table_reaches_a_model_and_risk_scores_with_commands_only(tmp_path):
    """The README's own-data path: item ids mapped by a CSV, text labels mapped, then `predict.py` on the same events
    without labels."""
    from test_recipes_finetune import TINY, run

    from medfuse_hf.synthetic import make_sodium_cohort

    cohort = make_sodium_cohort(160, seed=3)
    items = {"sodium": "50983", "heart_rate": "220045", "creatinine": "50912"}
    rows = [
        (f"s{p['record_id']}", round(time, 3), items[name], value)
        for p in cohort
        for name, value, time in zip(p["feature"], p["value"], p["time"])
    ]
    pd.DataFrame(rows, columns=["SUBJECT_ID", "HOURS", "ITEMID", "VALUE"]).to_csv(tmp_path / "events.csv", index=False)
    pd.DataFrame(
        {"SUBJECT_ID": [f"s{p['record_id']}" for p in cohort], "DIED": ["yes" if p["label"] else "no" for p in cohort]}
    ).to_csv(tmp_path / "labels.csv", index=False)
    pd.DataFrame({"ITEMID": list(items.values()), "FEATURE": list(items)}).to_csv(tmp_path / "items.csv", index=False)
    columns = "patient_id=SUBJECT_ID,time=HOURS,feature=ITEMID,value=VALUE"
    model_run = tmp_path / "run"
    tiny = [flag for flag in TINY if flag not in ("--dataset", "synthetic", "--num_patients", "256")]
    cohort_flags = ["--dataset", "long-format", "--events", str(tmp_path / "events.csv"), "--labels",
                    str(tmp_path / "labels.csv"), "--label_column", "DIED", "--label_map", "yes=1,no=0", "--columns",
                    columns, "--feature_map", str(tmp_path / "items.csv")]
    run([*tiny, *cohort_flags, "--max_hours", "24", "--num_epochs", "1", "--output_dir", str(model_run)])
    assert json.loads((model_run / "test_metrics.json").read_text())["test_patients"] == 16  # 10 % of 160
    # the table gave no unit: the model claims none (not the catalogue's), and its own kind of table needs no word
    assert {spec.unit for spec in MedFuseTokenizer.from_pretrained(model_run / "model").feature_vocabulary} == {None}
    # the card and the embeddings' manifest, which a hospital publishes, never name where its export lies
    published = [model_run / "model" / "README.md", model_run / "feature_embeddings" / "embedding_config.json"]
    assert all(str(tmp_path / "events.csv") not in path.read_text() for path in published)
    assert "trained on long-format events from 1 table(s)" in published[0].read_text()

    output = tmp_path / "predictions.csv"
    scored = run(
        [
            "--model_dir",
            str(model_run / "model"),
            "--events",
            str(tmp_path / "events.csv"),
            "--columns",
            columns,
            "--feature_map",
            str(tmp_path / "items.csv"),
            "--output",
            str(output),
        ],
        recipe=ROOT / "recipes" / "predict.py",
    )
    predictions = pd.read_csv(output)
    assert len(predictions) == 160 and predictions["probability"].between(0, 1).all()
    # read through the window the model was trained on, though the command left it out
    assert "--max_hours 24.0: the model's training window" in scored.stdout
    summary = json.loads(output.with_name("predictions.csv.summary.json").read_text())
    assert "time more than 24 h after the anchor" in json.dumps(summary)
    assert summary["window"]["max_hours"] == {"used": 24.0, "trained": 24.0}
    # evaluated likewise: the test split scored as the fine-tuning run scored it
    evaluated = run([*cohort_flags, "--model_dir", str(model_run / "model"), "--output_dir", str(tmp_path / "eval")],
                    recipe=ROOT / "recipes" / "evaluate.py")
    assert "--max_hours 24.0: the model's training window" in evaluated.stdout
    evaluated_report = json.loads((tmp_path / "eval" / "test_metrics.json").read_text())
    assert evaluated_report["window"]["max_hours"] == {"used": 24.0, "trained": 24.0}
    scores = [{metric: interval["value"] for metric, interval in json.loads((folder / "test_metrics.json")
                                                                          .read_text())["test"].items()}
              for folder in (tmp_path / "eval", model_run)]
    assert scores[0] == scores[1]
    # another seed draws another split of the same patients: its test split holds some the model trained on
    with pytest.raises(SystemExit, match=r"of the 16 patients of the test split were in the model's training or "
                                         r"validation split \(.*run/split.json; e\.g\. \['s"):
        load_script("recipes/evaluate.py").main([*cohort_flags, "--seed", "1", "--model_dir", str(model_run / "model"),
                                                 "--output_dir", str(tmp_path / "eval-1")])


def test_a_checkpoint_saved_in_bf16_is_scored_in_float32(predict, tmp_path, tokenizer, tiny_config):
    """A bf16 copy loads as bf16 by default: its risks would carry 8 bits of mantissa, written as if float32."""
    torch.manual_seed(0)
    model = MedFuseForSequenceClassification(tiny_config()).eval()
    model.to(torch.bfloat16).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "events.csv").write_text(EVENTS)
    predict.main(["--model_dir", str(tmp_path / "model"), "--events", str(tmp_path / "events.csv"), "--columns",
                  COLUMNS, "--assume_model_units", "--output", str(tmp_path / "p.csv")])
    p1 = [("sodium", 140.0, 0.5), ("heart_rate", 88.0, 1.0), ("sodium", 150.0, 3.0)]
    upcast = model.float()  # the bf16 weights, computed in float32
    with torch.no_grad():
        expected = upcast.risks(upcast(**tokenizer([p1], return_tensors="pt")).logits)[0, 1].item()
    assert pd.read_csv(tmp_path / "p.csv")["probability"][0] == pytest.approx(expected, abs=1e-6)


def test_a_window_flag_the_model_was_trained_without_is_said_and_an_unrecorded_window_is_no_claim(capsys):
    """Scoring through an end time (or an anchor) that training never used reads other events than the model learnt
    from: kept, as asked, but said, and recorded in the summary beside what training used."""
    from argparse import Namespace
    from types import SimpleNamespace

    from medfuse_hf.training.cohorts import follow_the_training_window

    args = Namespace(anchor_column=None, max_hours=None, end_column="OUTTIME")
    window = follow_the_training_window(args, SimpleNamespace(event_window={"anchor_column": "INTIME",
                                                                           "max_hours": 48.0}))
    said = capsys.readouterr().out
    assert "--end_column OUTTIME: the model was trained without --end_column; scoring as asked" in said
    assert "--anchor_column INTIME: the model's training window" in said and args.max_hours == 48.0
    assert window["end_column"] == {"used": "OUTTIME", "trained": None}
    window = follow_the_training_window(Namespace(anchor_column=None, max_hours=24.0, end_column=None),
                                        SimpleNamespace(event_window=None))  # a model from before windows were kept
    assert capsys.readouterr().out == "" and window["max_hours"] == {"used": 24.0, "trained": "not recorded"}


def test_a_p12_models_table_is_read_through_its_48_hours_from_the_time_its_hours_counted_from(capsys):
    """A P12 model learnt from the first 48 ICU hours, counted from admission: a whole stay scored with it would
    feed events it never saw the like of, so its 48 hours are followed, and an anchor left out is said."""
    from argparse import Namespace
    from types import SimpleNamespace

    from medfuse_hf.training.cohorts import follow_the_training_window

    p12_model = SimpleNamespace(event_window={"time_zero": "ICU admission", "max_hours": 48.0})
    args = Namespace(anchor_column=None, max_hours=None, end_column=None)
    window = follow_the_training_window(args, p12_model)
    said = capsys.readouterr().out
    assert args.max_hours == 48.0 and "--max_hours 48.0: the model's training window" in said
    assert ("hours count from each stay's ICU admission: without --anchor_column naming that time, the table's "
            "times are read as given where they are hours, and from each patient's first event where") in said
    assert window["time_zero"] == {"used": "no anchor: hours as given, timestamps from each patient's first event",
                                   "trained": "ICU admission"}
    args = Namespace(anchor_column="INTIME", max_hours=None, end_column=None)
    window = follow_the_training_window(args, p12_model)  # the anchor the model asks for: nothing to say of it
    assert capsys.readouterr().out == "--max_hours 48.0: the model's training window\n"
    assert window["time_zero"] == {"used": "INTIME", "trained": "ICU admission"}


def test_a_public_cohort_read_through_another_window_than_the_models_is_said(capsys):
    """evaluate.py on P19: a model of the first 24 hours scored on whole stays (P19's default protocol) reads hours
    and a task it never trained on. Kept, as asked, but said, and both windows go into the report."""
    from types import SimpleNamespace

    from medfuse_hf.training.cohorts import compare_with_the_training_window

    early = SimpleNamespace(event_window={"time_zero": "ICU admission", "max_hours": 24.0})
    whole_stays = SimpleNamespace(window={"time_zero": "ICU admission"}, description="PhysioNet 2019, whole-stay")
    assert compare_with_the_training_window(whole_stays, early) == {"used": {"time_zero": "ICU admission"},
                                                                   "trained": early.event_window}
    assert ("PhysioNet 2019, whole-stay is read whole, with no window; the model was trained through the first 24 "
            "hours from ICU admission: scoring as asked") in capsys.readouterr().out
    first_day = SimpleNamespace(window=dict(early.event_window), description="PhysioNet 2019, first-24h")
    compare_with_the_training_window(first_day, early)
    compare_with_the_training_window(whole_stays, SimpleNamespace(event_window=None))  # from before windows were kept
    assert capsys.readouterr().out == ""


def test_explanations_name_the_events_that_moved_the_risk(predict, tmp_path, tokenizer, tiny_config):
    model = MedFuseForSequenceClassification(tiny_config()).eval()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "events.csv").write_text(EVENTS)
    output = tmp_path / "predictions.csv"
    predict.main(
        [
            "--model_dir",
            str(tmp_path / "model"),
            "--events",
            str(tmp_path / "events.csv"),
            "--explain",
            "2",
            "--columns",
            COLUMNS, "--assume_model_units",
            "--output",
            str(output),
        ]
    )
    explanations = pd.read_csv(output.with_name("predictions.csv.explanations.csv"), dtype={"patient_id": str})
    assert explanations.groupby("patient_id")["rank"].max().to_dict() == {"p1": 2, "p3": 2}
    p1 = explanations[explanations["patient_id"] == "p1"]
    # the raw events as given ("<150" kept at its bound 150), never the unknown troponin
    assert set(zip(p1["feature"], p1["value"])) <= {("sodium", 140.0), ("heart_rate", 88.0), ("sodium", 150.0)}
    assert p1["attribution"].abs().is_monotonic_decreasing
    explained = json.loads(output.with_name("predictions.csv.summary.json").read_text())["explanations"]
    assert explained["attributed"].startswith("the risk's log-odds")
    assert explained["largest_convergence_error_log_odds"] < 1


@pytest.mark.parametrize("pooling", ["mean", "per_feature"])
def test_attributions_add_up_to_the_risk_gap_to_padding_tokens_whatever_the_pooling(tokenizer, tiny_config, pooling):
    """The attributions add up to the gap in the risk's log-odds (not the positive logit's, which moves with events
    that raise both logits alike). Per-feature pooling groups tokens by their feature and time, which the path over
    tokens holds fixed: they must still add up, and not only for a pooling that ignores the ids."""
    from medfuse_hf.training.explanations import explain_patient

    torch.manual_seed(0)
    model = MedFuseForSequenceClassification(tiny_config(pooling=pooling)).eval()
    with torch.no_grad():  # away from the initialisation's near-zero logits, so that the gap is not ~0
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    patient = {"feature": ["sodium", "heart_rate", "sodium"], "value": [140.0, 88.0, 150.0], "time": [0.5, 1.0, 3.0]}
    events, error = explain_patient(model, tokenizer, patient, top_k=3, steps=64)

    batch = tokenizer([patient], return_tensors="pt")
    padding = {key: torch.zeros_like(value) for key, value in batch.items() if key != "attention_mask"}

    def log_odds(logits: torch.Tensor) -> torch.Tensor:  # what the risk is the sigmoid of
        return logits[0, 1] - logits[0, 0]

    with torch.no_grad():
        padding_tokens = model.base_model.embeddings(**padding)
        gap = log_odds(model(**batch).logits) - log_odds(model(**batch, inputs_embeds=padding_tokens).logits)
        if pooling == "mean":  # which feature a token is matters only through its token: the baseline is padding
            padded = log_odds(model(**padding, attention_mask=batch["attention_mask"]).logits)
            assert gap == pytest.approx((log_odds(model(**batch).logits) - padded).item())
        # the risk moves with the log-odds and not with the positive logit alone: attributions to that would differ
        positive_gap = model(**batch).logits[0, 1] - model(**batch, inputs_embeds=padding_tokens).logits[0, 1]
    assert abs(gap.item()) > 0.05 and error < 1e-2 and abs(positive_gap.item() - gap.item()) > 0.05
    assert sum(event.attribution for event in events) == pytest.approx(gap.item(), abs=max(2 * error, 1e-3))
    assert sorted(event.position for event in events) == [0, 1, 2]


def test_events_in_another_unit_than_the_models_are_refused(predict, tmp_path, tokenizer, tiny_config):
    """The fixture's vocabulary has sodium in mmol/L: mEq/L happens to be equal for sodium, but only a declared
    conversion may say so."""
    MedFuseForSequenceClassification(tiny_config()).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    arguments = [
        "--model_dir",
        str(tmp_path / "model"),
        "--events",
        str(tmp_path / "events.csv"),
        "--columns",
        "unit=UNIT",
        "--output",
        str(tmp_path / "predictions.csv"),
    ]
    (tmp_path / "events.csv").write_text(
        "patient_id,time,feature,value,UNIT\np1,1.0,sodium,140,mEq/L\np1,2.0,heart_rate,80,bpm\n"
    )
    with pytest.raises(
        ValueError, match=r"feature 'sodium' is in 'mEq/L', but the model's vocabulary has it in 'mmol/L'"
    ):
        predict.main(arguments)
    (tmp_path / "events.csv").write_text(
        "patient_id,time,feature,value,UNIT\np1,1.0,sodium,140,mmol/l\np1,2.0,heart_rate,80,bpm\n"
    )
    predict.main(arguments)  # the litre's case is no other unit
    assert len(pd.read_csv(tmp_path / "predictions.csv")) == 1
    # an export that writes every unit in capitals (MIMIC-III) has lost the case: MMOL/L is mmol/L, MEQ/L still is not
    for unit, accepted in (("MMOL/L", True), ("MEQ/L", False), ("Mmol/L", False)):
        (tmp_path / "events.csv").write_text(f"patient_id,time,feature,value,UNIT\np1,1.0,sodium,140,{unit}\n")
        if accepted:
            predict.main(arguments)
        else:
            with pytest.raises(ValueError, match=f"feature 'sodium' is in '{unit}'"):
                predict.main(arguments)


def test_a_fitted_tokenizer_records_the_units_its_cohort_was_read_in(cohort):
    import datasets

    from medfuse_hf.training.cohorts import fit_tokenizer

    tokenizer = fit_tokenizer(datasets.Dataset.from_list(cohort), max_events=64, units={"sodium": "MEQ/L"})
    assert tokenizer.feature_vocabulary.spec_of("sodium").unit == "MEQ/L"


def test_the_pretrained_base_writes_each_patients_representation_for_a_model_of_ones_own(
    predict, tmp_path, tokenizer, tiny_config
):
    """`--representations` needs no classification head (the base has none): one row per patient, the encoder's
    pooled output for that patient alone, whatever batch it was scored in."""
    base = MedFuseForPreTraining(tiny_config()).eval()
    base.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    (tmp_path / "events.csv").write_text(EVENTS)
    output = tmp_path / "representations.csv"
    predict.main(["--model_dir", str(tmp_path / "base"), "--events", str(tmp_path / "events.csv"), "--columns",
                  COLUMNS, "--assume_model_units", "--representations",
                  "--output", str(output)])
    written = pd.read_csv(output, dtype={"patient_id": str})
    hidden = tiny_config().hidden_size
    assert list(written.columns) == ["patient_id", *(f"representation_{i}" for i in range(hidden)), "events_used"]
    assert written["patient_id"].tolist() == ["p1", "p3"]
    p3 = [("creatinine", 1.1, 4.0), ("sodium", 133.0, 5.0)]
    with torch.no_grad():
        alone = base.medfuse(**tokenizer([p3], return_tensors="pt")).pooler_output[0].numpy()
    np.testing.assert_allclose(written.iloc[1, 1:-1].to_numpy(dtype=float), alone, atol=1e-5)
    with pytest.raises(SystemExit):  # there is no risk to explain
        predict.main(["--model_dir", str(tmp_path / "base"), "--events", str(tmp_path / "events.csv"),
                      "--representations", "--explain", "3"])
