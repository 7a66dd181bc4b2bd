"""What an experienced Hugging Face user expects of any transformers model: low-precision weights, the common
forward options, and graphs that compile and export."""

import pytest
import torch

from medfuse_hf import (
    FeatureVocabulary,
    MedFuseForPreTraining,
    MedFuseForSequenceClassification,
    MedFuseModel,
    MedFuseTokenizer,
    merge,
)
from medfuse_hf.feature_tables import per_feature_tables

HEADS = [MedFuseModel, MedFuseForSequenceClassification, MedFuseForPreTraining]
# bf16 keeps 8 bits of mantissa, fp16 11: how far a tiny model's outputs may move from fp32
TOLERANCE = {torch.bfloat16: 0.1, torch.float16: 0.02}


def batch(tokenizer, cohort, size=4):
    return dict(tokenizer(cohort[:size], return_tensors="pt"))


def main_output(output) -> torch.Tensor:
    return (
        output.logits
        if hasattr(output, "logits")
        else output.forecast
        if hasattr(output, "forecast")
        else output.pooler_output
    )


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_weights_run_every_head_close_to_fp32(tokenizer, cohort, tiny_config, head, dtype, fusion):
    model = head(tiny_config(fusion=fusion, time_embedding="sinusoidal")).eval()
    inputs = batch(tokenizer, cohort)
    with torch.no_grad():
        expected = main_output(model(**inputs)).float()
        actual = main_output(model.to(dtype)(**inputs))  # fp32 values and times from the tokenizer, as users pass them
    assert actual.dtype == dtype
    torch.testing.assert_close(actual.float(), expected, atol=TOLERANCE[dtype], rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_weights_pool_close_to_fp32(tokenizer, cohort, tiny_config, dtype, pooling):
    model = MedFuseModel(tiny_config(pooling=pooling, time_embedding="sinusoidal")).eval()
    inputs = batch(tokenizer, cohort)
    with torch.no_grad():
        expected = model(**inputs).pooler_output.float()
        actual = model.to(dtype)(**inputs).pooler_output
    assert actual.dtype == dtype
    torch.testing.assert_close(actual.float(), expected, atol=TOLERANCE[dtype], rtol=0)


def test_from_pretrained_in_bfloat16_predicts(tmp_path, tokenizer, cohort, tiny_config):
    MedFuseForSequenceClassification(tiny_config(time_embedding="cve")).save_pretrained(tmp_path)
    model = MedFuseForSequenceClassification.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert model(**batch(tokenizer, cohort)).logits.dtype == torch.bfloat16


def test_hidden_states_and_attentions_are_returned_when_asked(tokenizer, cohort, tiny_config):
    model = MedFuseForSequenceClassification(tiny_config(num_hidden_layers=2, num_attention_heads=2)).eval()
    inputs = batch(tokenizer, cohort)
    output = model(**inputs, output_hidden_states=True, output_attentions=True)
    batch_size, length = inputs["feature_ids"].shape
    assert len(output.hidden_states) == 3 and output.hidden_states[0].shape == (batch_size, length, 32)
    assert len(output.attentions) == 2 and output.attentions[0].shape == (batch_size, 2, length, length)
    padding = ~inputs["attention_mask"].bool()
    weights = output.attentions[0]
    assert torch.all(weights.masked_select(padding[:, None, None, :].expand_as(weights)) == 0)  # padding unattended
    torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights.sum(-1)))
    # the eager path that returns the weights computes what SDPA does
    torch.testing.assert_close(output.logits, model(**inputs).logits, atol=1e-5, rtol=0)
    plain = model(**inputs)
    assert plain.hidden_states is None and plain.attentions is None


def test_eager_attention_can_be_chosen_at_load(tmp_path, tokenizer, cohort, tiny_config):
    model = MedFuseForSequenceClassification(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    eager = MedFuseForSequenceClassification.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert eager.config._attn_implementation == "eager"
    inputs = batch(tokenizer, cohort)
    torch.testing.assert_close(eager(**inputs).logits, model(**inputs).logits, atol=1e-5, rtol=0)


def test_return_dict_false_gives_the_fields_as_a_tuple(tokenizer, cohort, tiny_config):
    model = MedFuseForSequenceClassification(tiny_config()).eval()
    inputs = batch(tokenizer, cohort)
    labels = torch.tensor([0, 1, 0, 1])
    loss, logits = model(**inputs, labels=labels, return_dict=False)
    output = model(**inputs, labels=labels)
    torch.testing.assert_close(loss, output.loss)
    torch.testing.assert_close(logits, output.logits)


@pytest.mark.parametrize("head", HEADS)
def test_an_unknown_keyword_argument_is_an_error(tokenizer, cohort, tiny_config, head):
    with pytest.raises(TypeError, match="output_hidden_state"):
        head(tiny_config())(**batch(tokenizer, cohort), output_hidden_state=True)  # the typo of a real option


@pytest.mark.parametrize("pooling", ["attention", "per_feature"])
def test_the_model_compiles_without_graph_breaks(tokenizer, cohort, tiny_config, pooling):
    torch._dynamo.reset()
    model = MedFuseForSequenceClassification(tiny_config(pooling=pooling)).eval()
    inputs = batch(tokenizer, cohort)
    compiled = torch.compile(model, fullgraph=True, backend="eager")  # fullgraph: a graph break is an error
    torch.testing.assert_close(compiled(**inputs).logits, model(**inputs).logits)


@pytest.mark.parametrize("pooling", ["mean", "per_feature"])
def test_the_model_exports(tokenizer, cohort, tiny_config, pooling):
    model = MedFuseForSequenceClassification(tiny_config(pooling=pooling)).eval()
    inputs = batch(tokenizer, cohort)
    exported = torch.export.export(model, args=(), kwargs=inputs)
    torch.testing.assert_close(exported.module()(**inputs).logits, model(**inputs).logits)


def test_eager_input_checks_still_name_the_fault(tokenizer, cohort, tiny_config):
    inputs = batch(tokenizer, cohort)
    inputs["feature_ids"][0, 0] = 999
    with pytest.raises(ValueError, match="lies outside the vocabulary"):
        MedFuseForSequenceClassification(tiny_config())(**inputs)


@pytest.mark.parametrize("head", HEADS)
def test_resizing_grows_every_per_feature_table_and_the_model_reloads(
    tmp_path, tokenizer, cohort, tiny_config, head, fusion
):
    model = head(tiny_config(fusion=fusion)).eval()
    old_size = model.config.vocab_size
    before = {name: table.detach().clone() for name, (table, _) in per_feature_tables(model).items()}
    assert any(name.endswith("feature_embeddings.weight") for name in before)
    model.resize_token_embeddings(old_size + 3)
    tables = per_feature_tables(model)
    for name, (table, _) in tables.items():
        assert table.shape[0] == old_size + 3, name
        torch.testing.assert_close(table[:old_size], before[name])  # existing features keep what they learnt
    if fusion == "multiplicative":  # a new feature starts where MuFuse starts every feature: γ = 1, β = 0
        gamma, beta = (
            tables[
                f"{model.base_model_prefix}.embeddings.value_fusion.{n}"
                if head is not MedFuseModel
                else f"embeddings.value_fusion.{n}"
            ][0]
            for n in ("gamma", "beta")
        )
        assert torch.all(gamma[old_size:] == 1) and torch.all(beta[old_size:] == 0)
    inputs = batch(tokenizer, cohort)
    inputs["feature_ids"][0, 0] = old_size + 2  # a feature id the model did not have before
    output = main_output(model(**inputs))
    if head is MedFuseForPreTraining:
        assert output.shape[-1] == old_size + 3
    model.save_pretrained(tmp_path)
    reloaded = head.from_pretrained(tmp_path).eval()
    assert reloaded.config.vocab_size == old_size + 3
    torch.testing.assert_close(main_output(reloaded(**inputs)), output)


def test_a_masked_value_head_grows_with_the_vocabulary(tiny_config):
    model = MedFuseForPreTraining(tiny_config(pretraining_objective="masked_values"))
    model.resize_token_embeddings(model.config.vocab_size + 2)
    assert model.masked_value_head.out_features == model.masked_value_head.weight.shape[0] == model.config.vocab_size


def test_extending_to_a_hospitals_vocabulary_keeps_every_trained_row(tmp_path, vocabulary, tiny_config, pooling):
    """A checkpoint meets a cohort with a new numeric and a new categorical feature (`--init_from` with a partial
    match): shared features keep their trained rows and category levels, the new ones start fresh and are used."""
    base = MedFuseForSequenceClassification(tiny_config(pooling=pooling)).eval()
    patients = [{"feature": ["ward", "lactate", "sodium"], "value": ["c", 2.0, 140.0], "time": [0.0, 1.0, 2.0]},
                {"feature": ["ward", "lactate"], "value": ["a", 4.0], "time": [0.0, 1.0]}]
    cohort_vocabulary = FeatureVocabulary.from_events(patients, categorical={"ward": ["a", "b", "c"]})
    merged = merge(vocabulary, cohort_vocabulary)
    before = {name: table.detach().clone() for name, (table, _) in per_feature_tables(base).items()}
    categories_before = base.medfuse.embeddings.categorical_fusion.category_embeddings.weight.detach().clone()
    assert base.extend_vocabulary(merged) == ["lactate", "ward"]  # sodium was the model's already
    for name, (table, _) in per_feature_tables(base).items():
        assert table.shape[0] == len(merged), name
        torch.testing.assert_close(table[: len(vocabulary)], before[name])
    categories = base.medfuse.embeddings.categorical_fusion.category_embeddings.weight
    assert len(categories) == merged.num_categories
    torch.testing.assert_close(categories[: len(categories_before)], categories_before)
    tokenizer = MedFuseTokenizer(merged, max_events=8)
    first, second = ({"feature": ["ward", "lactate"], "value": [ward, 2.0], "time": [0.0, 1.0]} for ward in "ac")
    inputs = tokenizer([first, second, patients[0]], return_tensors="pt")
    logits = base(**inputs).logits
    assert not torch.allclose(logits[0], logits[1])  # the new categorical feature's level reaches the output
    base.save_pretrained(tmp_path)
    torch.testing.assert_close(MedFuseForSequenceClassification.from_pretrained(tmp_path).eval()(**inputs).logits,
                               logits)
    with pytest.raises(ValueError, match="does not start with this model's"):
        base.extend_vocabulary(cohort_vocabulary)


def test_resizing_refuses_to_drop_a_categorical_feature(tiny_config):
    model = MedFuseForSequenceClassification(tiny_config())
    with pytest.raises(ValueError, match="categorical and static features"):
        model.resize_token_embeddings(max(model.config.categorical_feature_ids))


def tokenized_dataset(tokenizer, cohort):
    """The standard transformers data flow: map the tokenizer over a dataset, ragged, with a `labels` column."""
    import datasets

    raw = datasets.Dataset.from_list(cohort[:48])
    encoded = raw.map(lambda batch: tokenizer(batch, padding=False), batched=True, remove_columns=raw.column_names)
    return encoded.add_column("labels", raw["label"])


def test_the_trainer_flow_works_with_default_arguments(tmp_path, tokenizer, cohort, tiny_config):
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    train = tokenized_dataset(tokenizer, cohort)
    assert len(train[0]["feature_ids"]) == len(cohort[0]["feature"])  # ragged: padding waits for the collator
    model = MedFuseForSequenceClassification(tiny_config())
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, use_cpu=True, report_to="none")
    trainer = Trainer(model, args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer))
    result = trainer.train()
    assert result.global_step == 3 and result.training_loss > 0
    grouped = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        use_cpu=True,
        report_to="none",
        train_sampling_strategy="group_by_length",
    )  # transformers 5 name
    # lengths come from the processing class's main input, feature_ids: no hand-made `length` column
    grouped_trainer = Trainer(
        model,
        grouped,
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    assert grouped_trainer.train().global_step == 2


def test_pad_pads_every_model_input_and_keeps_the_labels(tokenizer, cohort):
    rows = list(tokenized_dataset(tokenizer, cohort).select(range(4)))
    batch = tokenizer.pad(rows, return_tensors="pt")
    expected = tokenizer(cohort[:4], return_tensors="pt")
    for key in ("feature_ids", "values", "times", "attention_mask"):
        torch.testing.assert_close(batch[key], expected[key])
    assert batch["labels"].tolist() == [patient["label"] for patient in cohort[:4]]


def test_the_collator_reads_torch_formatted_rows_with_categorical_features(cohort):
    """P12's gender is a categorical feature whose levels are "0" and "1": a torch-formatted row holds tensor(1.)."""
    import datasets

    from medfuse_hf import FeatureSpec, FeatureVocabulary, MedFuseTokenizer
    from medfuse_hf.data import MedFuseDataCollator

    numeric = FeatureVocabulary.from_events(cohort)
    tokenizer = MedFuseTokenizer(
        FeatureVocabulary([*numeric, FeatureSpec(name="gender", kind="categorical", categories=["0", "1"])])
    )
    patients = [
        dict(
            patient,
            feature=["gender", *patient["feature"]],
            value=[float(index % 2), *patient["value"]],
            time=[0.0, *patient["time"]],
        )
        for index, patient in enumerate(cohort[:4])
    ]
    collate = MedFuseDataCollator(tokenizer, label_column="label")
    as_torch = collate(list(datasets.Dataset.from_list(patients).with_format("torch")))
    plain = collate(patients)
    for key in ("feature_ids", "values", "times", "attention_mask", "labels"):
        torch.testing.assert_close(as_torch[key], plain[key])


# ----- the generic checks of transformers' ModelTesterMixin that apply, in this project's words ---------------
@pytest.mark.parametrize("head", HEADS)
def test_eval_outputs_are_deterministic(tokenizer, cohort, tiny_config, head):
    model = head(tiny_config(hidden_dropout_prob=0.3, classifier_dropout=0.3)).eval()
    inputs = batch(tokenizer, cohort)
    torch.testing.assert_close(main_output(model(**inputs)), main_output(model(**inputs)), atol=0, rtol=0)


def test_a_patient_scores_the_same_alone_or_in_a_batch(tokenizer, cohort, tiny_config, pooling):
    model = MedFuseForSequenceClassification(tiny_config(pooling=pooling)).eval()
    together = model(**batch(tokenizer, cohort, size=6)).logits
    for index in range(6):
        alone = model(**dict(tokenizer([cohort[index]], return_tensors="pt"))).logits
        torch.testing.assert_close(alone[0], together[index], atol=1e-5, rtol=0)


def test_input_embeddings_can_be_read_and_replaced(tiny_config):
    model = MedFuseForSequenceClassification(tiny_config())
    assert model.get_input_embeddings() is model.medfuse.embeddings.feature_embeddings
    replacement = torch.nn.Embedding(model.config.vocab_size, model.config.hidden_size, padding_idx=0)
    model.set_input_embeddings(replacement)
    assert model.get_input_embeddings() is replacement


def test_weights_a_checkpoint_lacks_are_initialised_not_left_on_the_meta_device(
    tmp_path, tokenizer, cohort, tiny_config
):
    MedFuseModel(tiny_config()).save_pretrained(tmp_path)  # an encoder: no classification head
    model = MedFuseForSequenceClassification.from_pretrained(tmp_path).eval()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        assert tensor.device.type == "cpu" and torch.isfinite(tensor.float()).all(), name
    assert model.medfuse.embeddings.is_categorical.sum() == len(
        model.config.categorical_feature_ids
    )  # a buffer, rebuilt
    assert torch.isfinite(model(**batch(tokenizer, cohort)).logits).all()


def test_gradient_checkpointing_gives_the_same_gradients(tokenizer, cohort, tiny_config):
    inputs = {**batch(tokenizer, cohort), "labels": torch.tensor([0, 1, 0, 1])}
    gradients = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = MedFuseForSequenceClassification(tiny_config()).train()
        if checkpointing:
            # transformers 5's name; gradient_checkpointing_enable is deprecated
            model.activation_checkpointing_enable()
            assert model.is_activation_checkpointing
        model(**inputs).loss.backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys()
    for name in gradients[0]:
        torch.testing.assert_close(gradients[1][name], gradients[0][name], atol=1e-6, rtol=1e-5)
