import json
from copy import deepcopy

import numpy as np
import pytest
import torch

from medfuse_hf import (
    FeatureEmbeddingCheckpoint,
    FeatureSpec,
    FeatureVocabulary,
    MedFuseConfig,
    MedFuseForSequenceClassification,
    MedFuseTokenizer,
    export_feature_embeddings,
    load_feature_embeddings,
)


def vocabulary_of(specs):
    return FeatureVocabulary(specs)


def target_model(vocabulary, **overrides):
    settings = dict(num_labels=2, hidden_size=32, value_embedding_size=8)
    return MedFuseForSequenceClassification(MedFuseConfig(**vocabulary.config_kwargs(), **{**settings, **overrides}))


def test_a_partly_overlapping_target_receives_the_shared_features(source):
    source_model, source_vocabulary, path = source
    target_vocabulary = vocabulary_of([FeatureSpec(name="lactate"), FeatureSpec(name="sodium"),
                                       FeatureSpec(name="hr", aliases=["heart_rate"])])
    model = target_model(target_vocabulary)
    fresh_lactate = model.medfuse.embeddings.feature_embeddings.weight[target_vocabulary.id_of("lactate")].clone()
    report = load_feature_embeddings(model.medfuse, path, target_vocabulary, match_by="name")
    assert report.matched == {"sodium": "sodium"}
    assert report.new_at_target == ["lactate", "hr"]
    assert report.only_at_source == ["creatinine", "heart_rate"]
    here, there = target_vocabulary.id_of("sodium"), source_vocabulary.id_of("sodium")
    target, origin = model.medfuse.embeddings, source_model.medfuse.embeddings
    torch.testing.assert_close(target.feature_embeddings.weight[here], origin.feature_embeddings.weight[there])
    torch.testing.assert_close(target.value_fusion.gamma[here], origin.value_fusion.gamma[there])
    torch.testing.assert_close(target.value_fusion.beta[here], origin.value_fusion.beta[there])
    torch.testing.assert_close(target.feature_embeddings.weight[target_vocabulary.id_of("lactate")], fresh_lactate)
    alias_report = load_feature_embeddings(target_model(target_vocabulary).medfuse, path, target_vocabulary,
                                                                                   match_by="alias")
    assert alias_report.matched == {"sodium": "sodium", "hr": "heart_rate"}
    assert alias_report.matched_by["hr"] == "alias"


def test_category_levels_transfer_by_label_with_the_map_that_fuses_them(tmp_path):
    source_vocabulary = vocabulary_of([FeatureSpec(name="sodium"),
                                       FeatureSpec(name="gender", kind="categorical", categories=["F", "M"])])
    source_model = target_model(source_vocabulary)
    export_feature_embeddings(source_model, MedFuseTokenizer(source_vocabulary), tmp_path, source="test",
                              min_patients=20)
    target_vocabulary = vocabulary_of([FeatureSpec(name="gender", kind="categorical", categories=["M", "X", "F"])])
    model = target_model(target_vocabulary)
    fresh = model.medfuse.embeddings.categorical_fusion.category_embeddings.weight.detach().clone()
    report = load_feature_embeddings(model.medfuse, tmp_path, target_vocabulary, freeze=True)
    assert report.categories_transferred == 2
    source_rows = source_model.medfuse.embeddings.categorical_fusion.category_embeddings.weight
    target = model.medfuse.embeddings.categorical_fusion
    weight = target.category_embeddings.weight
    # the levels' global ids: F=1, M=2 at the source; M=1, X=2, F=3 here
    for level, source_row in (("M", 2), ("F", 1)):
        torch.testing.assert_close(weight[1 + ["M", "X", "F"].index(level)], source_rows[source_row])
    torch.testing.assert_close(weight[2], fresh[2])  # X: new at the target
    for name, parameter in source_model.medfuse.embeddings.categorical_fusion.proj.named_parameters():
        torch.testing.assert_close(getattr(target.proj, name), parameter)
    gender = target_vocabulary.id_of("gender")
    output = model(torch.tensor([[gender] * 3]), torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.0, 1.0, 2.0]]),
                   labels=torch.tensor([1]))  # levels M, X, F
    output.loss.backward()
    assert weight.grad[[1, 3]].abs().sum() == 0 and weight.grad[2].abs().sum() > 0  # frozen levels, and X learns


def test_the_concatenation_ablation_transfers_its_fusion_map(source):
    _, vocabulary, _ = source
    source_model = target_model(vocabulary, fusion="concat")
    path = source[2].parent / "concat-embeddings"
    export_feature_embeddings(source_model, MedFuseTokenizer(vocabulary), path, source="test", min_patients=20)
    model = target_model(vocabulary, fusion="concat")
    load_feature_embeddings(model.medfuse, path, vocabulary)
    torch.testing.assert_close(model.medfuse.embeddings.value_fusion.proj.weight,
                               source_model.medfuse.embeddings.value_fusion.proj.weight)


def test_mismatched_dimensions_or_fusion_are_refused(source):
    _, vocabulary, path = source
    with pytest.raises(ValueError, match="hidden_size is 32 in the checkpoint but 64 in the model"):
        load_feature_embeddings(target_model(vocabulary, hidden_size=64).medfuse, path, vocabulary)
    with pytest.raises(ValueError, match="fusion is 'multiplicative' in the checkpoint but 'additive'"):
        load_feature_embeddings(target_model(vocabulary, fusion="additive").medfuse, path, vocabulary)
    with pytest.raises(ValueError, match="value_projector_hidden_size is"):
        load_feature_embeddings(target_model(vocabulary, value_projector_hidden_size=7).medfuse, path, vocabulary)


def test_unit_mismatches_are_flagged_and_declared_conversions_applied_to_the_source_statistics(source):
    _, _, path = source
    original = FeatureEmbeddingCheckpoint.from_pretrained(path).vocabulary
    target_vocabulary = vocabulary_of([FeatureSpec(name="creatinine", unit="µmol/L"), FeatureSpec(name="heart_rate"),
                                       FeatureSpec(name="sodium", unit="mmol/l")])
    model = target_model(target_vocabulary)
    report = load_feature_embeddings(model.medfuse, path, target_vocabulary,
                                                   unit_conversions={"creatinine": np.float32(88.42)})
    assert report.unit_mismatches == {"creatinine": ("mg/dL", "µmol/L")}  # sodium: the same unit, litre's case aside
    assert report.converted_units == {"creatinine": (pytest.approx(88.42), 0.0)}
    converted, source = report.source_statistics["creatinine"], original.spec_of("creatinine").statistics
    assert converted.mean == pytest.approx(source.mean * 88.42) and converted.std == pytest.approx(source.std * 88.42)
    assert converted.upper == pytest.approx(source.upper * 88.42) and converted.num_patients == source.num_patients
    assert report.source_statistics["sodium"] == original.spec_of("sodium").statistics
    celsius = original.spec_of("sodium").statistics.in_other_units(5 / 9, -160 / 9)  # as if it were °F -> °C
    assert celsius.median == pytest.approx((original.spec_of("sodium").statistics.median - 32) * 5 / 9)
    with_unit = vocabulary_of([FeatureSpec(name="heart_rate", unit="bpm")])  # unknown at the source: flagged too
    assert (load_feature_embeddings(target_model(with_unit).medfuse, path, with_unit).unit_mismatches
            == {"heart_rate": (None, "bpm")})


def test_values_normalised_another_way_than_at_the_source_are_flagged(source, cohort, caplog):
    """γ, β and φ learnt on z-scored values read quantile scores differently: the transfer goes ahead, and says so."""
    _, _, path = source
    shared = FeatureEmbeddingCheckpoint.from_pretrained(path).vocabulary
    with_statistics = {spec.name for spec in shared if spec.statistics is not None}
    for normalization, expected in (("quantile", {name: ("robust_zscore", "quantile") for name in with_statistics}),
                                    ("robust_zscore", {})):
        vocabulary = FeatureVocabulary.from_events(cohort, units={"creatinine": "mg/dL", "sodium": "mmol/L"},
                                                   normalization=normalization)
        report = load_feature_embeddings(target_model(vocabulary).medfuse, path, vocabulary)
        assert with_statistics and report.normalization_mismatches == expected
    assert "values normalised differently (source, target)" in caplog.text


def test_a_conversion_that_would_be_ignored_is_refused_before_anything_is_copied(source):
    _, _, path = source
    target_vocabulary = vocabulary_of([FeatureSpec(name="sodium", unit="mmol/L"), FeatureSpec(name="lactate")])
    model = target_model(target_vocabulary)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    for conversions, message in (({"sodium": 2.0},
                                  "'sodium', but its unit is 'mmol/L' at the source and the target alike"),
                                 ({"lactate": 9.0}, "'lactate', which matched no feature")):
        with pytest.raises(ValueError, match=message):
            load_feature_embeddings(model.medfuse, path, target_vocabulary, unit_conversions=conversions)
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items())


def test_a_name_match_with_different_codes_is_flagged(tmp_path):
    source_vocabulary = vocabulary_of([FeatureSpec(name="glucose", code="2345-7")])  # serum glucose
    export_feature_embeddings(target_model(source_vocabulary), MedFuseTokenizer(source_vocabulary), tmp_path)
    target_vocabulary = vocabulary_of([FeatureSpec(name="glucose", code="2339-0")])  # blood glucose
    report = load_feature_embeddings(target_model(target_vocabulary).medfuse, tmp_path, target_vocabulary)
    assert report.matched == {"glucose": "glucose"} and report.code_conflicts == {"glucose": ("2345-7", "2339-0")}
    assert "matched despite different codes" in str(report)


def test_frozen_transfer_stays_exactly_as_loaded_under_adamw_while_new_features_train(source):
    _, vocabulary, path = source
    target_vocabulary = vocabulary_of([*vocabulary, FeatureSpec(name="lactate")])
    model = target_model(target_vocabulary)
    load_feature_embeddings(model.medfuse, path, target_vocabulary, freeze=True)
    embeddings = model.medfuse.embeddings
    sodium, lactate = target_vocabulary.id_of("sodium"), target_vocabulary.id_of("lactate")
    tables = {"feature_embeddings.weight": embeddings.feature_embeddings.weight,
              "value_fusion.gamma": embeddings.value_fusion.gamma, "value_fusion.beta": embeddings.value_fusion.beta}
    before = {name: table.detach().clone() for name, table in tables.items()}
    projector = {name: value.clone() for name, value in embeddings.value_fusion.value_projector.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)  # decay moves zero-gradient rows
    ids = torch.tensor([[sodium, lactate]])
    for _ in range(3):
        model(ids, torch.tensor([[0.5, 1.0]]), torch.tensor([[1.0, 2.0]]), labels=torch.tensor([1])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, table in tables.items():  # read directly after the last step, as an export reads them
        assert torch.equal(table[sodium], before[name][sodium]), name
        assert not torch.equal(table[lactate], before[name][lactate]), name
    saved = model.state_dict()
    for name, value in projector.items():
        assert torch.equal(saved[f"medfuse.embeddings.value_fusion.value_projector.{name}"], value)
    copy = deepcopy(model)  # e.g. an EMA or a best-model snapshot: frozen on its own, not through the original
    with torch.no_grad():
        copy.medfuse.embeddings.feature_embeddings.weight[sodium] += 1.0
    copy(ids, torch.tensor([[0.5, 1.0]]), torch.tensor([[1.0, 2.0]]))
    assert torch.equal(copy.medfuse.embeddings.feature_embeddings.weight[sodium],
                       before["feature_embeddings.weight"][sodium])


def test_a_rare_features_exact_values_do_not_leave_the_hospital(tmp_path, cohort):
    rare_values = [123.456, 98.765, 77.777]
    patients = [dict(patient) for patient in cohort[:63]]
    for patient, value in zip(patients, rare_values):  # seen in 3 patients only
        patient.update(feature=patient["feature"] + ["rare_lab"], value=patient["value"] + [value],
                       time=patient["time"] + [47.0])
    vocabulary = FeatureVocabulary.from_events(patients)
    model = target_model(vocabulary)
    report = export_feature_embeddings(model, MedFuseTokenizer(vocabulary), tmp_path, source="small cohort",
                                       min_patients=20)
    assert report == {"statistics_withheld": ["rare_lab"], "dominance_unchecked": []}
    published = json.loads((tmp_path / "feature_vocabulary.json").read_text())
    rare = next(entry for entry in published["features"] if entry["name"] == "rare_lab")
    assert "statistics" not in rare
    text = "".join(path.read_text(errors="ignore") for path in tmp_path.iterdir())
    for secret in [*rare_values, np.mean(rare_values), np.median(rare_values)]:
        assert f"{secret:.3f}".rstrip("0") not in text
    sodium = next(entry for entry in published["features"] if entry["name"] == "sodium")["statistics"]
    assert sodium["num_patients"] == 60 and sodium["count"] % 10 == 0  # 63 patients: counts rounded down to tens
    with pytest.raises(ValueError, match="min_patients=5: statistics of fewer than 10 patients are never shared"):
        export_feature_embeddings(model, MedFuseTokenizer(vocabulary), tmp_path / "lax", min_patients=5)
    dropped = tmp_path / "dropped"  # for a site where even that the rare test was done is sensitive
    assert export_feature_embeddings(model, MedFuseTokenizer(vocabulary), dropped, drop_rare_features=True) == {
        "rare_features_dropped": ["rare_lab"], "dominance_unchecked": []}
    assert all(b"rare_lab" not in path.read_bytes() for path in dropped.iterdir())
    assert FeatureEmbeddingCheckpoint.from_pretrained(dropped).vocabulary.id_of("sodium") is not None


def test_statistics_that_one_patient_makes_do_not_leave_the_hospital(tmp_path, cohort):
    """One monitored stay's 3,000 values among 24 spot checks: 25 patients pass a threshold of 20, yet the mean,
    quartiles and standard deviation are that patient's own."""
    rng = np.random.default_rng(0)
    patients = [dict(patient) for patient in cohort[:40]]
    for index, patient in enumerate(patients[:25]):
        values = rng.normal(31, 2, 3000) if index == 0 else [30.0]
        patient.update(feature=patient["feature"] + ["monitored"] * len(values),
                       value=patient["value"] + list(values), time=patient["time"] + [47.0] * len(values))
    vocabulary = FeatureVocabulary.from_events(patients)
    assert vocabulary.spec_of("monitored").statistics.largest_patient_count == 3000
    report = export_feature_embeddings(target_model(vocabulary), MedFuseTokenizer(vocabulary), tmp_path,
                                       source="small cohort", min_patients=20)
    assert report == {"statistics_withheld": ["monitored"], "dominance_unchecked": []}
    published = json.loads((tmp_path / "feature_vocabulary.json").read_text())["features"]
    assert all("largest_patient_count" not in entry.get("statistics", {}) for entry in published)


def test_the_dominance_rule_counts_exactly_and_says_where_it_cannot_be_applied(caplog, tmp_path):
    from dataclasses import replace

    from medfuse_hf.feature_vocabulary import FeatureSpec, ValueStatistics
    from medfuse_hf.privacy import privacy_guarded
    from medfuse_hf.training.publishing import privacy_statement

    fitted = ValueStatistics.fit(np.arange(20000.0), num_patients=100, largest_patient_count=10001)
    just_over = FeatureVocabulary([FeatureSpec(name="lab", statistics=fitted)])
    assert privacy_guarded(just_over)[1] == ["lab"]  # 10,001 of 20,000: over half, though 0.5 to four places
    old = FeatureVocabulary([FeatureSpec(name="lab", statistics=replace(fitted, largest_patient_count=None))])
    with caplog.at_level("WARNING", logger="medfuse_hf.privacy"):
        assert privacy_guarded(old)[1] == []
    assert "whether one patient dominates them is unchecked" in caplog.text
    # the export counts them, and the card claims the rule only where it could be applied
    report = export_feature_embeddings(target_model(old), MedFuseTokenizer(old), tmp_path, min_patients=20)
    assert report == {"statistics_withheld": [], "dominance_unchecked": ["lab"]}
    assert json.loads((tmp_path / "embedding_config.json").read_text())["privacy"]["dominance_unchecked"] == 1
    assert privacy_statement(report, 20).endswith("are withheld (none here); the second rule could not be applied "
                                                   "to 1 feature, whose statistics do not record the largest "
                                                   "patient's share")
    # a feature withheld for too few patients is not counted as unchecked: nothing of it is shared
    rare = FeatureVocabulary([FeatureSpec(name="lab", statistics=replace(fitted, num_patients=12,
                                                                         largest_patient_count=None))])
    assert export_feature_embeddings(target_model(rare), MedFuseTokenizer(rare), tmp_path / "rare",
                                     min_patients=20) == {"statistics_withheld": ["lab"], "dominance_unchecked": []}
    assert privacy_statement({"rare_features_dropped": ["a"], "dominance_unchecked": []}, 30) == (
        "features seen in fewer than 30 patients, or more than half of whose values one patient gave, are left out "
        "altogether (1 here)")


def test_a_tampered_checkpoint_is_refused(source):
    _, vocabulary, path = source
    (path / "feature_vocabulary.json").write_text(
        (path / "feature_vocabulary.json").read_text().replace("sodium", "natrium"))
    with pytest.raises(ValueError, match="feature_vocabulary.json: missing or does not match its recorded SHA-256"):
        load_feature_embeddings(target_model(vocabulary).medfuse, path, vocabulary)
    manifest = json.loads((path / "embedding_config.json").read_text())
    del manifest["sha256"]["feature_vocabulary.json"]  # a tampered manifest that no longer checks the vocabulary
    (path / "embedding_config.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="no SHA-256 recorded for feature_vocabulary.json"):
        load_feature_embeddings(target_model(vocabulary).medfuse, path, vocabulary)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_feature_embeddings(target_model(vocabulary).medfuse, path.parent / "mistyped-embeddings", vocabulary)


def test_a_name_that_is_neither_a_folder_nor_a_reachable_repo_says_both(source, monkeypatch):
    import huggingface_hub.constants

    _, vocabulary, _ = source
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="run/feature_embeddings: not a local folder, and as a Hub repo id"):
        load_feature_embeddings(target_model(vocabulary).medfuse, "run/feature_embeddings", vocabulary)


def fake_hub_cache(cache, repo_id, folder):
    """The layout huggingface_hub keeps downloaded repos in, so that offline loads by repo id can be tested."""
    commit = "0" * 40
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())


def test_models_and_embeddings_load_by_hub_repo_id_offline(tmp_path, source, monkeypatch):
    import huggingface_hub.constants
    from transformers import AutoFeatureExtractor, AutoModelForSequenceClassification

    model, vocabulary, embeddings_path = source
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    MedFuseTokenizer(vocabulary).save_pretrained(model_dir)
    cache = tmp_path / "hub-cache"
    fake_hub_cache(cache, "hospital-a/medfuse-sodium", model_dir)
    fake_hub_cache(cache, "hospital-a/medfuse-sodium-embeddings", embeddings_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    loaded = AutoModelForSequenceClassification.from_pretrained("hospital-a/medfuse-sodium", cache_dir=cache)
    torch.testing.assert_close(loaded.medfuse.embeddings.feature_embeddings.weight,
                               model.medfuse.embeddings.feature_embeddings.weight)
    assert isinstance(AutoFeatureExtractor.from_pretrained("hospital-a/medfuse-sodium", cache_dir=cache),
                      MedFuseTokenizer)
    report = load_feature_embeddings(target_model(vocabulary).medfuse, "hospital-a/medfuse-sodium-embeddings",
                                                                      vocabulary)
    assert sorted(report.matched) == ["creatinine", "heart_rate", "sodium"]


def test_a_new_fusion_that_declares_its_tables_transfers_without_edits_elsewhere(tmp_path, cohort, monkeypatch):
    """A fusion is one class: the per-feature rows and shared maps it declares are exported, loaded and frozen."""
    from torch import nn
    from transformers import initialization as init

    import medfuse_hf.modeling_medfuse as modeling

    class GatedFusion(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.value_projector = modeling.ValueProjector(config.value_projector_hidden_size, config.hidden_size)
            self.gate = nn.Parameter(torch.ones(config.vocab_size, config.hidden_size))
            self.feature_tables, self.shared_maps = {"gate": init.ones_}, {"value_projector": "value_projector"}

        def forward(self, feature_embeds, feature_ids, values):
            return feature_embeds + nn.functional.embedding(feature_ids, self.gate) * self.value_projector(values)

    monkeypatch.setitem(modeling.VALUE_FUSIONS, "additive", GatedFusion)
    vocabulary = FeatureVocabulary.from_events(cohort)
    source_model = target_model(vocabulary, fusion="additive")
    with torch.no_grad():
        source_model.medfuse.embeddings.value_fusion.gate.normal_()
    export_feature_embeddings(source_model, MedFuseTokenizer(vocabulary), tmp_path / "gated", min_patients=20)
    model = target_model(vocabulary, fusion="additive")
    load_feature_embeddings(model.medfuse, tmp_path / "gated", vocabulary, freeze=True)
    sodium = vocabulary.id_of("sodium")
    torch.testing.assert_close(model.medfuse.embeddings.value_fusion.gate[sodium],
                               source_model.medfuse.embeddings.value_fusion.gate[sodium])
    torch.testing.assert_close(model.medfuse.embeddings.value_fusion.value_projector.down.weight,
                               source_model.medfuse.embeddings.value_fusion.value_projector.down.weight)
    assert not model.medfuse.embeddings.value_fusion.value_projector.down.weight.requires_grad  # frozen as declared
