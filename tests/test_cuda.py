"""What only a GPU can show: CUDA kernels agree with the CPU, mixed precision stays finite and close to fp32,
frozen transfer survives the move to the GPU, and bad inputs still fail in Python rather than with a device-side
assert. Skipped where CUDA is absent (CI); run on a GPU machine with `pytest tests/test_cuda.py`."""

import pytest
import torch

from medfuse_hf import (
    FeatureSpec,
    FeatureVocabulary,
    MedFuseConfig,
    MedFuseForPreTraining,
    MedFuseForSequenceClassification,
    load_feature_embeddings,
    merge,
)
from medfuse_hf.training.frozen_encoder import memoise_pooled_outputs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def uneven_batch(tokenizer, cohort) -> dict[str, torch.Tensor]:
    """Patients of very different lengths with a categorical event, padded far beyond the shortest: the masks of
    attention and pooling matter, and low-precision fills (finfo.min) are exercised."""
    short = [("icu_type", "medical", 0.0), (cohort[0]["feature"][0], cohort[0]["value"][0], 0.5)]
    return tokenizer([short, *cohort[1:4]], return_tensors="pt", padding="max_length", max_length=64)


def on(device: torch.device, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def test_cuda_fp32_matches_the_cpu(tokenizer, cohort, tiny_config, fusion, pooling):
    model = MedFuseForSequenceClassification(tiny_config(fusion=fusion, pooling=pooling)).eval()
    batch = uneven_batch(tokenizer, cohort)
    with torch.no_grad():
        cpu = model(**batch).logits
        gpu = model.to(CUDA)(**on(CUDA, batch)).logits.cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)


def test_per_feature_pooling_repeats_bit_for_bit_under_deterministic_algorithms(tokenizer, cohort, tiny_config):
    """Its sums by slot (`index_add`) are atomic adds on CUDA, whose order varies; PyTorch's deterministic mode must
    give them (and the per-slot maxima) an order, and must not refuse them."""
    model = MedFuseForSequenceClassification(tiny_config(pooling="per_feature")).to(CUDA).eval()
    batch = on(CUDA, uneven_batch(tokenizer, cohort))
    torch.use_deterministic_algorithms(True, warn_only=True)  # cuBLAS without CUBLAS_WORKSPACE_CONFIG only warns
    try:
        with torch.no_grad():
            first, second = (model(**batch).logits for _ in range(2))
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(first, second)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_logits_are_finite_and_close_to_fp32(tokenizer, cohort, tiny_config, dtype, pooling):
    model = MedFuseForSequenceClassification(tiny_config(pooling=pooling)).to(CUDA).eval()
    batch = on(CUDA, uneven_batch(tokenizer, cohort))
    with torch.no_grad():
        full = model(**batch).logits
        with torch.autocast("cuda", dtype=dtype):
            mixed = model(**batch).logits
    assert torch.isfinite(mixed).all()
    # bf16 keeps 8 bits of mantissa: logits of order 1 may move by a few hundredths, never by their own size
    torch.testing.assert_close(mixed.float(), full, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_a_row_of_padding_only_keeps_loss_and_gradients_finite(tokenizer, cohort, tiny_config, dtype, pooling):
    """Fused attention kernels may give a fully masked row NaN, forward or backward. Such a row (built by hand: the
    tokenizer refuses a patient without events) must not reach the weights under any precision."""
    model = MedFuseForSequenceClassification(tiny_config(pooling=pooling)).to(CUDA)
    batch = on(CUDA, {name: torch.cat([tensor, torch.zeros_like(tensor[:1])])
                      for name, tensor in uneven_batch(tokenizer, cohort).items()})
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        loss = model(**batch, labels=torch.tensor([0, 1, 0, 1, 1], device=CUDA)).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(parameter.grad).all() for parameter in model.parameters() if parameter.grad is not None)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_training_steps_learn_with_fp32_master_weights(tokenizer, cohort, tiny_config, dtype):
    """The recipes' mixed precision: autocast forward, a gradient scaler for fp16, fp32 parameters. The loss on a
    fixed batch must fall, as it does in fp32."""
    model = MedFuseForSequenceClassification(tiny_config()).to(CUDA)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    batch = on(CUDA, tokenizer(cohort[:64], return_tensors="pt"))
    labels = torch.tensor([patient["label"] for patient in cohort[:64]], device=CUDA)
    losses = []
    for _ in range(30):
        with torch.autocast("cuda", dtype=dtype):
            loss = model(**batch, labels=labels).loss
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.8 * losses[0]


def test_pretraining_loss_under_bf16_matches_fp32(tokenizer, cohort, tiny_config):
    model = MedFuseForPreTraining(tiny_config()).to(CUDA).eval()
    batch = on(CUDA, tokenizer(cohort[:8], return_tensors="pt"))
    forecast_values = torch.randn(8, model.config.vocab_size, device=CUDA)
    forecast_mask = torch.rand(8, model.config.vocab_size, device=CUDA) < 0.5
    with torch.no_grad():
        full = model(**batch, forecast_values=forecast_values, forecast_mask=forecast_mask).loss
        with torch.autocast("cuda", dtype=torch.bfloat16):
            mixed = model(**batch, forecast_values=forecast_values, forecast_mask=forecast_mask).loss
    assert mixed.dtype == torch.float32  # the loss is reduced in fp32 whatever the autocast dtype
    torch.testing.assert_close(mixed, full, atol=0.05, rtol=0.02)


def test_a_memoised_probe_encoder_on_the_gpu_under_bf16_answers_as_the_encoder_does(tokenizer, cohort, tiny_config):
    """The probe's memo keys patients on the CPU and keeps their vectors on the GPU, in autocast's dtype."""
    model = MedFuseForSequenceClassification(tiny_config()).to(CUDA).eval()
    model.medfuse.requires_grad_(False)
    batch = on(CUDA, uneven_batch(tokenizer, cohort))
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        expected = model(**batch).logits
        memo = memoise_pooled_outputs(model.medfuse)
        computed, looked_up = (model(**batch).logits for _ in range(2))
    assert len(memo) == len(expected) and next(iter(memo.values())).device.type == "cuda"
    torch.testing.assert_close(computed, expected)
    torch.testing.assert_close(looked_up, expected)


def test_frozen_transfer_holds_after_the_model_moves_to_the_gpu(source):
    """Rows are loaded (and remembered) on the CPU, then the recipe moves the model: they must stay frozen there."""
    _, vocabulary, path = source
    target_vocabulary = FeatureVocabulary([*vocabulary, FeatureSpec(name="lactate")])
    model = MedFuseForSequenceClassification(
        MedFuseConfig(**target_vocabulary.config_kwargs(), num_labels=2, hidden_size=32, value_embedding_size=8)
    )
    load_feature_embeddings(model.medfuse, path, target_vocabulary, freeze=True)
    model.to(CUDA)
    sodium, lactate = target_vocabulary.id_of("sodium"), target_vocabulary.id_of("lactate")
    table = model.medfuse.embeddings.feature_embeddings.weight
    before = table.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    ids = torch.tensor([[sodium, lactate]], device=CUDA)
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(ids, torch.tensor([[0.5, 1.0]], device=CUDA), torch.tensor([[1.0, 2.0]], device=CUDA),
                         labels=torch.tensor([1], device=CUDA)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert torch.equal(table[sodium], before[sodium])
    assert not torch.equal(table[lactate], before[lactate])


def test_a_bad_category_id_on_the_gpu_is_a_clear_error_not_a_device_assert(tokenizer, tiny_config, vocabulary):
    model = MedFuseForSequenceClassification(tiny_config()).to(CUDA)
    batch = tokenizer([[("icu_type", "surgical", 0.0), ("sodium", 140.0, 1.0)]], return_tensors="pt")
    batch["values"][0, 0] = 99.0  # beyond the category table: an out-of-range index would kill the CUDA context
    with pytest.raises(ValueError, match="batch row 0, event 0: feature id .* is categorical"):
        model(**on(CUDA, batch))
    assert torch.isfinite(model(**on(CUDA, tokenizer([[("sodium", 140.0, 1.0)]], return_tensors="pt"))).logits).all()


def test_a_bf16_model_on_the_gpu_grows_to_a_hospitals_vocabulary(tiny_config, vocabulary):
    """`--init_from` with new features after the model has moved (or loaded in bf16): the grown tables, the new
    categorical fusion included, follow the model's device and dtype."""
    from medfuse_hf import MedFuseTokenizer

    cohort = FeatureVocabulary.from_events([{"feature": ["ward", "lactate"], "value": ["a", 2.0]},
                                            {"feature": ["ward", "lactate"], "value": ["b", 3.0]}],
                                           categorical={"ward": ["a", "b"]})
    merged = merge(vocabulary, cohort)
    model = MedFuseForSequenceClassification(tiny_config()).to(CUDA, torch.bfloat16).eval()
    model.extend_vocabulary(merged)
    assert {parameter.device.type for parameter in model.parameters()} == {"cuda"}
    assert {parameter.dtype for parameter in model.parameters()} == {torch.bfloat16}
    batch = MedFuseTokenizer(merged, max_events=8)([{"feature": ["ward", "lactate"], "value": ["b", 2.5],
                                                     "time": [0.0, 1.0]}],
                                                   return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**on(CUDA, batch)).logits.float()).all()


def test_a_model_on_the_gpu_scores_and_explains_patients_as_on_the_cpu(tokenizer, cohort, tiny_config):
    """`per_patient_outputs` and `explain_patient` are library API: a caller's model may sit on a GPU."""
    pytest.importorskip("captum")
    import datasets

    from medfuse_hf.training.evaluation import per_patient_outputs
    from medfuse_hf.training.explanations import explain_patient

    model = MedFuseForSequenceClassification(tiny_config()).eval()
    patients = datasets.Dataset.from_list(list(cohort[:8]))
    cpu = per_patient_outputs(patients, tokenizer, lambda batch: model(**batch).logits)
    cpu_events, _ = explain_patient(model, tokenizer, cohort[0], top_k=3)
    model.to(CUDA)
    gpu = per_patient_outputs(patients, tokenizer, lambda batch: model(**batch).logits, device=CUDA)
    gpu_events, _ = explain_patient(model, tokenizer, cohort[0], top_k=3)
    torch.testing.assert_close(torch.from_numpy(gpu), torch.from_numpy(cpu), atol=1e-4, rtol=1e-4)
    assert [event.position for event in gpu_events] == [event.position for event in cpu_events]
