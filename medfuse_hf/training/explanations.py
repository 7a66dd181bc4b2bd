"""Which events moved a patient's risk: Integrated Gradients over the fused tokens, by Captum.

Captum's `LayerIntegratedGradients` rather than hand-written attribution: it is PyTorch's own, well-kept library
for it, and reports the convergence error of its integral. Attributions are taken at the output of
`MedFuseEmbeddings`, the fused token e_f ⊙ (γ_f ⊙ φ(v) + β_f) + time(t) of each event, against a baseline whose every
event is padding at hour 0, and summed over the token's dimensions: one signed number per event, in logit units,
that add up (up to the reported error) to the positive-class logit's gap between the patient and the baseline.
"""

from dataclasses import dataclass

import numpy as np
import torch

from ..tokenization_medfuse import MedFuseTokenizer


@dataclass
class EventAttribution:
    position: int  # the event's place among the patient's events as given
    feature: str
    hours: float
    attribution: float  # contribution to the positive-class logit


def explain_patient(
    model, tokenizer: MedFuseTokenizer, patient, top_k: int, steps: int = 32
) -> tuple[list[EventAttribution], float]:
    """The `top_k` events of largest |attribution| for the positive class, and the integral's convergence error."""
    from captum.attr import LayerIntegratedGradients  # the optional `explain` extra

    events = tokenizer.encode_patient(patient)
    batch = tokenizer.pad(
        [{"feature_ids": events.feature_ids, "values": events.values, "times": events.times}], return_tensors="pt"
    )
    mask = batch["attention_mask"]

    def positive_logit(feature_ids, values, times):
        return model(
            feature_ids=feature_ids, values=values, times=times, attention_mask=mask.expand(len(feature_ids), -1)
        ).logits[:, 1]

    integrated = LayerIntegratedGradients(positive_logit, model.base_model.embeddings)
    inputs = (batch["feature_ids"], batch["values"], batch["times"])
    baselines = tuple(torch.zeros_like(tensor) for tensor in inputs)
    attributions, error = integrated.attribute(
        inputs, baselines=baselines, n_steps=steps, internal_batch_size=steps, return_convergence_delta=True
    )
    per_event = attributions.sum(dim=-1)[0].detach().double().numpy()  # (num_events,)
    order = np.argsort(-np.abs(per_event), kind="stable")[:top_k]
    vocabulary = tokenizer.feature_vocabulary
    return [
        EventAttribution(
            int(events.positions[i]),
            vocabulary.spec_of(int(events.feature_ids[i])).name,
            float(events.times[i]),
            float(per_event[i]),
        )
        for i in order
    ], float(error.abs().max())
