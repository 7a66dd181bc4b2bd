"""The pretraining corpus: P19 and P12's training split as Parquet shards, events only, P12's held-out stays absent;
and how pretraining on it describes it for the base model's cards."""

import json
import zipfile
from argparse import Namespace
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import load_script
from test_data_physionet2012 import write_release
from test_data_physionet2019 import PATIENT_A, PATIENT_B

from medfuse_hf.data import load_long_format, load_physionet2012, save_split
from medfuse_hf.data.shards import held_out_count
from medfuse_hf.training.cohorts import streaming_patients
from medfuse_hf.training.pretraining import streamed_cohort


def write_public_releases(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny P12 release with a SeFT split (one stay each in train, validation and test) and a P19 release of three
    patients, two in hospital A's zip and one in hospital B's folder."""
    p12, p19 = tmp_path / "p12", tmp_path / "p19"
    p12.mkdir()
    write_release(p12)  # stays 132539, 132540 and 132542 have events
    (p12 / "splits_seft").mkdir()
    for name, record in (("train", 132539), ("val", 132540), ("test", 132542)):
        (p12 / "splits_seft" / f"{name}_listfile.csv").write_text(f"RecordID,In-hospital_death\n{record},0\n")
    p19.mkdir()
    with zipfile.ZipFile(p19 / "training_setA.zip", "w") as archive:
        archive.writestr("training_setA/p000001.psv", PATIENT_A)
        archive.writestr("training_setA/p000002.psv", PATIENT_A)
    (p19 / "training_setB").mkdir()
    (p19 / "training_setB" / "p100001.psv").write_text(PATIENT_B)
    return p12, p19


def write_export(tmp_path: Path) -> list[str]:
    """A hospital's long-format export of 7 stays (60 events of two local items, one in °F) with its labels table,
    item map and unit conversions; returns the flags that read it."""
    events = pd.DataFrame({"stay": [f"s{i % 7}" for i in range(60)], "hours": [i / 3 for i in range(60)],
                           "item": ["220045", "223761"] * 30, "value": [80.0, 98.6] * 30,
                           "unit": ["bpm", "°F"] * 30})
    events.to_csv(tmp_path / "export.csv", index=False)
    pd.DataFrame({"stay": [f"s{i}" for i in range(7)], "admitted": [0.0] * 7, "died": [0, 1] * 3 + [0]}).to_csv(
        tmp_path / "stays.csv", index=False)
    (tmp_path / "items.csv").write_text("source,feature\n220045,heart_rate\n223761,temperature\n")
    (tmp_path / "units.json").write_text('{"temperature": {"°F": [0.5555555555555556, -17.77777777777778], '
                                         '"into": "°C"}}')
    return ["--events", str(tmp_path / "export.csv"), "--labels", str(tmp_path / "stays.csv"),
            "--columns", "patient_id=stay,time=hours,feature=item,value=value", "--anchor_column", "admitted",
            "--feature_map", str(tmp_path / "items.csv"), "--unit_conversions", str(tmp_path / "units.json")]


def test_the_corpus_holds_every_p19_patient_and_only_p12_training_stays_and_describes_itself(tmp_path, monkeypatch,
                                                                                              capsys):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    (p12, p19), corpus = write_public_releases(tmp_path), tmp_path / "corpus"

    recipe = load_script("recipes/make_pretraining_corpus.py")
    recipe.main(["--p19_dir", str(p19), "--p12_dir", str(p12), "--output_dir", str(corpus),
                 "--patients_per_shard", "2"])

    with pytest.raises(FileExistsError, match="already holds 2 shards"):  # a rerun would mix two corpora
        recipe.main(["--p19_dir", str(p19), "--p12_dir", str(p12), "--output_dir", str(corpus)])
    shards = sorted(corpus.glob("*.parquet"))  # the training glob; 5 % of the patients, at least one, held out
    assert [shard.name for shard in shards] == ["shard-00000-of-00002.parquet", "shard-00001-of-00002.parquet"]
    assert pq.read_schema(shards[0]).names == ["patient_id", "source", "feature", "value", "time"]  # no label column
    held_out = sorted(corpus.glob("validation/*.parquet"))
    trained = {row["patient_id"]: row for row in streaming_patients([str(shard) for shard in shards], seed=0)}
    patients = {**trained, **{row["patient_id"]: row for row in streaming_patients([str(held_out[0])], seed=0)}}
    assert len(trained) == 3 and len(patients) == 4  # each patient in one piece only
    assert sorted(patients) == ["p12:132539", "p19:p000001", "p19:p000002", "p19:p100001"]
    stay = load_physionet2012(p12).filter(lambda record: record == 132539, input_columns="record_id")[0]
    assert (patients["p12:132539"]["feature"], patients["p12:132539"]["value"]) == (stay["feature"], stay["value"])
    record = json.loads((corpus / "corpus.json").read_text())
    assert record["sources"]["p19"]["patients"] == 3 and record["sources"]["p12"]["patients"] == 1
    assert record["sources"]["p12"]["events"] == len(stay["feature"])
    assert record["sources"]["p12"]["features"] == sorted(set(stay["feature"]))  # for the card's coverage per source
    assert record["p12_validation_and_test_stays_excluded"] == 2
    assert record["validation"] == {"patients": 1, "shards": ["validation/shard-00000-of-00001.parquet"]}
    assert "Attribution 4.0" in record["sources"]["p19"]["license"]

    # pretraining on the shards describes them for its cards from corpus.json (test_recipes_pretrain streams shards)
    described = streamed_cohort(Namespace(data_description=None), [str(shard) for shard in shards])
    assert described.description == record["description"]
    assert ("Creative Commons Attribution 4.0" in described.license
            and "Open Data Commons Attribution" in described.license)
    assert "Reyna MA" in described.citation and "Silva I" in described.citation
    with pytest.raises(SystemExit, match="needs --data_description"):  # shards of no known corpus
        streamed_cohort(Namespace(data_description=None), [str(tmp_path / "elsewhere" / "shard.parquet")])

    with pytest.raises(SystemExit):  # P12 alone is no public corpus: the error says what is missing
        recipe.main(["--p12_dir", str(p12), "--output_dir", str(tmp_path / "p12-only")])
    assert "the public corpus needs --p19_dir" in capsys.readouterr().err
    # without --p12_dir, P19 alone: a base that never saw a P12 stay, as one downloaded from elsewhere would be
    recipe.main(["--p19_dir", str(p19), "--output_dir", str(tmp_path / "p19-only")])
    alone = json.loads((tmp_path / "p19-only" / "corpus.json").read_text())
    assert list(alone["sources"]) == ["p19"] and alone["sources"]["p19"]["patients"] == 3
    assert "2012" not in alone["description"] and "p12_validation_and_test_stays_excluded" not in alone
    assert "Open Data Commons" not in streamed_cohort(
        Namespace(data_description=None), [str(path) for path in (tmp_path / "p19-only").glob("*.parquet")]).license


def test_a_hospitals_export_becomes_shards_with_commands_only(tmp_path, monkeypatch):
    """`--dataset long-format`: the export's patients, each in exactly one shard, with the events the loader kept
    (items mapped, units converted), no label column although the labels table has one, and a corpus.json that
    pretraining cards the base from."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    flags = write_export(tmp_path)
    recipe = load_script("recipes/make_pretraining_corpus.py")
    corpus = tmp_path / "corpus"
    recipe.main(["--dataset", "long-format", *flags, "--data_description", "St Elsewhere ICU, 2015-2024",
                 "--source_name", "stelsewhere", "--output_dir", str(corpus), "--patients_per_shard", "3",
                 "--validation_fraction", "0"])

    shards = sorted(corpus.glob("*.parquet"))
    assert len(shards) == 3 and pq.read_schema(shards[0]).names == ["patient_id", "source", "feature", "value", "time"]
    rows = [row for shard in shards for row in pq.read_table(shard).to_pylist()]
    assert sorted(row["patient_id"] for row in rows) == [f"stelsewhere:s{i}" for i in range(7)]  # each once
    assert not (corpus / "validation").exists()  # --validation_fraction 0 holds none out
    assert "validation" not in json.loads((corpus / "corpus.json").read_text())
    for shard in shards:  # a corpus whose held-out piece is still there: refused before anything is written
        shard.unlink()
    (corpus / "validation").mkdir()
    (corpus / "validation" / "shard-00000-of-00001.parquet").write_bytes(b"")
    with pytest.raises(FileExistsError, match="validation already holds 1 shards"):
        recipe.main(["--dataset", "long-format", *flags, "--data_description", "St Elsewhere ICU, 2015-2024",
                     "--output_dir", str(corpus)])
    assert not list(corpus.glob("*.parquet"))
    loaded = load_long_format(tmp_path / "export.csv", columns={"patient_id": "stay", "time": "hours",
                                                                "feature": "item", "value": "value"},
                              feature_map={"220045": "heart_rate", "223761": "temperature"},
                              unit_conversions={"temperature": {"°F": (5 / 9, -160 / 9), "into": "°C"}})
    first = next(row for row in rows if row["patient_id"] == "stelsewhere:s0")
    assert first["feature"] == loaded[0]["feature"] and first["value"] == pytest.approx(loaded[0]["value"])
    assert first["value"][1] == pytest.approx(37.0)  # 98.6 °F in the catalogue's °C
    record = json.loads((corpus / "corpus.json").read_text())
    assert record["description"] == "St Elsewhere ICU, 2015-2024"
    assert record["sources"]["stelsewhere"]["patients"] == 7 and record["sources"]["stelsewhere"]["events"] == 60
    described = streamed_cohort(Namespace(data_description=None), [str(s) for s in shards])
    assert described.license.startswith("private")
    # the units the values are in, as read and converted: what the base's vocabulary records
    assert record["sources"]["stelsewhere"]["units"] == described.units == {"heart_rate": "bpm", "temperature": "°C"}


def test_an_exports_validation_and_test_patients_stay_out_of_its_corpus_given_the_split_file(tmp_path, monkeypatch):
    """Fine-tuned from a base pretrained on the corpus, a model must be scored on stays the base never saw."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    flags = write_export(tmp_path)
    split = {"train": ["s0", "s1", "s2", "s3"], "validation": ["s4"], "test": ["s5", "s6", "s99"]}  # s99: no events
    save_split(split, tmp_path / "split.json")
    corpus = tmp_path / "corpus"
    load_script("recipes/make_pretraining_corpus.py").main([
        "--dataset", "long-format", *flags, "--data_description", "St Elsewhere ICU", "--source_name", "stelsewhere",
        "--split_file", str(tmp_path / "split.json"), "--output_dir", str(corpus), "--validation_fraction", "0"])
    rows = [row for shard in corpus.glob("*.parquet") for row in pq.read_table(shard).to_pylist()]
    assert sorted(row["patient_id"] for row in rows) == [f"stelsewhere:s{i}" for i in range(4)]
    record = json.loads((corpus / "corpus.json").read_text())
    assert record["sources"]["stelsewhere"]["patients"] == 4
    assert record["export_validation_and_test_patients_excluded"] == 3


def test_the_public_corpus_takes_a_hospitals_export_beside_it_so_the_base_sees_its_stays(tmp_path, monkeypatch,
                                                                                          capsys):
    """What bought the released base's lead at 77 labelled stays: a corpus that held the hospital's own unlabelled
    stays. One corpus, shuffled together, each source with its terms, P12's held-out stays still checked absent."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    (p12, p19), flags, corpus = write_public_releases(tmp_path), write_export(tmp_path), tmp_path / "corpus"
    recipe = load_script("recipes/make_pretraining_corpus.py")
    recipe.main(["--p19_dir", str(p19), "--p12_dir", str(p12), *flags, "--source_name", "stelsewhere",
                 "--data_description", "St Elsewhere ICU, 2015-2024", "--output_dir", str(corpus)])

    shards = [str(path) for path in sorted(corpus.glob("**/*.parquet"))]
    patients = sorted(row["patient_id"] for row in streaming_patients(shards, seed=0))
    assert patients == sorted(["p12:132539", "p19:p000001", "p19:p000002", "p19:p100001",
                               *(f"stelsewhere:s{i}" for i in range(7))])  # each once, held-out P12 stays absent
    record = json.loads((corpus / "corpus.json").read_text())
    assert list(record["sources"]) == ["p19", "p12", "stelsewhere"]
    assert record["sources"]["stelsewhere"]["events"] == 60
    assert record["p12_validation_and_test_stays_excluded"] == 2
    described = streamed_cohort(Namespace(data_description=None), [str(path) for path in corpus.glob("*.parquet")])
    assert "PhysioNet 2019" in described.description and "St Elsewhere ICU, 2015-2024" in described.description
    assert "Attribution 4.0" in described.license and "private: not for redistribution" in described.license
    assert described.units["temperature"] == "°C" and described.units["heart_rate"] == "bpm"
    assert described.units["sodium"] == "mmol/L"  # a public source's feature, in the catalogue's unit

    described = ["--data_description", "x"]
    for refused, message in (([*flags, "--source_name", "p12", *described], "is a public source's name"),
                             (flags, "--events needs --data_description"),
                             (flags[2:], "given without --events"),  # --labels, --feature_map, ... alone
                             (described, "given without --events")):
        with pytest.raises(SystemExit):
            recipe.main(["--p19_dir", str(tmp_path / "absent"), *refused, "--output_dir", str(tmp_path / "refused")])
        assert message in capsys.readouterr().err  # refused before P19 is read: the folder is not even there
    assert not (tmp_path / "refused").exists()


def test_an_export_without_units_joins_the_public_corpus_only_when_its_owner_vouches_for_them(tmp_path, monkeypatch,
                                                                                              capsys):
    """The public sources' values are in the catalogue's units, and one base's statistics are fitted on all of them:
    an export whose heart rate and temperature come without units (a temperature in °F would pass unseen) must say
    that they are in the catalogue's units; alone, it keeps its own, and its base claims none it never read."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    (p12, p19), flags = write_public_releases(tmp_path), write_export(tmp_path)
    flags[flags.index("--unit_conversions") + 1] = str(tmp_path / "no-conversions.json")
    (tmp_path / "no-conversions.json").write_text("{}")
    pd.read_csv(tmp_path / "export.csv").drop(columns="unit").assign(value=lambda rows: rows["value"].where(
        rows["item"] != 223761, 37.0)).to_csv(tmp_path / "export.csv", index=False)
    recipe = load_script("recipes/make_pretraining_corpus.py")
    export = [*flags, "--source_name", "stelsewhere", "--data_description", "St Elsewhere ICU"]
    with pytest.raises(ValueError, match=r"St Elsewhere ICU gives no unit for 2 of the public corpus's features.*"
                                         r"heart_rate \(bpm\), temperature \(°C\).*--assume_catalogue_units"):
        recipe.main(["--p19_dir", str(p19), "--p12_dir", str(p12), *export, "--output_dir", str(tmp_path / "no")])
    assert not (tmp_path / "no").exists()
    recipe.main(["--p19_dir", str(p19), "--p12_dir", str(p12), *export, "--assume_catalogue_units",
                 "--output_dir", str(tmp_path / "vouched")])
    record = json.loads((tmp_path / "vouched" / "corpus.json").read_text())
    assert record["sources"]["stelsewhere"]["units"] == {"heart_rate": "bpm", "temperature": "°C"}
    recipe.main(["--dataset", "long-format", *export, "--output_dir", str(tmp_path / "alone")])
    alone = streamed_cohort(Namespace(data_description=None), [str(p) for p in (tmp_path / "alone").glob("*.parquet")])
    assert alone.units == {}  # read none: the base's vocabulary will claim none
    with pytest.raises(SystemExit):
        recipe.main(["--dataset", "long-format", *export, "--assume_catalogue_units", "--output_dir", str(tmp_path)])
    assert "--assume_catalogue_units vouches for an export that joins the public corpus" in capsys.readouterr().err


@pytest.mark.parametrize(("patients", "fraction", "held_out"),
                         [(48_007, 0.05, 2_400), (4, 0.05, 1), (3, 0.9, 2), (1, 0.5, 0), (10, 0.0, 0)])
def test_a_corpus_holds_out_its_share_at_least_one_and_never_every_patient(patients, fraction, held_out):
    assert held_out_count(patients, fraction) == held_out


def test_a_share_to_hold_out_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\), got 1.0"):
        held_out_count(100, 1.0)
