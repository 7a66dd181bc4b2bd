"""Which events moved a patient's risk: Integrated Gradients over the fused tokens, by Captum.

Captum's `IntegratedGradients` rather than hand-written attribution: it is PyTorch's own, well-kept library for
it, and reports the convergence error of its integral. The path runs over the fused tokens
e_f ⊙ (γ_f ⊙ φ(v) + β_f) + time(t) of the patient's events (the model's `inputs_embeds`), from a baseline whose every
token is padding's at hour 0, while the stay's structure stays the patient's own: which events are padding, which
feature each event is (what per-feature pooling groups by) and when. What is attributed is the risk's log-odds,
logit(positive) - logit(negative), of which the risk is the sigmoid: an event that raised both logits alike moved no
risk, and gets no credit. Summed over a token's dimensions, that gives one signed number per event, in log-odds
units; they add up (to the reported error) to the patient's log-odds minus the baseline's, whatever the pooling.
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
    attribution: float  # contribution to the log-odds of the positive class


def explain_patient(
    model, tokenizer: MedFuseTokenizer, patient, top_k: int, steps: int = 32
) -> tuple[list[EventAttribution], float]:
    """The `top_k` events of largest |attribution| to the risk's log-odds, and the integral's convergence error."""
    from captum.attr import IntegratedGradients  # the optional `explain` extra

    events = tokenizer.encode_patient(patient)
    batch = tokenizer.pad(
        [{"feature_ids": events.feature_ids, "values": events.values, "times": events.times}], return_tensors="pt"
    ).to(model.device)
    embeddings = model.base_model.embeddings
    with torch.no_grad():
        tokens = embeddings(batch["feature_ids"], batch["values"], batch["times"])
        baseline = embeddings(*(torch.zeros_like(batch[name]) for name in ("feature_ids", "values", "times")))

    def log_odds(path_tokens: torch.Tensor) -> torch.Tensor:
        repeated = {name: tensor.expand(len(path_tokens), -1) for name, tensor in batch.items()}
        logits = model(**repeated, inputs_embeds=path_tokens).logits
        return logits[:, 1] - logits[:, 0]

    attributions, error = IntegratedGradients(log_odds).attribute(
        tokens, baselines=baseline, n_steps=steps, internal_batch_size=steps, return_convergence_delta=True
    )
    per_event = attributions.sum(dim=-1)[0].detach().double().cpu().numpy()  # (num_events,)
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
