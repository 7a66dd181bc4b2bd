import math
import subprocess
import sys

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors.torch import load_file, save_file
from sklearn.metrics import roc_auc_score
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from medfuse_hf import (
    FeatureSpec,
    FeatureVocabulary,
    MedFuseConfig,
    MedFuseForPreTraining,
    MedFuseForSequenceClassification,
    MedFuseModel,
    MedFuseTokenizer,
    load_feature_embeddings,
)


def encode(tokenizer, patients, **kwargs):
    return tokenizer(patients, return_tensors="pt", **kwargs)


@pytest.mark.parametrize("norm_first", [False, True])
def test_padding_never_changes_logits(tokenizer, cohort, tiny_config, pooling, norm_first):
    model = MedFuseForSequenceClassification(tiny_config(pooling=pooling, norm_first=norm_first)).eval()
    patient = cohort[3]
    with torch.no_grad():
        short = model(**encode(tokenizer, [patient], padding="max_length", max_length=64)).logits
        long = model(**encode(tokenizer, [patient], padding="max_length", max_length=500)).logits
        alone = model(**encode(tokenizer, [patient])).logits
        left_tokenizer = MedFuseTokenizer(tokenizer.feature_vocabulary, max_events=64, padding_side="left")
        left = model(**encode(left_tokenizer, [patient], padding="max_length", max_length=500)).logits
    torch.testing.assert_close(short, long, atol=1e-5, rtol=0)
    torch.testing.assert_close(alone, long, atol=1e-5, rtol=0)
    torch.testing.assert_close(left, long, atol=1e-5, rtol=0)


def test_a_row_of_padding_only_is_finite_and_alike_under_sdpa_and_eager(tokenizer, cohort, tiny_config, pooling):
    """The tokenizer refuses a patient without events, but a batch built by hand may hold one: logits, token states
    and gradients stay finite, SDPA and the eager path (which `output_attentions` takes) agree on its token states
    (fused kernels may give a fully masked attention row NaN), and its batch mates score as without it."""
    model = MedFuseForSequenceClassification(tiny_config(pooling=pooling)).eval()
    reference = model(**encode(tokenizer, cohort[:2])).logits.detach()
    batch = {name: torch.cat([tensor, torch.zeros_like(tensor[:1])])
             for name, tensor in encode(tokenizer, cohort[:2]).items()}
    outputs = []
    for eager in (False, True):
        model.zero_grad()
        output = model(**batch, labels=torch.tensor([0, 1, 1]), output_hidden_states=True, output_attentions=eager)
        output.loss.backward()
        assert all(torch.isfinite(parameter.grad).all() for parameter in model.parameters()
                   if parameter.grad is not None)
        torch.testing.assert_close(output.logits[:2], reference, atol=1e-5, rtol=0)
        outputs.append(output)
    sdpa, eager = outputs
    torch.testing.assert_close(eager.hidden_states[-1][2], sdpa.hidden_states[-1][2], atol=1e-5, rtol=0)
    torch.testing.assert_close(eager.logits[2], sdpa.logits[2], atol=1e-5, rtol=0)


def test_statics_join_the_patient_vector_from_their_earliest_event(vocabulary, tiny_config):
    from medfuse_hf.modeling_medfuse import StaticsEmbedding

    icu_type, heart_rate, sodium = (vocabulary.id_of(name) for name in ("icu_type", "heart_rate", "sodium"))
    statics = StaticsEmbedding(tiny_config(static_feature_ids=[icu_type, heart_rate]))
    statics.projection = torch.nn.Identity()  # read the slots and flags themselves
    tokens = torch.randn(2, 4, 32)
    feature_ids = torch.tensor([[heart_rate, icu_type, heart_rate, 0], [sodium, sodium, 0, 0]])
    times = torch.tensor([[5.0, 0.0, 1.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
    output = statics(tokens, feature_ids, times, feature_ids != 0)
    slots, flags = output[:, :64].view(2, 2, 32), output[:, 64:]
    torch.testing.assert_close(slots[0], tokens[0, [1, 2]])  # ICU type; heart rate at 1 h, not at 5 h
    assert flags.tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert not slots[1].any()  # unrecorded: zeros, not a padding token's state


def test_statics_keep_the_output_independent_of_event_order_and_padding(tokenizer, cohort, tiny_config, vocabulary):
    ids = [vocabulary.id_of(name) for name in ("icu_type", "heart_rate")]
    model = MedFuseForSequenceClassification(tiny_config(static_feature_ids=ids)).eval()
    batch = encode(tokenizer, cohort[:4])
    permutation = torch.randperm(batch["feature_ids"].shape[1])
    with torch.no_grad():
        plain = model(**batch).logits
        shuffled = model(**{key: value[:, permutation] for key, value in batch.items()}).logits
        padded = model(**encode(tokenizer, cohort[:4], padding="max_length", max_length=64)).logits
        model.medfuse.statics = None
        without = model(**batch).logits  # the same weights, without the statics path
    torch.testing.assert_close(shuffled, plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(padded, plain, atol=1e-5, rtol=0)
    assert not torch.allclose(without, plain, atol=1e-4)


def test_a_model_with_statics_reloads_with_its_static_feature_ids(
    tmp_path, tokenizer, cohort, tiny_config, vocabulary
):
    ids = [vocabulary.id_of(name) for name in ("icu_type", "heart_rate")]
    model = MedFuseForSequenceClassification(tiny_config(static_feature_ids=ids)).eval()
    model.save_pretrained(tmp_path)
    reloaded = MedFuseForSequenceClassification.from_pretrained(tmp_path).eval()  # built on the meta device
    assert reloaded.medfuse.statics.feature_ids.tolist() == ids  # a non-persistent buffer, rebuilt
    batch = encode(tokenizer, cohort[:4])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits)


def test_shuffled_events_give_the_same_output(tokenizer, cohort, tiny_config, fusion):
    model = MedFuseForSequenceClassification(tiny_config(fusion=fusion)).eval()
    batch = encode(tokenizer, cohort[:4])
    permutation = torch.randperm(batch["feature_ids"].shape[1])
    shuffled = {key: value[:, permutation] for key, value in batch.items()}
    with torch.no_grad():
        torch.testing.assert_close(model(**shuffled).logits, model(**batch).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("time_embedding", ["sinusoidal", "cve"])
def test_every_fusion_runs_forward_and_backward(tokenizer, cohort, tiny_config, fusion, time_embedding):
    model = MedFuseForSequenceClassification(tiny_config(fusion=fusion, time_embedding=time_embedding))
    events = [("icu_type", "surgical", 0.0), *zip(cohort[0]["feature"], cohort[0]["value"], cohort[0]["time"])]
    output = model(**encode(tokenizer, [events, cohort[1]]), labels=torch.tensor([0, 1]))
    output.loss.backward()
    assert output.logits.shape == (2, 2) and torch.isfinite(output.loss)
    feature_grad = model.medfuse.embeddings.feature_embeddings.weight.grad
    assert feature_grad.abs().sum() > 0 and feature_grad[0].abs().sum() == 0  # padding row never learns
    category_grad = model.medfuse.embeddings.categorical_fusion.category_embeddings.weight.grad
    assert category_grad.abs().sum(dim=1).nonzero().flatten().tolist() == [4]  # only "surgical" was seen


def fused_tokens(model, feature_ids, values):
    """Fused feature-value embeddings before the time embedding is added."""
    embeddings = model.medfuse.embeddings
    feature_ids, values = torch.tensor(feature_ids), torch.tensor(values)
    return embeddings.value_fusion(embeddings.feature_embeddings(feature_ids), feature_ids, values)


def test_mufuse_is_the_papers_generalized_hadamard_product(tiny_config, vocabulary):
    model = MedFuseForSequenceClassification(tiny_config(fusion="multiplicative", hidden_size=32,
                                                         value_embedding_size=8))
    fusion = model.medfuse.embeddings.value_fusion
    with torch.no_grad():
        fusion.gamma.normal_()
        fusion.beta.normal_()
    sodium = vocabulary.id_of("sodium")
    values = torch.tensor([-1.5, 0.0, 2.0])
    expected = model.medfuse.embeddings.feature_embeddings.weight[sodium] * (
        fusion.gamma[sodium] * fusion.value_projector(values) + fusion.beta[sodium]
    ).repeat(1, 4)  # e_v (d′ = 8) broadcast over d = 4·d′
    torch.testing.assert_close(fused_tokens(model, [sodium] * 3, values.tolist()), expected)


def test_categorical_tokens_are_the_papers_concatenation_map(vocabulary, tiny_config):
    """The pair table must give exactly tanh(W[e_f ; e_category] + b) for each categorical token, for every
    categorical feature (two here, so that a wrong offset between their blocks of pairs would show)."""
    gender = FeatureSpec(name="gender", kind="categorical", categories=["female", "male"])
    two_categorical = FeatureVocabulary([*vocabulary, gender])
    tokenizer = MedFuseTokenizer(two_categorical)
    model = MedFuseForSequenceClassification(tiny_config(**two_categorical.config_kwargs())).eval()
    embeddings = model.medfuse.embeddings
    events = [("icu_type", "surgical", 0.0), ("gender", "male", 0.0), ("icu_type", "coronary", 0.0),
              ("gender", "female", 0.0), ("sodium", 140.0, 1.0)]
    batch = encode(tokenizer, [events])
    feature_ids, category_ids = batch["feature_ids"][0, :4], batch["values"][0, :4].long()
    fusion = embeddings.categorical_fusion
    expected = torch.tanh(fusion.proj(torch.cat([embeddings.feature_embeddings(feature_ids),
                                                 fusion.category_embeddings(category_ids)], dim=-1)))
    tokens = embeddings(batch["feature_ids"], batch["values"], batch["times"])[0]
    torch.testing.assert_close(tokens[:4] - embeddings.time_embeddings(batch["times"][0, :4]), expected)


def test_a_categorical_value_that_is_no_category_id_is_a_clear_error(tokenizer, tiny_config, vocabulary):
    model = MedFuseForSequenceClassification(tiny_config())
    batch = encode(tokenizer, [[("icu_type", "surgical", 0.0), ("sodium", 140.0, 1.0)]])
    batch["values"][0, 0] = -0.7  # a normalised number where a category id belongs
    with pytest.raises(ValueError,
                       match=f"batch row 0, event 0: feature id {vocabulary.id_of('icu_type')} is categorical.*-0.7"):
        model(**batch)


def test_mufuse_value_modulates_each_feature_differently_and_nonlinearly(tiny_config, vocabulary):
    """Would fail for additive fusion, whose value effect e(f, v) - e(f, v') is the same for every feature."""
    model = MedFuseForSequenceClassification(tiny_config(fusion="multiplicative"))
    sodium, heart_rate = vocabulary.id_of("sodium"), vocabulary.id_of("heart_rate")
    with torch.no_grad():
        tokens = fused_tokens(model, [sodium, sodium, sodium, heart_rate, heart_rate], [-2.0, 0.0, 2.0, -2.0, 2.0])
        additive = MedFuseForSequenceClassification(tiny_config(fusion="additive"))
        additive_tokens = fused_tokens(additive, [sodium, sodium, heart_rate, heart_rate], [-2.0, 2.0, -2.0, 2.0])
    sodium_effect, heart_rate_effect = tokens[2] - tokens[0], tokens[4] - tokens[3]
    assert not torch.allclose(sodium_effect, heart_rate_effect, atol=1e-3)
    assert not torch.allclose(tokens[1], (tokens[0] + tokens[2]) / 2, atol=1e-3)  # not affine in the value
    torch.testing.assert_close(additive_tokens[1] - additive_tokens[0], additive_tokens[3] - additive_tokens[2])


def test_scane_is_value_times_feature_embedding(tiny_config, vocabulary):
    model = MedFuseForSequenceClassification(tiny_config(fusion="scane"))
    assert model.config.value_embedding_size == 1
    assert not any("value_fusion" in name for name, _ in model.named_parameters())
    sodium = vocabulary.id_of("sodium")
    tokens = fused_tokens(model, [sodium, sodium], [0.5, -3.0])
    identity = model.medfuse.embeddings.feature_embeddings.weight[sodium]
    torch.testing.assert_close(tokens, torch.stack([0.5 * identity, -3.0 * identity]))


def test_fresh_model_starts_from_the_papers_initialisation(tiny_config):
    model = MedFuseModel(tiny_config())
    fusion = model.embeddings.value_fusion
    assert torch.equal(fusion.gamma, torch.ones_like(fusion.gamma))
    assert torch.equal(fusion.beta, torch.zeros_like(fusion.beta))
    identities = model.embeddings.feature_embeddings.weight
    assert identities[0].abs().sum() == 0 and 0.7 < identities[2:].std() < 1.3


def test_save_then_auto_load_in_a_fresh_process_gives_identical_logits(tmp_path, tokenizer, cohort, tiny_config):
    model = MedFuseForSequenceClassification(tiny_config(id2label={0: "survived", 1: "died"})).eval()
    batch = encode(tokenizer, cohort[:5])
    with torch.no_grad():
        expected = model(**batch).logits
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    torch.save(dict(batch), tmp_path / "batch.pt")
    assert {"model.safetensors", "config.json", "preprocessor_config.json"} <= {
        path.name for path in tmp_path.iterdir()
    }
    assert not list(tmp_path.glob("*.bin"))
    script = f"""
import torch, medfuse_hf
from transformers import AutoModelForSequenceClassification, AutoFeatureExtractor
torch.set_num_threads({torch.get_num_threads()})  # bitwise equality needs the same split of the sums
model = AutoModelForSequenceClassification.from_pretrained({str(tmp_path)!r}).eval()
assert type(model).__name__ == "MedFuseForSequenceClassification", type(model)
assert model.config.id2label == {{0: "survived", 1: "died"}}
assert type(AutoFeatureExtractor.from_pretrained({str(tmp_path)!r})).__name__ == "MedFuseTokenizer"
with torch.no_grad():
    logits = model(**torch.load({str(tmp_path / "batch.pt")!r})).logits
torch.save(logits, {str(tmp_path / "logits.pt")!r})
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected, atol=0, rtol=0)


def test_every_head_resolves_through_the_auto_classes(tmp_path, tiny_config):
    config = tiny_config()
    MedFuseForPreTraining(config).save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), MedFuseConfig)
    assert isinstance(AutoModelForPreTraining.from_pretrained(tmp_path), MedFuseForPreTraining)
    assert isinstance(AutoModel.from_pretrained(tmp_path), MedFuseModel)


def test_a_classifier_loads_a_pretrained_encoder(tmp_path, tiny_config):
    pretrained = MedFuseForPreTraining(tiny_config())
    pretrained.save_pretrained(tmp_path)
    classifier = MedFuseForSequenceClassification.from_pretrained(tmp_path)
    torch.testing.assert_close(
        classifier.medfuse.embeddings.feature_embeddings.weight,
        pretrained.medfuse.embeddings.feature_embeddings.weight
    )


@pytest.mark.parametrize("head", [MedFuseForPreTraining, MedFuseForSequenceClassification])
def test_the_encoder_of_a_checkpoint_with_a_head_loads_without_reporting_the_head(tmp_path, tiny_config, head):
    """Reading a base's representation (`predict.py --representations`) loads the encoder alone: the head is left
    behind on purpose and is not listed as unexpected; a key that belongs to nothing still is."""
    checkpoint = head(tiny_config())
    checkpoint.save_pretrained(tmp_path)
    encoder, info = MedFuseModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["unexpected_keys"] == set() and info["missing_keys"] == set()
    torch.testing.assert_close(encoder.embeddings.feature_embeddings.weight,
                               checkpoint.medfuse.embeddings.feature_embeddings.weight)
    weights = load_file(tmp_path / "model.safetensors")
    save_file({**weights, "stray_head.weight": torch.zeros(2)}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    _, info = MedFuseModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["unexpected_keys"] == {"stray_head.weight"}


@pytest.mark.parametrize(
    "num_labels, problem_type, labels",
    [
        (2, None, torch.tensor([0, 1, 1])),
        (4, None, torch.tensor([3, 0, 2])),
        (3, "multi_label_classification", torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])),
        (1, None, torch.tensor([0.5, -1.0, 2.0])),
    ],
)
def test_problem_types_compute_their_loss(tokenizer, cohort, tiny_config, num_labels, problem_type, labels):
    model = MedFuseForSequenceClassification(tiny_config(num_labels=num_labels, problem_type=problem_type))
    output = model(**encode(tokenizer, cohort[:3]), labels=labels)
    assert output.logits.shape == (3, num_labels)
    assert output.loss.ndim == 0 and output.loss > 0


def test_focal_loss_down_weights_confident_predictions(tokenizer, cohort, tiny_config):
    focal = MedFuseForSequenceClassification(tiny_config(classification_loss="focal", focal_alpha=0.5))
    plain = MedFuseForSequenceClassification(tiny_config())
    plain.load_state_dict(focal.state_dict())
    batch, labels = encode(tokenizer, cohort[:8]), torch.tensor([0, 1] * 4)
    probability = plain(**batch).logits.softmax(-1).gather(1, labels[:, None]).squeeze(1)
    expected = (0.5 * (1 - probability) ** 2 * -probability.log()).mean()
    torch.testing.assert_close(focal(**batch, labels=labels).loss, expected)
    assert focal(**batch, labels=labels).loss < plain(**batch, labels=labels).loss


def test_risks_take_off_what_class_weights_added_to_the_odds(tiny_config):
    """A loss that weighs deaths w1/w0 = 6 times learns odds 6 times the true ones (its optimum): `risks` gives the
    true probabilities back, in the same order; a model without offsets gives its softmax."""
    weights = [0.58, 3.48]
    model = MedFuseForSequenceClassification(tiny_config(class_weights=weights,
                                                         logit_offsets=[-math.log(weight) for weight in weights]))
    true = torch.tensor([0.02, 0.14, 0.5, 0.9])
    weighted_log_odds = (true / (1 - true) * weights[1] / weights[0]).log()
    logits = torch.stack([torch.zeros(4), weighted_log_odds], dim=1)
    assert torch.allclose(model.risks(logits)[:, 1], true, atol=1e-6)
    assert torch.equal(MedFuseForSequenceClassification(tiny_config()).risks(logits), logits.softmax(dim=-1))
    with pytest.raises(StrictDataclassError, match="logit_offsets has 1 entries for 2 labels"):
        tiny_config(logit_offsets=[0.0])


def test_class_weights_weight_the_cross_entropy_and_shards_average_to_the_batch(tokenizer, cohort, tiny_config):
    weighted = MedFuseForSequenceClassification(tiny_config(class_weights=[1.0, 4.0])).eval()
    batch, labels = encode(tokenizer, cohort[:6]), torch.tensor([0, 0, 0, 0, 1, 1])
    logits = weighted(**batch).logits
    per_patient = (torch.nn.functional.cross_entropy(logits, labels, reduction="none")
                   * torch.tensor([1.0, 4.0])[labels])
    loss = weighted(**batch, labels=labels).loss
    torch.testing.assert_close(loss, per_patient.mean())
    # Two processes each take half of the batch and average their losses (gradients): the same loss as one process.
    halves = [weighted(**{k: v[part] for k, v in batch.items()}, labels=labels[part]).loss
              for part in (slice(0, 3), slice(3, 6))]
    torch.testing.assert_close(loss, torch.stack(halves).mean())
    with pytest.raises(StrictDataclassError, match="class_weights has 3 entries for 2 labels"):
        tiny_config(class_weights=[1.0, 1.0, 1.0])


def test_pretraining_loss_counts_only_observed_features(tokenizer, cohort, tiny_config):
    model = MedFuseForPreTraining(tiny_config())
    from medfuse_hf.data.forecasting import forecasting_batch

    batch = forecasting_batch(tokenizer, cohort[:4], cutoffs=[24.0] * 4, horizon_hours=6.0)
    output = model(**batch)
    mask = batch["forecast_mask"]
    expected = ((output.forecast - batch["forecast_values"]) ** 2 * mask).sum() / mask.sum()
    torch.testing.assert_close(output.loss, expected)
    garbage = batch["forecast_values"] + 100.0 * (1 - mask)  # unobserved targets must not matter
    torch.testing.assert_close(model(**{**batch, "forecast_values": garbage}).loss, output.loss)
    output.loss.backward()


def test_masked_values_are_hidden_only_on_numeric_events_and_at_least_once_per_patient(tokenizer, cohort):
    import random

    from medfuse_hf.data import MaskedValueCollator

    patients = [*cohort[:31], {"feature": ["icu_type"], "value": ["medical"], "time": [0.0]}]  # nothing to hide
    collate = MaskedValueCollator(tokenizer, mask_probability=0.15, rng=random.Random(0))
    batch = collate(patients)
    hidden, ids = batch["value_mask"], batch["feature_ids"]
    expected = tokenizer(patients, return_tensors="pt", pad_to_multiple_of=8)
    torch.testing.assert_close(batch["masked_values"], expected["values"])
    torch.testing.assert_close(batch["values"], expected["values"].masked_fill(hidden, 0.0))
    categorical = torch.tensor(tokenizer.feature_vocabulary.config_kwargs()["categorical_feature_ids"])
    assert not (hidden & (torch.isin(ids, categorical) | ~batch["attention_mask"].bool())).any()
    assert hidden[:31].any(dim=1).all() and not hidden[31].any()
    assert 0.10 < hidden.sum() / batch["attention_mask"][:31].sum() < 0.20
    again = MaskedValueCollator(tokenizer, mask_probability=0.15, rng=random.Random(0))(patients)
    assert torch.equal(again["value_mask"], hidden)  # the same draws from the same seed (a resumed run)


@pytest.mark.parametrize("objective", ["forecasting", "masked_values"])
def test_pretraining_draws_keyed_by_patient_are_the_same_in_any_batch_and_new_each_epoch(tokenizer, cohort,
                                                                                          objective):
    """What a resumed run, or another process's share of the batches, needs: a patient's cut-off or hidden values
    depend on (seed, epoch, patient) alone, not on the patients collated before it nor on the batch's padding."""
    from medfuse_hf.data import ForecastingCollator, MaskedValueCollator

    make = ForecastingCollator if objective == "forecasting" else MaskedValueCollator
    rows = sorted((dict(patient, row=index) for index, patient in enumerate(cohort[:16])),
                  key=lambda row: len(row["feature"]))  # the longest pad the shortest's batch
    collate = make(tokenizer, row_key="row", seed=3)

    def drawn(batch: dict) -> list[torch.Tensor]:
        """Each patient's draws: its hidden values among its events, or what its cut-off decides (its targets and
        how many of its events come before it)."""
        present = batch["attention_mask"].bool()
        if objective == "forecasting":
            return [torch.cat([mask, events.sum(0, keepdim=True).float()])
                    for mask, events in zip(batch["forecast_mask"], present)]
        return [hidden[events] for hidden, events in zip(batch["value_mask"], present)]

    everyone, shortest = collate(rows), collate(rows[:4])
    assert everyone["attention_mask"].shape[1] > shortest["attention_mask"].shape[1]
    for index in range(4):
        assert torch.equal(drawn(everyone)[index], drawn(shortest)[index])
    collate.set_epoch(1)
    assert not all(torch.equal(a, b) for a, b in zip(drawn(collate(rows)), drawn(everyone)))


def test_a_masked_value_cannot_leak_into_its_own_prediction(tokenizer, cohort, tiny_config, fusion):
    import random

    from medfuse_hf.data import MaskedValueCollator

    if fusion == "scane":  # its e_f is the token of value 1: a hidden value would look observed
        with pytest.raises(StrictDataclassError, match="masked_values pretraining hides a value"):
            tiny_config(fusion=fusion, pretraining_objective="masked_values")
        return
    model = MedFuseForPreTraining(tiny_config(fusion=fusion, pretraining_objective="masked_values")).eval()
    batch = MaskedValueCollator(tokenizer, rng=random.Random(1))(cohort[:4])
    hidden = batch["value_mask"]
    with torch.no_grad():
        output = model(**batch)
        behind_the_mask = model(**{**batch, "values": batch["values"].masked_fill(hidden, 50.0)})
        shown_changed = model(**{**batch, "values": batch["values"].masked_fill(~hidden, 50.0)})
    torch.testing.assert_close(behind_the_mask.masked_value_predictions, output.masked_value_predictions)
    assert not torch.allclose(shown_changed.masked_value_predictions[hidden], output.masked_value_predictions[hidden])
    mask = hidden.float()
    expected = ((output.masked_value_predictions - batch["masked_values"]) ** 2 * mask).sum() / mask.sum()
    torch.testing.assert_close(output.loss, expected)
    garbage = batch["masked_values"] + 100.0 * (1 - mask)  # targets of shown events must not matter
    with torch.no_grad():
        torch.testing.assert_close(model(**{**batch, "masked_values": garbage}).loss, output.loss)
    forecaster = MedFuseForPreTraining(tiny_config(fusion=fusion, pretraining_objective="forecasting"))
    with pytest.raises(ValueError,
                       match="pretraining_objective is 'forecasting': its batches come from ForecastingCollator"):
        forecaster(**batch)


def test_inputs_from_another_vocabulary_fail_with_a_clear_message(tiny_config):
    model = MedFuseModel(tiny_config(vocab_size=6))
    with pytest.raises(ValueError, match=r"feature_ids range 0..9 lies outside the vocabulary \(vocab_size 6\)"):
        model(torch.tensor([[9, 0]]), torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[1, 0]]))
    with pytest.raises(ValueError, match="inputs must all be"):
        model(torch.tensor([[2, 3]]), torch.zeros(1, 3), torch.zeros(1, 2), torch.ones(1, 2))


def test_given_tokens_replace_the_embeddings_and_must_fit_the_events(tokenizer, cohort, tiny_config):
    model = MedFuseModel(tiny_config()).eval()
    batch = tokenizer(cohort[:2], return_tensors="pt")
    with torch.no_grad():
        tokens = model.embeddings(batch["feature_ids"], batch["values"], batch["times"])
        torch.testing.assert_close(model(**batch, inputs_embeds=tokens).pooler_output, model(**batch).pooler_output)
    with pytest.raises(ValueError, match=r"inputs_embeds must be \(batch_size, num_events, hidden_size\)"):
        model(**batch, inputs_embeds=tokens[:, :-1])
    with pytest.raises(ValueError, match="value_mask hides values inside the embeddings"):
        model(**batch, inputs_embeds=tokens, value_mask=torch.zeros_like(batch["feature_ids"]))


def test_invalid_configs_are_rejected_when_built():
    with pytest.raises(StrictDataclassError, match="multiple of value_embedding_size"):
        MedFuseConfig(hidden_size=144, value_embedding_size=100)
    with pytest.raises(StrictDataclassError, match="fusion"):
        MedFuseConfig(fusion="gated")
    with pytest.raises(StrictDataclassError, match="focal loss weighs the classes by focal_alpha"):
        MedFuseConfig(classification_loss="focal", class_weights=[0.6, 3.0])


@pytest.mark.parametrize("untrained", [{"pooling": "per_feature"}, {"pooling": "attention"},
                                       {"static_feature_ids": [2]}])
def test_masked_value_pretraining_refuses_a_pooling_it_would_leave_untrained(tiny_config, untrained):
    """Its loss reads token states only: a pooler with weights would be saved as initialised."""
    with pytest.raises(ValueError, match="would be saved untrained"):
        MedFuseForPreTraining(tiny_config(pretraining_objective="masked_values", **untrained))
    MedFuseForPreTraining(tiny_config(pretraining_objective="forecasting", **untrained))


def test_paper_preset_matches_the_authors_p12_setting():
    config = MedFuseConfig.paper_p12(vocab_size=44)
    assert (config.hidden_size, config.value_embedding_size, config.num_hidden_layers, config.num_attention_heads) == (
        144, 144, 1, 1,
    )
    assert ((config.classification_loss, config.focal_alpha, config.focal_gamma, config.norm_first)
            == ("focal", 0.5, 2.0, False))


def test_u_shaped_sodium_risk_is_learnable(tokenizer, cohort, tiny_config):
    """The paper's equifinality case: low *or* high sodium means risk; MuFuse must fit it."""
    torch.manual_seed(0)
    model = MedFuseForSequenceClassification(tiny_config(hidden_size=32, value_embedding_size=32, num_hidden_layers=1))
    batch, labels = encode(tokenizer, cohort), torch.tensor([patient["label"] for patient in cohort])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):  # seeds 0-2 reach a training AUROC of 0.99 by then
        rows = torch.randint(0, len(cohort), (64,), generator=generator)
        loss = model(**{key: value[rows] for key, value in batch.items()}, labels=labels[rows]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        scores = model.eval()(**batch).logits.softmax(-1)[:, 1]
    assert roc_auc_score(labels.numpy(), scores.numpy()) > 0.95


def test_the_periodic_value_projector_trains_and_transfers(
    tmp_path, tokenizer, cohort, tiny_config, vocabulary, fusion
):
    from medfuse_hf import export_feature_embeddings

    model = MedFuseForSequenceClassification(tiny_config(fusion=fusion, value_projector="periodic"))
    model(**encode(tokenizer, cohort[:4]), labels=torch.tensor([0, 1, 0, 1])).loss.backward()
    if fusion == "scane":  # SCANE has no φ
        return
    projector = model.medfuse.embeddings.value_fusion.value_projector
    assert projector.frequencies.grad is not None and projector.frequencies.grad.abs().sum() > 0
    export_feature_embeddings(model, tokenizer, tmp_path / "periodic", min_patients=20)
    target = MedFuseForSequenceClassification(tiny_config(fusion=fusion, value_projector="periodic"))
    load_feature_embeddings(target.medfuse, tmp_path / "periodic", vocabulary)
    torch.testing.assert_close(target.medfuse.embeddings.value_fusion.value_projector.frequencies,
                               projector.frequencies)
    with pytest.raises(ValueError, match="value_projector is 'periodic' in the checkpoint but 'mlp' in the model"):
        load_feature_embeddings(MedFuseForSequenceClassification(tiny_config(fusion=fusion)).medfuse,
                                tmp_path / "periodic", vocabulary)


@pytest.mark.parametrize("class_weights", [None, [1.0, 3.0]])
def test_a_label_outside_the_models_classes_is_an_error_naming_its_batch_row(tokenizer, cohort, tiny_config,
                                                                              class_weights):
    from medfuse_hf.data import MedFuseDataCollator

    model = MedFuseForSequenceClassification(tiny_config(class_weights=class_weights))
    patients = [{**patient, "label": label} for patient, label in zip(cohort[:3], [0, 2, 1])]
    batch = MedFuseDataCollator(tokenizer, label_column="label")(patients)
    with pytest.raises(ValueError, match=r"labels: batch row 1 has class 2, but the model has num_labels=2"):
        model(**batch)
    with pytest.raises(ValueError, match=r"batch row 0 has class -1"):
        model(**encode(tokenizer, cohort[:2]), labels=torch.tensor([-1, 0]))


def per_feature_model(tiny_config) -> MedFuseForSequenceClassification:
    return MedFuseForSequenceClassification(tiny_config(pooling="per_feature")).eval()


def test_per_feature_pooling_ignores_the_order_of_a_features_events(tokenizer, cohort, tiny_config):
    model = per_feature_model(tiny_config)
    batch = encode(tokenizer, cohort[:4])
    shuffled = {name: tensor.clone() for name, tensor in batch.items()}
    generator = torch.Generator().manual_seed(0)
    for row, length in enumerate(batch["attention_mask"].sum(dim=1).tolist()):
        order = torch.randperm(length, generator=generator)
        for name in shuffled:
            shuffled[name][row, :length] = batch[name][row, order]
    assert not torch.equal(shuffled["feature_ids"], batch["feature_ids"])
    with torch.no_grad():
        torch.testing.assert_close(model(**shuffled).logits, model(**batch).logits, atol=1e-5, rtol=0)


def test_per_feature_pooling_is_each_features_attention_and_latest_state_read_across_features(tokenizer,
                                                                                                tiny_config):
    """The pooler against its definition, written patient by patient and feature by feature: patients with other
    features, two tokens of a feature at its latest time, and a row of padding only."""
    pooler = per_feature_model(tiny_config).medfuse.pooler
    with torch.no_grad():
        pooler.queries.normal_()  # attention that is no plain mean
    patients = [[("sodium", 140.0, 1.0), ("sodium", 150.0, 3.0), ("sodium", 145.0, 3.0), ("heart_rate", 80.0, 2.0)],
                [("icu_type", "medical", 0.0), ("heart_rate", 90.0, 0.5), ("heart_rate", 95.0, 4.0)]]
    batch = encode(tokenizer, patients)
    mask = torch.cat([batch["attention_mask"].bool(), torch.zeros_like(batch["attention_mask"][:1]).bool()])
    feature_ids, times = (torch.cat([batch[name], torch.zeros_like(batch[name][:1])])
                          for name in ("feature_ids", "times"))
    hidden_states = torch.randn(*mask.shape, pooler.key.in_features)
    hidden_states[~mask] = float("nan")  # padding's states never reach a feature, forward or backward
    expected = []
    for states, kept, ids, hours in zip(hidden_states, mask, feature_ids, times):
        states, ids, hours = states[kept], ids[kept], hours[kept]
        features = pooler.not_measured.clone()
        for feature in ids.unique():
            own = ids == feature
            weights = (pooler.key(states[own]) @ pooler.queries[feature] / states.size(-1) ** 0.5).softmax(dim=0)
            latest = states[own][hours[own] == hours[own].max()].mean(dim=0)
            features[feature] = pooler.summary(torch.cat([weights @ states[own], latest]))
        expected.append(pooler.feature_layer(features[None, 1:], torch.ones(1, 1, 1, len(features) - 1).bool())[0])
    pooled = pooler(hidden_states, mask, feature_ids, times)
    torch.testing.assert_close(pooled, torch.cat(expected).mean(dim=1), atol=1e-5, rtol=1e-5)
    pooled.sum().backward()
    assert all(torch.isfinite(parameter.grad).all() for parameter in pooler.parameters() if parameter.grad is not None)


def test_an_unmeasured_feature_speaks_through_its_own_not_measured_vector(tokenizer, tiny_config):
    model = per_feature_model(tiny_config)
    without, with_it = [("sodium", 140.0, 1.0)], [("sodium", 140.0, 1.0), ("heart_rate", 90.0, 2.0)]
    batch = encode(tokenizer, [without, with_it])
    heart_rate = tokenizer.feature_vocabulary.id_of("heart_rate")
    with torch.no_grad():
        before = model(**batch).logits
        model.medfuse.pooler.not_measured[heart_rate] += 1.0
        after = model(**batch).logits
    assert not torch.allclose(after[0], before[0])  # absence of heart rate is information
    torch.testing.assert_close(after[1], before[1])  # a measured feature is read from its tokens


def test_per_feature_pooling_trains_on_a_stay_of_one_event(tokenizer, tiny_config):
    model = per_feature_model(tiny_config).train()
    batch = encode(tokenizer, [[("sodium", 140.0, 1.0)], [("heart_rate", 70.0, 0.0), ("sodium", 150.0, 3.0)]])
    loss = model(**batch, labels=torch.tensor([0, 1])).loss
    loss.backward()
    gradients = [parameter.grad for parameter in model.parameters() if parameter.grad is not None]
    assert torch.isfinite(loss) and all(torch.isfinite(gradient).all() for gradient in gradients)
    assert model.medfuse.pooler.not_measured.grad.abs().sum() > 0
