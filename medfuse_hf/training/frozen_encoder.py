"""A probe's frozen encoder, run once per patient.

Frozen and in eval mode, the encoder gives a patient the same pooled vector every time it reads them, yet a probe's
epochs and validations would encode every patient again each time: on P12 at 77 labelled stays, minutes of
validation passes for a head that trains in a second. `memoise_pooled_outputs` turns each encoding after the first
into a lookup, keyed by the patient's own tokens, so nothing changes but the time: the head sees what the encoder
computes, and the checkpoint is the model's own.
"""

import hashlib

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..modeling_medfuse import MedFuseModel


def patient_keys(feature_ids: torch.Tensor, values: torch.Tensor, times: torch.Tensor,
                 attention_mask: torch.Tensor) -> list[bytes]:
    """One digest per patient of its real events (feature, value, time), blind to the padding around them."""
    keys = []
    for ids, value, time, mask in zip(*(tensor.detach().cpu() for tensor in (feature_ids, values, times,
                                                                              attention_mask))):
        kept = mask.bool()
        digest = hashlib.blake2b(digest_size=16)
        for tensor in (ids, value, time):
            digest.update(tensor[kept].numpy().tobytes())
        keys.append(digest.digest())
    return keys


def memoise_pooled_outputs(encoder: MedFuseModel) -> dict[bytes, torch.Tensor]:
    """Make the frozen `encoder` compute each patient's pooled vector once (per distinct tokens) and look it up
    after; returns the memo. Only `pooler_output` is returned, which is all a classification head reads. A call
    the memo cannot answer faithfully (the encoder in training mode, where dropout draws anew; token states or
    attentions asked for; masked values; tokens given in place of the embeddings') runs the encoder itself."""
    if any(parameter.requires_grad for parameter in encoder.parameters()):
        raise ValueError("memoise_pooled_outputs: the encoder still trains; freeze it first (requires_grad_(False))")
    memo: dict[bytes, torch.Tensor] = {}
    compute = encoder.forward

    def forward(feature_ids, values, times, attention_mask=None, output_attentions=None, output_hidden_states=None,
                value_mask=None, inputs_embeds=None):
        if (encoder.training or output_attentions or output_hidden_states or value_mask is not None
                or inputs_embeds is not None):
            return compute(feature_ids, values, times, attention_mask, output_attentions, output_hidden_states,
                           value_mask, inputs_embeds)
        if attention_mask is None:
            attention_mask = feature_ids != encoder.config.pad_token_id
        keys = patient_keys(feature_ids, values, times, attention_mask)
        missing = [row for row, key in enumerate(keys) if key not in memo]
        if missing:
            rows = torch.tensor(missing, device=feature_ids.device)
            with torch.no_grad():
                pooled = compute(feature_ids[rows], values[rows], times[rows], attention_mask[rows]).pooler_output
            memo.update(zip((keys[row] for row in missing), pooled))
        return BaseModelOutputWithPooling(pooler_output=torch.stack([memo[key] for key in keys]))

    encoder.forward = forward
    return memo
