"""The P12 table driver: it must resume (skip cells already measured) and summarise seeds honestly."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script
from safetensors.torch import load_file, save_file

from medfuse_hf import MedFuseModel, MedFuseTokenizer
from medfuse_hf.data import MedFuseDataCollator
from medfuse_hf.training.checkpointing import recorded_settings
from medfuse_hf.training.cohorts import load_cohort
from medfuse_hf.training.runs import ResultRows

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def p12_table():
    return load_script("benchmarks/p12_table.py")


def row(model: str, protocol: str, seed: int, auprc: float) -> dict:
    return {"model": model, "protocol": protocol, "seed": seed, "auroc": 0.8, "auprc": auprc, "accuracy": 0.8,
            "epochs": 3, "train_seconds": 10.0, "device": "cpu", "test_patients": 10, "git": "abc"}


def test_only_missing_cells_run_and_every_finished_cell_is_saved(p12_table, tmp_path, monkeypatch):
    results = tmp_path / "p12_table.json"
    results.write_text(json.dumps([row("medfuse", "seft-split", 0, 0.5)]))
    ran = []

    def fake_cell(model, protocol, seed, args):
        ran.append((model, protocol, seed))
        return row(model, protocol, seed, 0.4)

    monkeypatch.setattr(p12_table, "run_cell", fake_cell)
    monkeypatch.setattr(sys, "argv", ["p12_table.py", "--seeds", "0", "1", "--protocols", "seft-split",
                                      "--models", "medfuse", "additive", "--results", str(results),
                                      "--output_dir", str(tmp_path / "runs")])
    p12_table.main()
    assert ran == [("additive", "seft-split", 0), ("medfuse", "seft-split", 1), ("additive", "seft-split", 1)]
    saved = json.loads(results.read_text())
    assert len(saved) == 4 and saved[0]["auprc"] == 0.5  # the earlier row is kept, not rerun


def test_a_fine_tuning_row_names_the_weights_it_started_from_as_the_run_recorded_them(p12_table, tmp_path):
    """A base moves when it is released, and may be pretrained again in place: a row names the weights its run read,
    by hash. LP-FT's second stage starts from its probe, whose own run read the base."""
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "model.safetensors").write_bytes(b"the base's weights")
    digest = load_script("benchmarks/protocol.py").weights_digest(tmp_path / "base")

    def run_info(run_dir: Path, init_from: Path | None) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        settings = recorded_settings(argparse.Namespace(init_from=init_from and str(init_from), seed=0))
        (run_dir / "run_info.json").write_text(json.dumps({"config": settings}))

    run_info(tmp_path / "full", tmp_path / "base")
    run_info(tmp_path / "lp-ft" / "probe", tmp_path / "base")  # the probe first, then everything from its model
    (tmp_path / "lp-ft" / "probe" / "model").mkdir()
    (tmp_path / "lp-ft" / "probe" / "model" / "model.safetensors").write_bytes(b"the probe's weights")
    run_info(tmp_path / "lp-ft", tmp_path / "lp-ft" / "probe" / "model")
    run_info(tmp_path / "scratch", None)
    (tmp_path / "base" / "model.safetensors").write_bytes(b"pretrained again in place")  # after the runs began
    assert p12_table.started_from(tmp_path / "full") == {"init_weights": digest}
    assert p12_table.started_from(tmp_path / "lp-ft") == {"init_weights": digest}
    assert p12_table.started_from(tmp_path / "scratch") == {}


def test_a_baseline_whose_predictions_are_gone_is_fitted_again_and_must_reproduce_its_row(p12_table, tmp_path,
                                                                                           monkeypatch):
    """A wiped machine keeps the rows but not the GBM's predictions, which the paired gaps need: the seeded fit is
    run again at the setting its row chose and kept only if it gives the recorded figures, never paired as if it
    were the recorded run."""
    refits = []
    chosen = {"statistics": "all", "learning_rate": 0.1, "max_leaf_nodes": 15, "l2_regularization": 1.0}

    def refit(model, protocol, seed, args, fit):
        assert fit.keywords["settings"] == (chosen,)  # the row's choice alone, not the grid
        refits.append(seed)
        run_dir = args.output_dir / f"{protocol}-{model}-seed{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "test_predictions.csv").write_text("record_id,label,score\n1,1,0.9\n")
        return {**row(model, protocol, seed, 0.5 if seed < 2 else 0.49),  # seed 2: the code changed since its row
                "settings": {**chosen, "iterations": 228}}

    monkeypatch.setattr(p12_table, "run_baseline", refit)
    args = argparse.Namespace(output_dir=tmp_path)
    rows = [{**row("gbm_summary", "seft-split", seed, 0.5), "settings": {**chosen, "iterations": 228}}
            for seed in range(3)] + [row("medfuse", "seft-split", 0, 0.5)]
    (tmp_path / "seft-split-gbm_summary-seed1").mkdir()
    (tmp_path / "seft-split-gbm_summary-seed1" / "test_predictions.csv").write_text("kept")
    cells = [{"model": model, "protocol": "seft-split", "seed": seed} for model in ("gbm_summary", "medfuse")
             for seed in (0, 1)]
    p12_table.restore_baseline_predictions(rows, cells, args)
    assert refits == [0]  # seed 1's predictions are here; seed 2 was not asked for; MedFuse is never refitted
    assert (tmp_path / "seft-split-gbm_summary-seed1" / "test_predictions.csv").read_text() == "kept"
    with pytest.raises(SystemExit, match=r"seft-split-gbm_summary-seed2: fitted again, its test \['auprc'\] are "
                                         r"\[0.49\], recorded \[0.5\] \(at abc\)"):
        p12_table.restore_baseline_predictions(rows, [{"model": "gbm_summary", "protocol": "seft-split", "seed": 2}],
                                               args)
    assert not (tmp_path / "seft-split-gbm_summary-seed2" / "test_predictions.csv").exists()


def test_summary_is_mean_and_sample_std_over_seeds(p12_table):
    rows = [row("medfuse", "seft-split", seed, auprc) for seed, auprc in enumerate((0.50, 0.52, 0.54))]
    table = p12_table.summarise(rows + [row("scane", "seft-split", 0, 0.3)])
    assert "| seft-split | medfuse | 3 | 0.8000 (same on every seed) | 0.5200 ± 0.0200 |" in table  # as seeds agree
    assert "| seft-split | scane | 1 | 0.8000 | 0.3000 |" in table  # one seed: no spread claimed


def test_paired_gaps_match_patients_by_id_across_old_and_new_prediction_files(p12_table, tmp_path):
    ids, labels = range(100, 140), [1, 0, 0, 0] * 10
    # ".0" and `score`: files before ids were kept, and before the risk was named `probability`
    for model, id_format, order, risk in (("medfuse", "{}", 1, "probability"), ("additive", "{}.0", -1, "score")):
        run = tmp_path / f"seft-split-{model}-seed0"
        run.mkdir()
        lines = [id_format.format(i) + f",{label},{label}" for i, label in zip(ids, labels)][::order]  # both perfect
        (run / "test_predictions.csv").write_text(f"record_id,label,{risk}\n" + "\n".join(lines) + "\n")
    rows = [row("medfuse", "seft-split", 0, 1.0), row("additive", "seft-split", 0, 1.0)]
    (gap,) = p12_table.paired_gaps(rows, tmp_path)
    # rows in another order
    assert ((gap["model"], gap["versus"]) == ("medfuse", "additive")
            and gap["auroc"]["value"] == gap["auprc"]["value"] == 0.0)
    assert p12_table.paired_gaps(rows[:1], tmp_path) == []  # additive's predictions exist, its run has not finished
    additive = tmp_path / "seft-split-additive-seed0" / "test_predictions.csv"
    additive.write_text("\n".join(additive.read_text().splitlines()[:-1]) + "\n")  # one test patient fewer
    with pytest.raises(SystemExit, match=r"scored other test patients \(1 in one only, e\.g\. \['100'\]\)"):
        p12_table.paired_gaps(rows, tmp_path)


def test_gaps_whose_predictions_are_not_here_are_kept_as_recorded_while_their_rows_stand(p12_table, capsys):
    def row(model: str, seed: int, auprc: float) -> dict:
        return {"protocol": "seft-split", "model": model, "seed": seed, "auprc": auprc, "auroc": 0.8}

    def gap(seed: int, auprc: float) -> dict:
        return {"protocol": "seft-split", "seed": seed, "model": "medfuse", "versus": "additive",
                "auprc": {"value": auprc}, "auroc": {"value": 0.0}}

    rows = [row("medfuse", 0, 0.5), row("additive", 0, 0.4), row("medfuse", 1, 0.6), row("additive", 1, 0.4),
            row("medfuse", 2, 0.55), row("additive", 2, 0.5)]
    recorded = [gap(0, 0.5 - 0.4), gap(1, 0.6 - 0.4), gap(2, 0.01)]  # seed 2's rows were run again since
    computed = [gap(1, 0.6 - 0.4)]
    merged = p12_table.merged_gaps(recorded, computed, rows)
    assert [(gap["seed"], gap["auprc"]["value"]) for gap in merged] == [(0, 0.5 - 0.4), (1, 0.6 - 0.4)]
    assert "medfuse − additive (seft-split, seed 2) dropped: its rows were run again" in capsys.readouterr().out


def test_a_ledger_holds_one_set_of_extra_args(p12_table, tmp_path):
    """A cell finished under --mixed_precision bf16 would be skipped by a run without it and averaged with its rows."""
    refuse_other_extra_args = p12_table.refuse_other_extra_args
    rows = [{"model": "medfuse", "seed": 0}, {"model": "medfuse", "seed": 1, "extra_args": "--mixed_precision bf16"}]
    refuse_other_extra_args(rows[:1], "", tmp_path / "rows.json")
    refuse_other_extra_args(rows[1:], "--mixed_precision bf16", tmp_path / "rows.json")
    with pytest.raises(SystemExit, match=r"rows.json holds rows run with other --extra_args \(\['--mixed_precision "
                                         r"bf16'\]\) than these \(''\)"):
        refuse_other_extra_args(rows, "", tmp_path / "rows.json")


def test_label_efficiency_runs_the_missing_cells_smallest_first_and_pairs_gains_by_seed(tmp_path, monkeypatch):
    label_efficiency = load_script("benchmarks/label_efficiency.py")
    results = tmp_path / "rows.json"
    auprc = {"scratch": 0.30, "pretrained": 0.40, "pretrained_lpft": 0.42, "pretrained_lpft_new_features": 0.43,
             "pretrained_embeddings": 0.35, "pretrained_probe": 0.38, "gbm": 0.45, "gbm_with_base": 0.47,
             "pretrained_head": 0.39}

    def cell_row(arm, fraction, seed, validation):
        return {"arm": arm, "fraction": fraction, "seed": seed, "validation": validation,
                "train_patients": int(7700 * fraction), "auroc": 0.8, "auprc": auprc[arm] + 0.01 * seed,
                "train_seconds": 1.0, "git": "abc"}

    results.write_text(json.dumps([cell_row("gbm", 0.01, 0, "full")]))
    ran = []
    monkeypatch.setattr(label_efficiency, "run_cell", lambda *cell: ran.append(cell[:4]) or cell_row(*cell[:4]))
    for folder in ("model", "feature_embeddings"):
        (tmp_path / "base" / folder).mkdir(parents=True)
    monkeypatch.setattr(sys, "argv", ["label_efficiency.py", "--base", str(tmp_path / "base"),
                                      "--fractions", "0.1", "0.01", "--cut_validation_fractions", "0.01",
                                      "--seeds", "0", "1", "--results", str(results)])
    label_efficiency.main()
    assert ran[0] == ("scratch", 0.01, 0, "full") and ("gbm", 0.01, 0, "full") not in ran  # already there
    assert len(ran) == 8 * 2 * 3 - 1 and ran[-1] == ("gbm_with_base", 0.1, 1, "full")  # 0.01 twice, 0.1 once
    lpft = ran.index(("pretrained_lpft", 0.01, 1, "cut"))
    assert ran[lpft + 1] == ("pretrained_head", 0.01, 1, "cut")  # its first stage is there to be taken
    assert not any(cell[0] == "pretrained_lpft_new_features" for cell in ran)  # not by default: asked for below
    gains = (tmp_path / "gains.md").read_text()  # every arm started from the base, against scratch and the GBM
    assert ("| full | 0.01 | pretrained | scratch | 2 | +0.0000, +0.0000 "
            "| +0.1000, +0.1000 | +0.1000 (same on every seed) |" in gains)
    assert ("| cut | 0.01 | pretrained | gbm | 2 | +0.0000, +0.0000 "
            "| -0.0500, -0.0500 | -0.0500 (same on every seed) |" in gains)
    assert ("| full | 0.1 | pretrained_probe | gbm | 2 | +0.0000, +0.0000 "
            "| -0.0700, -0.0700 | -0.0700 (same on every seed) |" in gains)
    assert ("| full | 0.1 | gbm_with_base | gbm | 2 | +0.0000, +0.0000 "
            "| +0.0200, +0.0200 | +0.0200 (same on every seed) |" in gains)
    assert ("| full | 0.01 | pretrained_lpft | gbm | 2 | +0.0000, +0.0000 "
            "| -0.0300, -0.0300 | -0.0300 (same on every seed) |" in gains)
    assert ("| full | 0.01 | pretrained_lpft | pretrained_probe | 2 | +0.0000, +0.0000 | +0.0400, +0.0400 | "
            "+0.0400 (same on every seed) |" in gains)
    assert ("| full | 0.01 | pretrained_lpft | pretrained_head | 2 | +0.0000, +0.0000 | +0.0300, +0.0300 | "
            "+0.0300 (same on every seed) |" in gains)
    assert (tmp_path / "label_efficiency.png").stat().st_size > 0
    assert ("| cut | gbm_with_base | 77 | 2 | 0.4750 | 77 (0.4550) – none measured | more than 1× |"
            in (tmp_path / "labels.md").read_text())
    goal = (tmp_path / "goal.md").read_text()  # the GBM with the base leads by 0.02; the GBM's std is 0.0071
    assert "| full | 0.1 | gbm_with_base | 2 | 0.4750 ± 0.0071 | gbm | 0.4550 ± 0.0071 | +0.0200 | yes |" in goal
    assert "| full | 0.1 | pretrained_lpft | 2 | 0.4250 ± 0.0071 | gbm | 0.4550 ± 0.0071 | -0.0300 | no |" in goal
    second = tmp_path / "second" / "rows.json"  # another experiment: a base that lacks some of P12's features
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--results", str(second), "--fractions", "0.1",
                                      "--arms", "pretrained_lpft", "pretrained_lpft_new_features"])
    label_efficiency.main()
    assert ran[-1] == ("pretrained_lpft_new_features", 0.1, 1, "full")
    assert ("| full | 0.1 | pretrained_lpft_new_features | pretrained_lpft | 2 | +0.0000, +0.0000 | +0.0100, +0.0100 "
            "| +0.0100 (same on every seed) |" in (second.parent / "gains.md").read_text())


def test_label_efficiency_goal_reads_each_arm_on_the_subsets_it_shares_with_the_gbm_and_scratch():
    label_efficiency = load_script("benchmarks/label_efficiency.py")
    rows = [{"arm": arm, "fraction": 0.01, "seed": seed, "validation": "full", "auprc": auprc}
            for arm, auprcs in (("gbm", (0.30, 0.40, 0.20)), ("scratch", (0.25, 0.25, 0.90)),
                                ("pretrained_lpft", (0.40, 0.44)), ("pretrained_probe", (0.41, 0.42, 0.40)))
            for seed, auprc in enumerate(auprcs)]
    goal = label_efficiency.goal_check(rows)  # LP-FT's 0.42 is read against the GBM's 0.35 ± 0.0707 on seeds 0-1
    assert ("| full | 0.01 | pretrained_lpft | 2 | 0.4200 ± 0.0283 | gbm | 0.3500 ± 0.0707 | +0.0700 "
            "| no | 0.2500 (same on every seed) "
            "| yes |" in goal)
    # the probe, on all three subsets, is not outranked by LP-FT's higher mean over two: each arm has its line
    assert ("| full | 0.01 | pretrained_probe | 3 | 0.4100 ± 0.0100 | gbm | 0.3000 ± 0.1000 | +0.1100 | yes | 0.4667"
            in goal)
    one_subset = label_efficiency.goal_check([{**row, "validation": "cut"} for row in rows if row["seed"] == 2])
    assert ("| cut | 0.01 | pretrained_probe | 1 | 0.4000 | gbm | 0.2000 | +0.2000 | one subset: no std | 0.9000 "
            "| no |" in one_subset)
    # where the GBM with a floor of iterations was run, the arms are measured against it
    floored = rows + [{"arm": "gbm_min_iterations", "fraction": 0.01, "seed": seed, "validation": "full",
                       "auprc": auprc} for seed, auprc in enumerate((0.38, 0.40, 0.36))]
    assert ("| full | 0.01 | pretrained_probe | 3 | 0.4100 ± 0.0100 | gbm_min_iterations | 0.3800 ± 0.0200 | +0.0300 "
            "| yes |" in label_efficiency.goal_check(floored))


def test_label_efficiency_says_how_many_labels_the_gbm_needs_to_reach_each_arm():
    label_efficiency = load_script("benchmarks/label_efficiency.py")
    stays = {0.01: 77, 0.05: 384, 0.1: 767}
    rows = [{"arm": arm, "fraction": fraction, "seed": seed, "validation": "full", "auprc": auprc,
             "train_patients": stays[fraction]}
            for arm, fraction, auprcs in (("gbm", 0.01, (0.30, 0.32)), ("gbm_min_iterations", 0.01, (0.33, 0.35)),
                                          ("gbm", 0.05, (0.40, 0.40, 0.10)), ("gbm", 0.1, (0.50, 0.50)),
                                          ("pretrained_lpft", 0.01, (0.42, 0.38)), ("pretrained_lpft", 0.1, (0.6,)),
                                          ("pretrained", 0.01, (0.30, 0.30)))
            for seed, auprc in enumerate(auprcs)]
    labels = label_efficiency.labels_the_gbm_needs(rows)
    # the GBM's 0.40 at 384 stays is on LP-FT's two subsets (its third, 0.10, is not LP-FT's), so the estimate lands
    # on 384; the GBM with the floor (0.34) is the one at 77 stays
    assert "| full | pretrained_lpft | 77 | 2 | 0.4000 | 384 (0.4000) – 767 (0.5000) | 5× to 10×, about 5× |" in labels
    # above the GBM's last point only a lower bound; below its first only an upper one
    assert "| full | pretrained_lpft | 767 | 1 | 0.6000 | 767 (0.5000) – none measured | more than 1× |" in labels
    assert "| full | pretrained | 77 | 2 | 0.3000 | none measured – 77 (0.3400) | fewer than 1× |" in labels
    halfway = label_efficiency.label_multiple(0.45, 77, (384, 0.40), (767, 0.50))
    assert halfway == f"5× to 10×, about {(384 * 767) ** 0.5 / 77:.2g}×"  # halfway in AUPRC: the geometric mean
    # a GBM curve that dips: the bracket is where it first passes the arm, not its last point below it
    dipping = [{**row, "auprc": {384: 0.45, 767: 0.38}.get(row["train_patients"], row["auprc"])}
               for row in rows if row["arm"] in ("gbm", "gbm_min_iterations") or row["fraction"] == 0.01]
    assert ("| full | pretrained_lpft | 77 | 2 | 0.4000 | 77 (0.3400) – 384 (0.4500) |"
            in label_efficiency.labels_the_gbm_needs(dipping))


def test_label_efficiency_keeps_one_model_and_one_base_per_results_file(tmp_path):
    """A rerun with the second base into the first base's file would take the old cells as finished and skip them."""
    label_efficiency = load_script("benchmarks/label_efficiency.py")
    (tmp_path / "base" / "model").mkdir(parents=True)
    (tmp_path / "base" / "model" / "model.safetensors").write_bytes(b"new weights")
    args = argparse.Namespace(base=tmp_path / "base", model="medfuse_round_two", results=tmp_path / "rows.json")
    digest = label_efficiency.weights_digest(args.base / "model")
    row = {"arm": "pretrained", "fraction": 0.01, "seed": 0, "model": "medfuse_round_two", "base": digest}
    scratch = {key: value for key, value in row.items() if key != "base"} | {"arm": "scratch"}  # no base to record
    first_gbm = {"arm": "gbm", "fraction": 0.01, "seed": 0}  # no model, no base: the same in every experiment
    label_efficiency.refuse_other_experiments([row, scratch, first_gbm], args)
    for other in ({"base": "0123456789ab"}, {"model": "medfuse_cve_time"}):
        with pytest.raises(SystemExit, match="give --results and --output_dir of its own"):
            label_efficiency.refuse_other_experiments([{**row, **other}], args)
    first_base_row = {key: value for key, value in row.items() if key not in ("model", "base")}  # before either
    with pytest.raises(SystemExit, match="holds rows of --model medfuse_cve_time from base weights 918841b9fea1"):
        label_efficiency.refuse_other_experiments([first_base_row], args)
    args.model = "medfuse_cve_time"  # the first base's model with the second base: its rows are another base's
    with pytest.raises(SystemExit, match=f"from base weights 918841b9fea1 .* this is --model medfuse_cve_time from "
                                         f"{digest}"):
        label_efficiency.refuse_other_experiments([first_base_row], args)


def test_label_efficiency_takes_scratch_on_every_stay_from_the_p12_tables_run_of_the_same_model(tmp_path):
    label_efficiency = load_script("benchmarks/label_efficiency.py")
    table = tmp_path / "p12_table.json"
    run = {"protocol": "seft-split", "seed": 1, "auroc": 0.87, "auprc": 0.55, "train_seconds": 4000.0, "git": "abc"}
    table.write_text(json.dumps([{**run, "model": "medfuse_cve_time", "auprc": 0.53},
                                 {**run, "model": "medfuse_round_two"},
                                 {**run, "model": "medfuse_round_two", "protocol": "set-a-test", "auprc": 0.6}]))
    taken = label_efficiency.table_run("scratch", 1.0, 1, "full", "medfuse_round_two", table)
    assert (taken["auprc"], taken["git"]) == (0.55, "abc") and "model medfuse_round_two" in taken["source"]
    for other in (("pretrained", 1.0, 1, "full"), ("scratch", 0.25, 1, "full"), ("scratch", 1.0, 2, "full")):
        assert label_efficiency.table_run(*other, "medfuse_round_two", table) == {}  # trained as usual


def test_label_efficiency_takes_the_bases_fine_tunings_on_every_stay_from_the_searchs_lever_five(tmp_path):
    """The search's rows name the base by its weights, so they are found wherever the base now lies (released)."""
    label_efficiency = load_script("benchmarks/label_efficiency.py")
    (tmp_path / "released" / "model").mkdir(parents=True)
    (tmp_path / "released" / "model" / "model.safetensors").write_bytes(b"the second base")
    digest = label_efficiency.weights_digest(tmp_path / "released" / "model")
    ledger = tmp_path / "p12_search.json"
    run = {"configuration": label_efficiency.SEARCH_RUNS["medfuse_round_two"]["pretrained_lpft"], "seed": 1,
           "protocol": "seft-split", "auroc": 0.87, "auprc": 0.56, "train_seconds": 2000.0, "git": "abc",
           "flags": "--pooling per_feature --init_from /where/it/was/trained/model --strategy lp-ft",
           "init_weights": digest}
    ledger.write_text(json.dumps([run, {**run, "seed": 2, "init_weights": "0123456789ab"}]))
    taken = label_efficiency.search_run("pretrained_lpft", 1.0, 1, "full", "medfuse_round_two", tmp_path / "released",
                                        ledger)
    assert (taken["auprc"], taken["git"]) == (0.56, "abc") and "in_domain_lpft" in taken["source"]
    for other in (("pretrained", 1.0, 1, "full", "medfuse_round_two"), ("pretrained_lpft", 0.25, 1, "full",
                  "medfuse_round_two"), ("pretrained_lpft", 1.0, 2, "full", "medfuse_round_two"),
                  ("pretrained_lpft", 1.0, 1, "full", "medfuse_cve_time")):
        assert label_efficiency.search_run(*other, tmp_path / "released", ledger) == {}  # trained as usual


def test_label_efficiency_takes_the_recipes_probe_from_lp_fts_first_stage_run_under_the_same_settings(tmp_path):
    label_efficiency = load_script("benchmarks/label_efficiency.py")
    base = tmp_path / "base"
    (base / "model").mkdir(parents=True)
    for name, text in (("model.safetensors", "the base"), ("config.json", "{}"), ("preprocessor_config.json", "{}")):
        (base / "model" / name).write_text(text)
    args = argparse.Namespace(data_dir=tmp_path / "p12", model="medfuse_round_two", base=base)
    flags = label_efficiency.cell_flags("pretrained_head", 0.01, 3, "cut", args)
    stage = tmp_path / "runs" / "pretrained_lpft-f0.01-s3-cut-validation" / "probe"
    stage.mkdir(parents=True)
    (stage / "test_metrics.json").write_text(json.dumps(
        {"test": {"auroc": {"value": 0.81}, "auprc": {"value": 0.44}}, "train_seconds": 48.1,
         "git": {"commit": "abc"}}))
    probe_args = load_script("recipes/finetune.py").build_parser().parse_args([*flags, "--output_dir", str(stage)])
    recorded = recorded_settings(probe_args)  # as LP-FT records its first stage: the head's flags, its own folder

    def taken(*cell, settings=recorded):
        (stage / "run_info.json").write_text(json.dumps({"config": settings}))
        return label_efficiency.lpft_first_stage(*cell, flags, tmp_path / "runs")

    adopted = taken("pretrained_head", 0.01, 3, "cut")
    assert (adopted["auroc"], adopted["auprc"], adopted["train_seconds"], adopted["git"]) == (0.81, 0.44, 48.1, "abc")
    assert "pretrained_lpft-f0.01-s3-cut-validation/probe" in adopted["source"]
    for other in (("pretrained_lpft", 0.01, 3, "cut"), ("pretrained_head", 0.01, 4, "cut")):
        assert taken(*other) == {}  # trained as usual
    assert taken("pretrained_head", 0.01, 3, "cut", settings={**recorded, "pooling": "mean"}) == {}  # another model
    (base / "model" / "model.safetensors").write_bytes(b"another base, pretrained again in place")
    assert taken("pretrained_head", 0.01, 3, "cut") == {}


def test_label_efficiency_pairs_a_second_base_with_the_scratch_and_gbm_cells_another_base_already_has(tmp_path):
    """Scratch and the GBM read no base: the same cells of another base's experiment are taken, with their source,
    and only for the same model where a model is trained; cells from a base are never taken."""
    label_efficiency = load_script("benchmarks/label_efficiency.py")
    experiment = tmp_path / "medfuse_round_two" / "p12_label_efficiency.json"
    experiment.parent.mkdir()
    cell = {"fraction": 0.01, "seed": 3, "validation": "full", "model": "medfuse_round_two", "auroc": 0.7,
            "train_seconds": 100.0, "git": "abc"}
    experiment.write_text(json.dumps([{**cell, "arm": "scratch", "auprc": 0.30},
                                      {**cell, "arm": "gbm", "auprc": 0.31, "settings": {"max_leaf_nodes": 7}},
                                      {**cell, "arm": "pretrained_lpft", "auprc": 0.42, "base": "0123456789ab"}]))
    scratch = label_efficiency.shared_run("scratch", 0.01, 3, "full", "medfuse_round_two", experiment)
    assert scratch["auprc"] == 0.30 and scratch["source"] == "p12_label_efficiency.json of medfuse_round_two"
    gbm = label_efficiency.shared_run("gbm", 0.01, 3, "full", "medfuse_cve_time", experiment)  # it trains no model
    assert (gbm["auprc"], gbm["settings"]) == (0.31, {"max_leaf_nodes": 7})
    for other in (("scratch", 0.01, 3, "full", "medfuse_cve_time"), ("scratch", 0.01, 4, "full", "medfuse_round_two"),
                  ("scratch", 0.01, 3, "cut", "medfuse_round_two"),
                  ("pretrained_lpft", 0.01, 3, "full", "medfuse_round_two")):
        assert label_efficiency.shared_run(*other, experiment) == {}  # trained as usual
    assert label_efficiency.shared_run("scratch", 0.01, 3, "full", "medfuse_round_two", None) == {}


def test_label_efficiency_draws_more_subsets_where_one_subset_moves_the_result_most():
    label_efficiency = load_script("benchmarks/label_efficiency.py")
    args = argparse.Namespace(fractions=[1.0, 0.05, 0.01, 0.1], cut_validation_fractions=[0.01], seeds=None,
                              arms=["scratch"])
    seeds = {}
    for _, fraction, seed, validation in label_efficiency.cells(args):
        seeds.setdefault((fraction, validation), []).append(seed)
    assert seeds == {(0.01, "full"): list(range(10)), (0.01, "cut"): list(range(10)), (0.05, "full"): list(range(5)),
                     (0.1, "full"): [0, 1, 2], (1.0, "full"): [0, 1, 2]}
    args.seeds = [7]  # one list for every fraction
    assert {seed for _, _, seed, _ in label_efficiency.cells(args)} == {7}
    args.arms = ["pretrained_head", "gbm", "pretrained_lpft"]  # LP-FT first: the head takes its first stage
    assert [arm for arm, *_ in label_efficiency.cells(args)][:3] == ["pretrained_lpft", "pretrained_head", "gbm"]


def test_the_search_composes_levers_and_judges_only_configurations_run_on_three_seeds():
    search = load_script("benchmarks/p12_search.py")
    assert search.configuration_flags("per_feature+quantile_values") == [
        "--pooling", "per_feature", "--value_normalization", "quantile"]
    assert search.configuration_flags("reference") == []
    with pytest.raises(argparse.ArgumentTypeError, match=r"unknown lever\(s\) \['gated'\]"):
        search.configuration_flags("per_feature+gated")

    def run(name, seed, validation_auprc, validation_auroc=0.85):
        return {"configuration": name, "seed": seed, "validation_auprc": validation_auprc,
                "validation_auroc": validation_auroc}

    rows = [run("reference", seed, auprc) for seed, auprc in enumerate([0.51, 0.52, 0.53])]
    rows += [run("per_feature", seed, auprc) for seed, auprc in enumerate([0.56, 0.50, 0.53])]
    rows += [run("lucky", 0, 0.70)]  # one seed is no verdict
    rows += [run("reference", 3, 0.90)]  # nor does a seed the others lack move a mean
    rows += [run("tied", seed, auprc, 0.80) for seed, auprc in enumerate([0.56, 0.50, 0.53])]
    assert [name for name, *_ in search.judged(rows)] == ["per_feature", "tied", "reference"]  # AUROC breaks the tie


def searched(name: str, seed: int, auprc: float) -> dict:
    """A search row whose validation and test AUPRC are both `auprc`."""
    return {"configuration": name, "seed": seed, "validation_auroc": 0.85, "validation_auprc": auprc,
            "auroc": 0.86, "auprc": auprc}


def test_a_lever_is_paired_by_seed_with_the_longest_configuration_it_adds_to():
    search = load_script("benchmarks/p12_search.py")

    rows = [searched("reference", seed, auprc) for seed, auprc in enumerate([0.50, 0.56, 0.53])]
    rows += [searched("per_feature", seed, auprc) for seed, auprc in enumerate([0.52, 0.55, 0.56])]
    rows += [searched("per_feature+head_dropout+event_dropout", 1, 0.60)]  # its middle lever was never run alone
    lines = search.lever_effects(rows).split("\n")[2:]
    assert [line.split(" | ")[:3] for line in lines] == [["| per_feature", "reference", "3"],
                                                         ["| head_dropout+event_dropout", "per_feature", "1"]]
    # seed by seed +0.02, -0.01, +0.03: ahead on two of three
    assert "+0.0133 ± 0.0208 (2 of 3)" in lines[0] and "+0.0500 (1 of 1)" in lines[1]


def test_every_three_seed_configuration_is_paired_with_a_chosen_yardstick():
    search = load_script("benchmarks/p12_search.py")

    rows = [searched("quantile_values", seed, auprc) for seed, auprc in enumerate([0.50, 0.56, 0.53])]
    rows += [searched("per_feature", seed, auprc) for seed, auprc in enumerate([0.52, 0.55, 0.56])]
    rows += [searched("reference", seed, auprc) for seed, auprc in enumerate([0.40, 0.45, 0.50])]
    rows += [searched("focal_loss", 0, 0.60)]  # one seed is no row to pair
    lines = search.paired_with(rows, "quantile_values").split("\n")[2:]
    assert [line.split(" | ")[:3] for line in lines] == [["| per_feature", "quantile_values", "3"],
                                                         ["| reference", "quantile_values", "3"]]  # best first
    assert "+0.0133 ± 0.0208 (2 of 3)" in lines[0] and "-0.0800 ± 0.0436 (0 of 3)" in lines[1]
    assert search.paired_with(rows, "focal_loss") == "focal_loss is not yet on every seed: nothing to pair with"



def test_each_fusion_is_judged_at_the_rate_its_own_validation_prefers():
    search = load_script("benchmarks/p12_search.py")

    def runs(levers, validation_auprcs, test_auprcs):
        return [{"configuration": f"{search.LEADER}{levers}", "seed": seed, "validation_auroc": 0.86,
                 "validation_auprc": validation, "auroc": 0.87, "auprc": test}
                for seed, (validation, test) in enumerate(zip(validation_auprcs, test_auprcs))]

    rows = runs("", [0.55, 0.54, 0.56], [0.56, 0.55, 0.57])  # MuFuse at 1e-3
    rows += runs("+learning_rate_3e-4", [0.54, 0.53, 0.55], [0.60, 0.60, 0.60])  # better on test: never chosen so
    rows += runs("+additive_fusion", [0.45, 0.50, 0.52], [0.50, 0.50, 0.50])
    rows += runs("+additive_fusion+learning_rate_3e-4", [0.58, 0.56, 0.57], [0.57, 0.57, 0.56])  # its better rate
    rows += runs("+concat_fusion", [0.40, 0.30, 0.35], [0.40, 0.30, 0.35])
    rows += runs("+concat_fusion+learning_rate_3e-4", [0.50], [0.50])  # one seed: no verdict on that rate yet
    lines = search.fusions_at_their_better_rate(rows).split("\n")[2:]
    assert [line.split(" | ")[:2] for line in lines] == [
        ["| MuFuse", "1e-3"], ["| additive", "3e-4"], ["| concatenation", "1e-3 (3e-4 not yet on every seed)"]]
    assert lines[0].endswith("| – |")
    assert "+0.0067 ± 0.0153 (2 of 3)" in lines[1]  # +0.01, +0.02, -0.01 paired with MuFuse at 1e-3
    assert search.fusions_at_their_better_rate(rows[6:]) == "MuFuse is not yet on every seed at any rate"


def test_the_plateau_figure_averages_the_kept_epoch_and_the_validations_before_it(tmp_path):
    """The best of many noisy validations is biased up; the mean of the kept one and the four before it much less."""
    p12_table = load_script("benchmarks/p12_table.py")
    (tmp_path / "logs").mkdir()
    figures = [0.40, 0.50, 0.48, 0.52, 0.51, 0.56, 0.53, 0.50]  # epochs 0-7; the kept one is epoch 5 (best_epoch 6)
    (tmp_path / "logs" / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": epoch, "validation_auprc": figure}) + "\n" + json.dumps({"epoch": epoch, "loss": 1.0})
        + "\n" for epoch, figure in enumerate(figures)))
    (tmp_path / "test_metrics.json").write_text(json.dumps({"best_validation": {"auprc": 0.56, "epoch": 6}}))
    assert p12_table.plateau_auprc(tmp_path) == pytest.approx(np.mean([0.50, 0.48, 0.52, 0.51, 0.56]))


def test_an_lp_ft_run_that_kept_its_probe_is_judged_by_the_probes_validations(tmp_path):
    """LP-FT's fine-tuning keeps the probe (its epoch 0, `best_validation` epoch 0) unless an epoch beats it: the
    row's validation figures and plateau are then the probe run's, and its time counts both stages."""
    p12_table = load_script("benchmarks/p12_table.py")
    for run_dir, figures, best_epoch, seconds in ((tmp_path, [0.50, 0.52], 0, 30.0),
                                                  (tmp_path / "probe", [0.51, 0.55, 0.54], 2, 4.0)):
        (run_dir / "logs").mkdir(parents=True)
        (run_dir / "logs" / "metrics.jsonl").write_text("".join(json.dumps(
            {"epoch": epoch, "validation_auroc": 0.8, "validation_auprc": figure}) + "\n"
            for epoch, figure in enumerate(figures)))
        (run_dir / "test_metrics.json").write_text(json.dumps({"best_validation": {"auprc": max(figures),
                                                                                   "epoch": best_epoch},
                                                               "train_seconds": seconds}))
    assert [row["validation_auprc"] for row in p12_table.kept_validations(tmp_path)] == [0.51, 0.55]
    assert p12_table.plateau_auprc(tmp_path) == pytest.approx(0.53)
    assert p12_table.probe_seconds(tmp_path) == 4.0 and p12_table.probe_seconds(tmp_path / "probe") == 0.0


def test_the_search_records_the_plateau_of_older_rows_from_their_run_folders(tmp_path):
    search = load_script("benchmarks/p12_search.py")
    run_dir = tmp_path / "runs" / "per_feature-seed0"
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "logs" / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": epoch, "validation_auprc": figure}) + "\n" for epoch, figure in enumerate([0.4, 0.5])))
    (run_dir / "test_metrics.json").write_text(json.dumps({"best_validation": {"auprc": 0.5, "epoch": 2}}))
    results = ResultRows(tmp_path / "search.json", key=("configuration", "seed"))
    for seed in (0, 1):  # seed 1's run folder is not on this machine
        results.add({"configuration": "per_feature", "seed": seed, "validation_auprc": 0.5})
    search.record_plateaus(results, tmp_path / "runs")
    assert [row.get("validation_auprc_plateau") for row in json.loads((tmp_path / "search.json").read_text())] == [
        pytest.approx(0.45), None]


def test_result_rows_keep_what_another_writer_added_since_they_were_read(tmp_path):
    """A driver holds its rows in memory for hours; rows imported into its file meanwhile must survive its next
    write, and a cell written twice is kept once."""
    path = tmp_path / "rows.json"
    driver, importer = ResultRows(path, key=("arm", "seed")), ResultRows(path, key=("arm", "seed"))
    importer.add({"arm": "scratch", "seed": 0, "auprc": 0.5})
    driver.add({"arm": "gbm", "seed": 0, "auprc": 0.6})
    driver.add({"arm": "gbm", "seed": 0, "auprc": 0.7})
    assert json.loads(path.read_text()) == [{"arm": "scratch", "seed": 0, "auprc": 0.5},
                                            {"arm": "gbm", "seed": 0, "auprc": 0.7}]
    assert ResultRows(path, key=("arm", "seed")).done(arm="scratch", seed=0)


def test_the_probe_reads_each_stay_once_in_the_cohorts_order_and_caches_by_weights_and_tokenizer(
        tmp_path, monkeypatch):
    """The probe's representations line up with the labels only if each row is its own stay's, whatever order the
    length-sorted batches ran in; and a cache kept from other weights would score a different base."""
    label_efficiency = load_script("benchmarks/label_efficiency.py")
    base = tmp_path / "base"
    subprocess.run([sys.executable, str(ROOT / "recipes" / "pretrain.py"), "--dataset", "synthetic",
                    "--num_patients", "64", "--max_steps", "1", "--batch_size", "16", "--hidden_size", "32",
                    "--value_embedding_size", "8", "--intermediate_size", "32", "--output_dir", str(base)],
                   check=True, capture_output=True, timeout=300)
    cohort = load_cohort("synthetic", num_patients=64)
    monkeypatch.setattr(label_efficiency, "load_cohort", lambda *args: cohort)
    representations = label_efficiency.base_representations(base, tmp_path, tmp_path / "cache")
    model = MedFuseModel.from_pretrained(base / "model").eval()
    tokenizer = MedFuseTokenizer.from_pretrained(base / "model", max_events=label_efficiency.MAX_EVENTS)
    collate = MedFuseDataCollator(tokenizer)
    test = cohort.splits["test"]
    with torch.no_grad():
        alone = [model(**collate([test[row]])).pooler_output[0].numpy() for row in range(len(test))]
    assert representations["test"].shape == (len(test), 32)
    np.testing.assert_allclose(representations["test"], np.stack(alone), atol=1e-5)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    weights = load_file(base / "model" / "model.safetensors")
    save_file({name: tensor + 0.5 if tensor.is_floating_point() else tensor for name, tensor in weights.items()},
              base / "model" / "model.safetensors", metadata={"format": "pt"})
    label_efficiency.base_representations(base, tmp_path, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2  # other weights, their own representations
    tokenizer.feature_vocabulary.spec_of("sodium").statistics.median += 5.0  # the same weights read values otherwise
    tokenizer.save_pretrained(base / "model")
    label_efficiency.base_representations(base, tmp_path, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3


def test_rows_started_from_another_base_than_the_released_one_are_refused_unless_named_so():
    """A base pretrained again in place would otherwise find its finished cells done, and the old base's rows would
    be summarised as its own."""
    protocol = load_script("benchmarks/protocol.py")
    current = protocol.weights_digest(protocol.RELEASED_BASE)
    rows = [{"configuration": "leader+in_domain_lpft", "seed": 0, "init_weights": current},
            {"configuration": "leader+in_domain_lpft@be31f424fcbf", "seed": 0, "init_weights": "be31f424fcbf"},
            {"configuration": "leader", "seed": 0}]
    protocol.refuse_rows_of_another_base(rows, lambda row: row["configuration"])
    stale = [*rows, {"configuration": "leader+in_domain_lpft", "seed": 1, "init_weights": "918841b9fea1"}]
    with pytest.raises(SystemExit, match=r"leader\+in_domain_lpft \(seed 1, weights 918841b9fea1\)"):
        protocol.refuse_rows_of_another_base(stale, lambda row: row["configuration"])
