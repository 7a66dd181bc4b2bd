"""PyTorch MedFuse: a transformer over (feature, value, time) tokens with multiplicative embedding fusion.

Paper: "MedFuse: Multiplicative Embedding Fusion for Irregular Clinical Time Series" (arXiv 2511.09247).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.utils import ModelOutput, can_return_tuple

from .configuration_medfuse import MedFuseConfig
from .feature_tables import grow_to_vocabulary, resize_feature_tables
from .feature_vocabulary import FeatureVocabulary
from .privacy import RefusesExactPrevalence


class ValueProjector(nn.Module):
    """φ: a scalar → a vector, Linear(1→h) → tanh → Linear(h→out). Shared by all features.

    The first layer acts on a scalar, so it is written as its weight and bias vectors. The same shape is STraTS'
    continuous value embedding, so it also serves the learned time embedding.
    """

    def __init__(self, hidden_size: int, output_size: int):
        super().__init__()
        self.up_weight = nn.Parameter(torch.empty(hidden_size))
        self.up_bias = nn.Parameter(torch.empty(hidden_size))
        self.down = nn.Linear(hidden_size, output_size)

    def forward(self, scalars: torch.Tensor) -> torch.Tensor:
        # The scalar stays fp32 up to the tanh whatever the weights' dtype: in bf16, hour 47 and 47.25 are one number.
        hidden = torch.tanh(scalars.float().unsqueeze(-1) * self.up_weight.float() + self.up_bias.float())  # (..., h)
        return self.down(hidden.to(self.down.weight.dtype))  # (..., output_size)


class PeriodicValueProjector(nn.Module):
    """φ as periodic features: v → [sin(2π c v), cos(2π c v)] with learned frequencies c, then Linear(2k→out).

    The numerical embedding that lets neural networks match gradient-boosted trees on tabular data (Gorishniy et
    al., "On Embeddings for Numerical Features in Tabular Deep Learning", NeurIPS 2022, their "PL" form): a
    sharp rise (lactate past 4) needs many tanh units, a few frequencies give it. k = hidden_size / 2, c ~ N(0, 1)
    for values z-scored or quantile-normalised to about ±3.
    """

    def __init__(self, hidden_size: int, output_size: int):
        super().__init__()
        self.frequencies = nn.Parameter(torch.empty(max(hidden_size // 2, 1)))
        self.down = nn.Linear(2 * len(self.frequencies), output_size)

    def forward(self, scalars: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * scalars.float().unsqueeze(-1) * self.frequencies.float()  # (..., k), fp32 as φ's input
        return self.down(torch.cat([angles.sin(), angles.cos()], dim=-1).to(self.down.weight.dtype))


VALUE_PROJECTORS = {"mlp": ValueProjector, "periodic": PeriodicValueProjector}


def modulate(feature_embeds: torch.Tensor, value_embeds: torch.Tensor) -> torch.Tensor:
    """Generalized Hadamard product e_f ⊙ e_v: view d as k blocks of d′ and modulate each block by e_v."""
    blocks = feature_embeds.unflatten(-1, (-1, value_embeds.size(-1)))  # (B, T, k, d′)
    return (blocks * value_embeds.unsqueeze(-2)).flatten(-2)  # (B, T, d)


class MultiplicativeFusion(nn.Module):
    """MuFuse: e_fv = e_f ⊙ e_v with e_v = γ_f ⊙ φ(v) + β_f, broadcast over d = k·d′."""

    def __init__(self, config: MedFuseConfig):
        super().__init__()
        self.value_projector = VALUE_PROJECTORS[config.value_projector](config.value_projector_hidden_size,
                                                                        config.value_embedding_size)
        # Feature-conditioned affine map: each feature decides how its value modulates its identity.
        self.gamma = nn.Parameter(torch.empty(config.vocab_size, config.value_embedding_size))
        self.beta = nn.Parameter(torch.empty(config.vocab_size, config.value_embedding_size))
        # Rows indexed by feature id, with how a row starts (γ = 1, β = 0: every feature starts from the shared φ, as
        # in the authors' code): `_init_weights` and `feature_tables.resize_feature_tables` read them.
        self.feature_tables = {"gamma": init.ones_, "beta": init.zeros_}
        # Maps every feature shares, by their name in a feature-embedding checkpoint: transferred with the rows.
        self.shared_maps = {"value_projector": "value_projector"}

    def forward(self, feature_embeds: torch.Tensor, feature_ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        gamma, beta = F.embedding(feature_ids, self.gamma), F.embedding(feature_ids, self.beta)  # (B, T, d′) each
        return modulate(feature_embeds, gamma * self.value_projector(values) + beta)


class ScaneFusion(nn.Module):
    """SCANE, MuFuse's special case d′ = 1, φ(v) = v, γ = 1, β = 0: the raw value scales the feature embedding."""

    def __init__(self, config: MedFuseConfig):
        super().__init__()
        self.feature_tables, self.shared_maps = {}, {}

    def forward(self, feature_embeds: torch.Tensor, feature_ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return modulate(feature_embeds, values.unsqueeze(-1).to(feature_embeds.dtype))  # e_v: (B, T, 1)


class AdditiveFusion(nn.Module):
    """Ablation: e_f + φ(v), the value embedding added to the identity (as in STraTS-style models)."""

    def __init__(self, config: MedFuseConfig):
        super().__init__()
        self.value_projector = VALUE_PROJECTORS[config.value_projector](config.value_projector_hidden_size,
                                                                        config.hidden_size)
        self.feature_tables, self.shared_maps = {}, {"value_projector": "value_projector"}

    def forward(self, feature_embeds: torch.Tensor, feature_ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return feature_embeds + self.value_projector(values)


class ConcatFusion(nn.Module):
    """Ablation: Linear([e_f ; φ(v)]), concatenation followed by a linear map back to d."""

    def __init__(self, config: MedFuseConfig):
        super().__init__()
        self.value_projector = VALUE_PROJECTORS[config.value_projector](config.value_projector_hidden_size,
                                                                        config.value_embedding_size)
        self.proj = nn.Linear(config.hidden_size + config.value_embedding_size, config.hidden_size)
        self.feature_tables, self.shared_maps = {}, {"value_projector": "value_projector", "fusion_projector": "proj"}

    def forward(self, feature_embeds: torch.Tensor, feature_ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.cat([feature_embeds, self.value_projector(values)], dim=-1))


VALUE_FUSIONS = {
    "multiplicative": MultiplicativeFusion,
    "scane": ScaneFusion,
    "additive": AdditiveFusion,
    "concat": ConcatFusion,
}


class CategoricalFusion(nn.Module):
    """Categorical events: tanh(Linear([e_f ; e_category])), as in the paper.

    The token depends only on the (feature, category) pair, so the map is applied once to every pair the config
    allows and tokens look their pair up: same values and gradients as applying it per token, without a
    (2d → d) matmul over every token of the batch, nearly all of which are numeric.
    """

    def __init__(self, config: MedFuseConfig):
        super().__init__()
        self.category_embeddings = nn.Embedding(config.num_categories, config.hidden_size, padding_idx=0)
        self.proj = nn.Linear(2 * config.hidden_size, config.hidden_size)
        self.categorical_feature_ids = list(config.categorical_feature_ids)
        self.register_buffer("pair_offsets", self.compute_pair_offsets(config.vocab_size), persistent=False)

    def compute_pair_offsets(self, vocab_size: int) -> torch.Tensor:
        """Feature id -> first row of its pairs in the table (numeric features: 0, never read)."""
        offsets = torch.zeros(vocab_size, dtype=torch.long)
        offsets[self.categorical_feature_ids] = (torch.arange(len(self.categorical_feature_ids))
                                                 * self.category_embeddings.num_embeddings)
        return offsets

    def follow_vocabulary(self, config: MedFuseConfig, init_weights: Callable[[nn.Module], None]) -> None:
        self.pair_offsets = self.compute_pair_offsets(config.vocab_size).to(self.pair_offsets.device)

    def grown(self, config: MedFuseConfig, init_weights: Callable[[nn.Module], None]) -> "CategoricalFusion":
        """A fusion for `config`'s category levels, keeping this one's trained category rows and map."""
        grown = CategoricalFusion(config)
        grown.apply(init_weights)
        grown.to(self.proj.weight.device, self.proj.weight.dtype)
        with torch.no_grad():
            old = self.category_embeddings.weight
            grown.category_embeddings.weight[: len(old)] = old
            grown.proj.load_state_dict(self.proj.state_dict())
        return grown

    def forward(
        self, feature_table: torch.Tensor, feature_ids: torch.Tensor, category_ids: torch.Tensor
    ) -> torch.Tensor:
        features = feature_table[self.categorical_feature_ids]  # (F_c, d)
        categories = self.category_embeddings.weight  # (C, d)
        pairs = torch.cat([features[:, None].expand(-1, len(categories), -1),
                           categories[None].expand(len(features), -1, -1)], dim=-1)
        table = torch.tanh(self.proj(pairs)).flatten(0, 1)  # (F_c · C, d)
        return F.embedding(self.pair_offsets[feature_ids] + category_ids, table)


class SinusoidalTimeEncoding(nn.Module):
    """Fixed sinusoidal encoding of continuous time in hours (no bin index, so minutes are not rounded away).

    The frequencies are computed in fp32 at each call rather than kept as a buffer, which `.to(torch.bfloat16)`
    would round: at hour 48 the fastest one would then be off by a fifth of a radian."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size

    def forward(self, times: torch.Tensor) -> torch.Tensor:
        exponents = torch.arange(0, self.hidden_size, 2, device=times.device, dtype=torch.float32)
        frequencies = torch.exp(exponents * (-math.log(10000.0) / self.hidden_size))
        angles = times.float().unsqueeze(-1) * frequencies  # (B, T, d/2)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (B, T, d)


class MedFuseEmbeddings(nn.Module):
    """Turns (feature, value, time) triplets into tokens: fused feature-value embedding + time embedding."""

    def __init__(self, config: MedFuseConfig):
        super().__init__()
        self.feature_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        # unit scale, as `_init_weights` starts every identity
        self.feature_tables = {"feature_embeddings.weight": lambda rows: init.normal_(rows, mean=0.0, std=1.0)}
        self.value_fusion = VALUE_FUSIONS[config.fusion](config)
        self.categorical_fusion = CategoricalFusion(config) if config.categorical_feature_ids else None
        self.categorical_feature_ids = list(config.categorical_feature_ids)
        self.register_buffer("is_categorical", self.compute_categorical_mask(), persistent=False)
        if config.time_embedding == "sinusoidal":
            self.time_embeddings = SinusoidalTimeEncoding(config.hidden_size)
        else:
            self.time_embeddings = ValueProjector(round(math.sqrt(config.hidden_size)), config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def compute_categorical_mask(self) -> torch.Tensor:
        """Feature id -> whether its `values` carry category ids."""
        mask = torch.zeros(self.feature_embeddings.num_embeddings, dtype=torch.bool)
        mask[self.categorical_feature_ids] = True
        return mask

    def follow_vocabulary(self, config: MedFuseConfig, init_weights: Callable[[nn.Module], None]) -> None:
        """After `feature_tables.resize_feature_tables`: which ids are categorical, and a categorical fusion for
        the config's levels when new categorical features brought new ones."""
        self.categorical_feature_ids = list(config.categorical_feature_ids)
        self.is_categorical = self.compute_categorical_mask().to(self.is_categorical.device)
        fusion = self.categorical_fusion
        if fusion is None and config.categorical_feature_ids:
            fusion = CategoricalFusion(config)
            fusion.apply(init_weights)
            self.categorical_fusion = fusion.to(self.feature_embeddings.weight.device,
                                                self.feature_embeddings.weight.dtype)
        elif fusion is not None and fusion.category_embeddings.num_embeddings < config.num_categories:
            self.categorical_fusion = fusion.grown(config, init_weights)

    def forward(
        self, feature_ids: torch.Tensor, values: torch.Tensor, times: torch.Tensor,
        value_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        feature_embeds = self.feature_embeddings(feature_ids)  # (B, T, d)
        tokens = self.value_fusion(feature_embeds, feature_ids, values)
        if value_mask is not None:
            # Masked-value pretraining: a hidden value's token is its feature identity alone, e_f (MuFuse with no
            # modulation), so the model knows what was measured and when, not what came out; no new parameter.
            tokens = torch.where(value_mask.bool().unsqueeze(-1), feature_embeds, tokens)
        if self.categorical_fusion is not None:
            # `torch.where` keeps shapes static (compile-friendly); numeric tokens get category id 0.
            categorical = self.is_categorical[feature_ids]  # (B, T)
            self._check_category_ids(feature_ids, values, categorical)
            category_ids = torch.where(categorical, values, 0).long()
            categorical_tokens = self.categorical_fusion(self.feature_embeddings.weight, feature_ids, category_ids)
            tokens = torch.where(categorical.unsqueeze(-1), categorical_tokens, tokens)
        return self.dropout(tokens + self.time_embeddings(times).to(tokens.dtype))

    def _check_category_ids(self, feature_ids: torch.Tensor, values: torch.Tensor, categorical: torch.Tensor) -> None:
        """A categorical event's value must be a category id: fail naming the patient and feature, not with an
        IndexError (or a device-side assert on CUDA). Skipped under torch.compile, where the host sync would break
        the graph."""
        if torch.compiler.is_compiling():
            return
        num_categories = self.categorical_fusion.category_embeddings.num_embeddings
        bad = categorical & ((values < 0) | (values >= num_categories) | (values != values.round()))
        if bad.any():  # the one host sync of the check
            row, column = bad.nonzero()[0].tolist()
            raise ValueError(
                f"batch row {row}, event {column}: feature id {int(feature_ids[row, column])} is categorical, but its "
                f"value {float(values[row, column]):g} "
                f"is not a category id in 0..{num_categories - 1}: pass categorical events through the tokenizer, "
                "which maps levels to these ids"
            )


class MedFuseSelfAttention(nn.Module):
    """Multi-head self-attention: PyTorch's fused scaled-dot-product attention (`attn_implementation="sdpa"`), or
    the eager path, which also returns the attention weights (`"eager"`, or when `output_attentions` asks)."""

    def __init__(self, config: MedFuseConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_probs_dropout_prob

    def forward(
        self, hidden_states: torch.Tensor, key_mask: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, length, hidden_size = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch_size, length, 3, self.num_heads, -1)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, T, d/H)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if output_attentions or self.config._attn_implementation == "eager":
            scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])  # (B, H, T, T)
            weights = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min).softmax(dim=-1)
            attended = F.dropout(weights, dropout, self.training) @ value
        else:
            attended = F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask, dropout_p=dropout)
        return self.out(attended.transpose(1, 2).reshape(batch_size, length, hidden_size)), weights


def attend_to_events(attention_mask: torch.Tensor) -> torch.Tensor:
    """The keys each patient's tokens attend to: its events, never padding; a patient without events attends to its
    first slot alone. A fully masked attention row is NaN on some fused kernels (and their backward spreads it into
    the weights), and SDPA's zeros and eager's softmax would disagree on it. That slot is padding: no pooling reads
    it."""
    lone_slot = torch.zeros_like(attention_mask)
    lone_slot[:, :1] = ~attention_mask.any(dim=-1, keepdim=True)
    return attention_mask | lone_slot


class MedFuseLayer(GradientCheckpointingLayer):
    """One transformer encoder layer; post-LayerNorm as in the paper unless `norm_first`."""

    def __init__(self, config: MedFuseConfig):
        super().__init__()
        self.norm_first = config.norm_first
        self.attention = MedFuseSelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = nn.Sequential(
            nn.Linear(config.hidden_size, config.intermediate_size),
            ACT2FN[config.hidden_act],
            nn.Dropout(config.hidden_dropout_prob),
            nn.Linear(config.intermediate_size, config.hidden_size),
        )
        self.feed_forward_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, hidden_states: torch.Tensor, key_mask: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.norm_first:
            attended, weights = self.attention(self.attention_norm(hidden_states), key_mask, output_attentions)
            hidden_states = hidden_states + self.dropout(attended)
            return hidden_states + self.dropout(self.feed_forward(self.feed_forward_norm(hidden_states))), weights
        attended, weights = self.attention(hidden_states, key_mask, output_attentions)
        hidden_states = self.attention_norm(hidden_states + self.dropout(attended))
        return self.feed_forward_norm(hidden_states + self.dropout(self.feed_forward(hidden_states))), weights


class MeanPooling(nn.Module):
    """Masked mean of the token states: every event weighs the same."""

    def __init__(self, config: MedFuseConfig):
        super().__init__()

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, *_) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)  # (B, T, 1)
        return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class MaxPooling(nn.Module):
    """Masked element-wise maximum of the token states."""

    def __init__(self, config: MedFuseConfig):
        super().__init__()

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, *_) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1)  # (B, T, 1)
        pooled = hidden_states.masked_fill(~mask, torch.finfo(hidden_states.dtype).min).amax(dim=1)
        return torch.where(mask.any(dim=1), pooled, torch.zeros_like(pooled))


class AttentionPooling(nn.Module):
    """A learned score per token, softmax over the patient's events, weighted sum (STraTS' fusion self-attention):
    the patient vector can dwell on the few events that matter (the last lactate) instead of averaging ~500."""

    def __init__(self, config: MedFuseConfig):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.Tanh(),
                                   nn.Linear(config.hidden_size, 1))

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, *_) -> torch.Tensor:
        scores = self.score(hidden_states).squeeze(-1).float()  # (B, T); softmax in fp32 under low precision
        weights = scores.masked_fill(~attention_mask, -torch.inf).softmax(dim=-1).nan_to_num(0.0)  # no events: 0
        return torch.einsum("bt,btd->bd", weights.to(hidden_states.dtype), hidden_states)


class PerFeaturePooling(nn.Module):
    """One say per clinical feature, as a tree on per-stay summaries has: a masked mean over events weighs heart rate,
    charted hourly, a hundred times as much as a lactate drawn once. Each feature a patient has is summarised from
    its own tokens, by attention under a query of its own (uniform at first: the mean of its tokens) beside the state
    of its most recent token; a feature never measured is a learned "not measured" vector of its own, so absence
    informs too. A transformer layer then reads the feature vectors (DuETT's variable axis, here on tokens) and their
    mean is the patient vector. Invariant to padding and to the order of a feature's events."""

    def __init__(self, config: MedFuseConfig):
        super().__init__()
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.queries = nn.Parameter(torch.zeros(config.vocab_size, config.hidden_size))
        self.not_measured = nn.Parameter(torch.zeros(config.vocab_size, config.hidden_size))
        self.summary = nn.Linear(2 * config.hidden_size, config.hidden_size)
        self.feature_layer = MedFuseLayer(config)
        std = config.initializer_range
        self.feature_tables = {"queries": init.zeros_, "not_measured": lambda rows: init.normal_(rows, std=std)}

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, feature_ids: torch.Tensor,
                times: torch.Tensor) -> torch.Tensor:
        # Each token goes to its (patient, feature) slot, padding to one spare slot dropped at the end: sums by slot
        # (`index_add`) cost O(tokens), where a token-by-feature membership matrix would cost O(tokens x vocabulary)
        # in memory and time, too much for a hospital vocabulary of thousands of items. Sums run in fp32 at least;
        # on CUDA their order, and so their last bits, vary from run to run unless
        # `torch.use_deterministic_algorithms(True)`, as for any embedding's gradient.
        batch, _, width = hidden_states.shape
        vocabulary = self.queries.size(0)
        num_slots = batch * vocabulary + 1
        hidden_states = hidden_states.masked_fill(~attention_mask.unsqueeze(-1), 0.0)  # padding, whatever it holds
        patients = torch.arange(batch, device=feature_ids.device).unsqueeze(1) * vocabulary
        slots = torch.where(attention_mask, feature_ids + patients, batch * vocabulary).flatten()
        states = hidden_states.flatten(0, 1).to(torch.promote_types(hidden_states.dtype, torch.float32))
        scores = (self.key(hidden_states) * F.embedding(feature_ids, self.queries)).sum(-1).flatten().to(states.dtype)
        weights = _softmax_by_slot(scores / math.sqrt(width), slots, num_slots)
        attended = _sum_by_slot(weights.unsqueeze(-1) * states, slots, num_slots)
        # the most recent state: the mean of the tokens at the feature's latest time, whatever their order
        hours = times.float().flatten()
        latest_hour = hours.new_full((num_slots,), -torch.inf).scatter_reduce(0, slots, hours, "amax")
        latest = (hours == latest_hour[slots]).float()
        counts = _sum_by_slot(latest, slots, num_slots)
        most_recent = _sum_by_slot((latest / counts[slots]).unsqueeze(-1) * states, slots, num_slots)
        summaries = torch.cat([attended, most_recent], dim=-1)[:-1].view(batch, vocabulary, 2 * width)
        measured = self.summary(summaries.to(hidden_states.dtype))  # (B, V, d)
        is_measured = (counts[:-1] > 0).view(batch, vocabulary, 1)
        features = torch.where(is_measured, measured, self.not_measured.to(measured.dtype))
        every_feature = attention_mask.new_ones(batch, 1, 1, vocabulary - 1)  # [PAD] (id 0) is no feature
        return self.feature_layer(features[:, 1:], every_feature)[0].mean(dim=1)


def _sum_by_slot(values: torch.Tensor, slots: torch.Tensor, num_slots: int) -> torch.Tensor:
    """The sum of `values`' rows by slot (deterministic on CUDA under `torch.use_deterministic_algorithms`)."""
    return values.new_zeros(num_slots, *values.shape[1:]).index_add(0, slots, values)


def _softmax_by_slot(scores: torch.Tensor, slots: torch.Tensor, num_slots: int) -> torch.Tensor:
    """A softmax of `scores` within each slot, stabilised by the slot's largest score."""
    peak = scores.new_full((num_slots,), -torch.inf).scatter_reduce(0, slots, scores.detach(), "amax")
    exponentials = (scores - peak[slots]).exp()
    return exponentials / _sum_by_slot(exponentials, slots, num_slots)[slots]


POOLINGS = {"mean": MeanPooling, "max": MaxPooling, "attention": AttentionPooling, "per_feature": PerFeaturePooling}
"""How token states become one patient vector; padding never counts, and a patient without events pools to zeros
(but `"per_feature"`, where it is every feature's "not measured" vector, read together)."""


class StaticsEmbedding(nn.Module):
    """STraTS' demographics embedding, in MedFuse's tokens: each static feature's token at its earliest event (its
    MuFuse embedding) and whether it was recorded, projected to the patient vector's size. Added to the pooled
    vector, age or ICU type reach the head directly, not only through attention over hundreds of events."""

    def __init__(self, config: MedFuseConfig):
        super().__init__()
        self.static_feature_ids = list(config.static_feature_ids)
        self.register_buffer("feature_ids", self.compute_feature_ids(), persistent=False)
        self.projection = nn.Linear(len(config.static_feature_ids) * (config.hidden_size + 1), config.hidden_size)

    def compute_feature_ids(self) -> torch.Tensor:
        return torch.tensor(self.static_feature_ids, dtype=torch.long)

    def forward(self, tokens: torch.Tensor, feature_ids: torch.Tensor, times: torch.Tensor,
                attention_mask: torch.Tensor) -> torch.Tensor:
        """Several events of a static at its earliest time (two weights at t = 0): the first of them, as given."""
        match = (feature_ids.unsqueeze(-1) == self.feature_ids) & attention_mask.unsqueeze(-1)  # (B, T, k)
        present = match.any(dim=1)  # (B, k)
        earliest = torch.where(match, times.float().unsqueeze(-1), torch.inf).argmin(dim=1)  # (B, k)
        slots = tokens.gather(1, earliest.unsqueeze(-1).expand(-1, -1, tokens.size(-1)))  # (B, k, d)
        slots = slots * present.unsqueeze(-1).to(tokens.dtype)  # an unrecorded static: zeros, flag 0
        return self.projection(torch.cat([slots.flatten(1), present.to(tokens.dtype)], dim=-1))


class MedFusePreTrainedModel(RefusesExactPrevalence, PreTrainedModel):
    config: MedFuseConfig
    config_class = MedFuseConfig
    base_model_prefix = "medfuse"
    main_input_name = "feature_ids"
    input_modalities = ("time",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["MedFuseLayer"]

    def _init_weights(self, module: nn.Module):
        """transformers 5 builds models on the meta device: every parameter *and non-persistent buffer* is set here."""
        super()._init_weights(module)
        if isinstance(module, MedFuseEmbeddings):
            # Unit-scale identities (torch's embedding default, kept by the authors) so that the fused token is not
            # drowned by the unit-scale time encoding added to it.
            init.normal_(module.feature_embeddings.weight, mean=0.0, std=1.0)
            if not getattr(module.feature_embeddings.weight, "_is_hf_initialized", False):
                init.zeros_(module.feature_embeddings.weight[self.config.pad_token_id])
            init.copy_(module.is_categorical, module.compute_categorical_mask())
        elif isinstance(module, CategoricalFusion):
            init.copy_(module.pair_offsets, module.compute_pair_offsets(module.pair_offsets.numel()))
        elif isinstance(module, StaticsEmbedding):
            init.copy_(module.feature_ids, module.compute_feature_ids())
        elif isinstance(module, ValueProjector):
            # PyTorch's default Linear init, as the authors kept: under N(0, 0.02), φ(v) ≈ 0 and a fresh MuFuse
            # token e_f ⊙ φ(v) would carry neither identity nor value.
            hidden_bound = 1.0 / math.sqrt(module.down.in_features)
            for parameter, bound in ((module.up_weight, 1.0), (module.up_bias, 1.0),
                                     (module.down.weight, hidden_bound), (module.down.bias, hidden_bound)):
                init.uniform_(parameter, -bound, bound)
        elif isinstance(module, PeriodicValueProjector):
            init.normal_(module.frequencies, mean=0.0, std=1.0)
            bound = 1.0 / math.sqrt(module.down.in_features)  # PyTorch's default Linear init, as for the MLP φ
            init.uniform_(module.down.weight, -bound, bound)
            init.uniform_(module.down.bias, -bound, bound)
        elif isinstance(module, (MultiplicativeFusion, PerFeaturePooling)):  # tables no torch layer initialises
            for table, initialise in module.feature_tables.items():
                initialise(module.get_parameter(table))


    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = False
    ) -> nn.Embedding:
        """Give the model `new_num_tokens` feature ids, as after `FeatureVocabulary.merge` adds a hospital's own
        features: every per-feature table (identity embedding, MuFuse's γ/β, a forecast head's rows) keeps its
        existing rows and grows new ones (`feature_tables.resize_feature_tables`). New features are numeric: a new
        categorical feature also changes the category table (`extend_vocabulary`)."""
        if mean_resizing:
            raise NotImplementedError("mean_resizing: a new clinical feature starts from its initialiser, not a mean")
        if new_num_tokens is not None:
            resize_feature_tables(self, new_num_tokens, pad_to_multiple_of)
        return self.get_input_embeddings()

    def extend_vocabulary(self, vocabulary: FeatureVocabulary) -> list[str]:
        """Grow the model to `vocabulary`, its own followed by a hospital's new features; see
        `feature_tables.grow_to_vocabulary`. Returns the new features' names."""
        return grow_to_vocabulary(self, vocabulary)


class MedFuseModel(MedFusePreTrainedModel):
    """The MedFuse encoder: token states and a pooled patient vector."""

    # The encoder of a checkpoint with a head (a pretraining objective's, a classifier): the head is left behind on
    # purpose, so transformers' load report need not list it as unexpected.
    _keys_to_ignore_on_load_unexpected = [r"^(forecast_head|masked_value_head|classifier)\."]

    def __init__(self, config: MedFuseConfig):
        super().__init__(config)
        self.embeddings = MedFuseEmbeddings(config)
        self.layers = nn.ModuleList(MedFuseLayer(config) for _ in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.norm_first else None
        self.pooler = POOLINGS[config.pooling](config)
        self.statics = StaticsEmbedding(config) if config.static_feature_ids else None
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.feature_embeddings

    def set_input_embeddings(self, embeddings: nn.Embedding):
        self.embeddings.feature_embeddings = embeddings

    @can_return_tuple
    def forward(
        self,
        feature_ids: torch.Tensor,
        values: torch.Tensor,
        times: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        value_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> BaseModelOutputWithPooling:
        r"""
        feature_ids (`torch.LongTensor` of shape `(batch_size, num_events)`):
            Feature-identity ids from the feature vocabulary; 0 is padding.
        values (`torch.FloatTensor` of shape `(batch_size, num_events)`):
            Normalised values; global category ids for categorical features.
        times (`torch.FloatTensor` of shape `(batch_size, num_events)`):
            Hours since the record's start.
        attention_mask (`torch.Tensor` of shape `(batch_size, num_events)`, *optional*):
            1 for real events, 0 for padding. Defaults to `feature_ids != 0`.
        output_attentions (`bool`, *optional*):
            Return each layer's attention weights `(batch_size, num_heads, num_events, num_events)` (eager path).
        output_hidden_states (`bool`, *optional*):
            Return the token states after the embeddings and after each layer.
        return_dict (`bool`, *optional*):
            `False` returns a tuple of the output's non-`None` fields, in order.
        value_mask (`torch.Tensor` of shape `(batch_size, num_events)`, *optional*):
            1 where an event's value is hidden (masked-value pretraining): its token keeps the feature and the time.
        inputs_embeds (`torch.FloatTensor` of shape `(batch_size, num_events, hidden_size)`, *optional*):
            Fused tokens to read instead of the embeddings' own, e.g. for attribution along a path between two sets
            of tokens. The other inputs still give the stay's structure: its padding, which feature each event is
            (per-feature pooling's groups, the statics) and when.
        """
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (self.config.output_hidden_states if output_hidden_states is None
                                else output_hidden_states)
        if attention_mask is None:
            attention_mask = feature_ids != self.config.pad_token_id
        self._check_inputs(feature_ids, values, times, attention_mask)
        attention_mask = attention_mask.bool()
        key_mask = attend_to_events(attention_mask)[:, None, None, :]  # (B, 1, 1, T)
        if inputs_embeds is None:
            hidden_states = self.embeddings(feature_ids, values, times, value_mask)
        else:
            self._check_tokens(inputs_embeds, feature_ids, value_mask)
            hidden_states = inputs_embeds
        all_hidden_states, all_attentions = [hidden_states], []
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, key_mask, output_attentions)
            all_hidden_states.append(hidden_states)
            all_attentions.append(weights)
        if self.final_norm is not None:
            hidden_states = self.final_norm(hidden_states)
        pooled = self.pooler(hidden_states, attention_mask, feature_ids, times)
        if self.statics is not None:
            pooled = pooled + self.statics(all_hidden_states[0], feature_ids, times, attention_mask)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states, pooler_output=pooled,
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )

    def _check_inputs(self, feature_ids, values, times, attention_mask) -> None:
        """Fail here, with names, rather than with an index or shape error deep inside torch. Skipped under
        `torch.compile` and `torch.export`: reading the id range on the host would break the graph."""
        if torch.compiler.is_compiling():
            return
        shapes = {name: tuple(t.shape) for name, t in zip(
            ("feature_ids", "values", "times", "attention_mask"), (feature_ids, values, times, attention_mask)
        )}
        if len(set(shapes.values())) != 1 or feature_ids.dim() != 2:
            raise ValueError(f"inputs must all be (batch_size, num_events) tensors of one shape, got {shapes}")
        if feature_ids.dtype.is_floating_point or feature_ids.dtype == torch.bool:
            raise TypeError(f"feature_ids must be an integer tensor, got {feature_ids.dtype}")
        if feature_ids.numel() and not 0 <= int(feature_ids.min()) <= int(feature_ids.max()) < self.config.vocab_size:
            raise ValueError(
                f"feature_ids range {int(feature_ids.min())}..{int(feature_ids.max())} lies outside the vocabulary "
                f"(vocab_size {self.config.vocab_size}): was the tokenizer built on another vocabulary?"
            )

    def _check_tokens(self, inputs_embeds: torch.Tensor, feature_ids: torch.Tensor,
                      value_mask: torch.Tensor | None) -> None:
        if value_mask is not None:
            raise ValueError("value_mask hides values inside the embeddings, which inputs_embeds replaces: give one")
        expected = (*feature_ids.shape, self.config.hidden_size)
        if tuple(inputs_embeds.shape) != expected:
            raise ValueError(f"inputs_embeds must be (batch_size, num_events, hidden_size) = {expected}, "
                             f"got {tuple(inputs_embeds.shape)}")


class MedFuseClassificationHead(nn.Module):
    """Linear(d→d/2) → GELU → Dropout → Linear(d/2→labels), the authors' decoder."""

    def __init__(self, config: MedFuseConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size // 2)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.out_proj = nn.Linear(config.hidden_size // 2, config.num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(F.gelu(self.dense(pooled))))


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float, alpha: float | None) -> torch.Tensor:
    """Softmax focal loss (Lin et al. 2017): down-weights easy examples, which dominate imbalanced cohorts."""
    log_probs = F.log_softmax(logits.float(), dim=-1).gather(1, labels.unsqueeze(1)).squeeze(1)
    loss = -((1.0 - log_probs.exp()) ** gamma) * log_probs
    if alpha is not None:
        loss = loss * torch.where(labels == 1, alpha, 1.0 - alpha)
    return loss.mean()


def _check_class_ids(labels: torch.Tensor, num_labels: int) -> None:
    """A class id outside 0..num_labels-1 named by its batch row, not torch's "Target 2 is out of bounds" (or, on a
    GPU, a device-side assert). Skipped under `torch.compile`, as `_check_inputs` is."""
    if torch.compiler.is_compiling() or not labels.numel():
        return
    outside = ((labels < 0) | (labels >= num_labels)).nonzero()
    if outside.numel():
        row = int(outside[0, 0])
        raise ValueError(f"labels: batch row {row} has class {int(labels[row])}, but the model has num_labels="
                         f"{num_labels} (classes 0..{num_labels - 1}); {outside.shape[0]} row(s) of the batch are "
                         "outside them")


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor, config: MedFuseConfig) -> torch.Tensor:
    """Loss chosen by `config.problem_type`, inferred as transformers does when unset."""
    if config.problem_type is None:
        if config.num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        return F.mse_loss(logits.float().squeeze(-1), labels.float().view(-1))
    if config.problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
    labels = labels.view(-1).long()
    _check_class_ids(labels, config.num_labels)
    if config.classification_loss == "focal":
        return focal_loss(logits, labels, config.focal_gamma, config.focal_alpha)
    if config.class_weights is None:
        return F.cross_entropy(logits.float(), labels)
    # Weighted losses averaged over patients, not divided by the batch's weight sum (torch's default): the mean of
    # the losses of a batch's shards is then the loss of the whole batch, so N processes train like one.
    weight = torch.tensor(config.class_weights, device=logits.device)
    return F.cross_entropy(logits.float(), labels, weight=weight, reduction="none").mean()


class MedFuseForSequenceClassification(MedFusePreTrainedModel):
    """MedFuse with a patient-level head: mortality, sepsis, any binary, multi-class, multi-label or regression
    target."""

    def __init__(self, config: MedFuseConfig):
        super().__init__(config)
        self.medfuse = MedFuseModel(config)
        self.classifier = MedFuseClassificationHead(config)
        self.post_init()

    def risks(self, logits: torch.Tensor) -> torch.Tensor:
        """Each class's probability at the training cohort's prevalence: the softmax of the logits plus
        `config.logit_offsets`, which take off what class weights or balanced sampling added to a class's log-odds.
        Without them a model trained with inverse-frequency weights puts a 14 % mortality near 30 %."""
        logits = logits.float()
        if self.config.logit_offsets is not None:
            logits = logits + torch.tensor(self.config.logit_offsets, device=logits.device)
        return logits.softmax(dim=-1)

    @can_return_tuple
    def forward(
        self,
        feature_ids: torch.Tensor,
        values: torch.Tensor,
        times: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        r"""
        labels (`torch.Tensor` of shape `(batch_size,)` or `(batch_size, num_labels)`, *optional*):
            Class ids for single-label classification, floats for regression or multi-label targets.

        The other arguments are `MedFuseModel.forward`'s.
        """
        outputs = self.medfuse(feature_ids, values, times, attention_mask, output_attentions, output_hidden_states,
                               inputs_embeds=inputs_embeds)
        logits = self.classifier(outputs.pooler_output)
        loss = sequence_classification_loss(logits, labels, self.config) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                        attentions=outputs.attentions)


@dataclass
class MedFuseForPreTrainingOutput(ModelOutput):
    """
    loss (`torch.FloatTensor` of shape `(1,)`, *optional*):
        The objective's MSE over its targets (observed window features, or hidden values), when they are given.
    forecast (`torch.FloatTensor` of shape `(batch_size, vocab_size)`, *optional*):
        Forecasting: predicted normalised value of every feature in the forecast window.
    masked_value_predictions (`torch.FloatTensor` of shape `(batch_size, num_events)`, *optional*):
        Masked values: each event's value predicted from its own token state.
    pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
        The patient vector the forecast was made from.
    hidden_states, attentions:
        As `MedFuseModel` returns them, when asked for.
    """

    loss: torch.Tensor | None = None
    forecast: torch.Tensor | None = None
    masked_value_predictions: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class MedFuseForPreTraining(MedFusePreTrainedModel):
    """Self-supervised pretraining on unlabeled cohorts, with the head of `config.pretraining_objective`:

    - `"forecasting"` (STraTS-style, `ForecastingCollator`): from the events before a cut-off, predict each
      feature's mean value in the window after it, from the patient vector. Features unobserved in the window are
      masked out of the loss.
    - `"masked_values"` (`MaskedValueCollator`): the values of a share of the numeric events are hidden, and each
      is predicted from its own token state through its feature's row of the head (BERT's masked tokens, for
      values).
    """

    def __init__(self, config: MedFuseConfig):
        super().__init__(config)
        self.medfuse = MedFuseModel(config)
        forecasting = config.pretraining_objective == "forecasting"
        untrained = [name for name, module in ((f"{config.pooling} pooling", self.medfuse.pooler),
                                               ("statics embedding", self.medfuse.statics))
                     if module is not None and any(True for _ in module.parameters())]
        if not forecasting and untrained:
            raise ValueError(f"masked-value pretraining trains token states only: its {' and '.join(untrained)} "
                             "would be saved untrained, and a probe of the base would read random features. "
                             "Pretrain with mean or max pooling and no statics; fine-tuning can add them")
        # a row per feature; one head is built, under the name its checkpoints hold
        self.forecast_head = nn.Linear(config.hidden_size, config.vocab_size) if forecasting else None
        self.masked_value_head = None if forecasting else nn.Linear(config.hidden_size, config.vocab_size)
        head, std = ("forecast_head" if forecasting else "masked_value_head"), config.initializer_range
        self.feature_tables = {f"{head}.weight": lambda rows: init.normal_(rows, mean=0.0, std=std),
                               f"{head}.bias": init.zeros_}
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        feature_ids: torch.Tensor,
        values: torch.Tensor,
        times: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        forecast_values: torch.Tensor | None = None,
        forecast_mask: torch.Tensor | None = None,
        value_mask: torch.Tensor | None = None,
        masked_values: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> MedFuseForPreTrainingOutput:
        r"""
        forecast_values (`torch.FloatTensor` of shape `(batch_size, vocab_size)`, *optional*):
            Forecasting: normalised value of each feature in the forecast window (any number where unobserved).
        forecast_mask (`torch.Tensor` of shape `(batch_size, vocab_size)`, *optional*):
            Forecasting: 1 where the feature was observed in the window; required with `forecast_values`.
        value_mask (`torch.Tensor` of shape `(batch_size, num_events)`, *optional*):
            Masked values (required): 1 where an event's value is hidden from the model.
        masked_values (`torch.FloatTensor` of shape `(batch_size, num_events)`, *optional*):
            Masked values: the hidden normalised values, read where `value_mask` is 1.
        """
        forecasting = self.config.pretraining_objective == "forecasting"
        if (value_mask if forecasting else forecast_values) is not None:  # the other objective's batch
            collator = "ForecastingCollator" if forecasting else "MaskedValueCollator"
            raise ValueError(f"this model's pretraining_objective is {self.config.pretraining_objective!r}: "
                             f"its batches come from {collator}")
        if not forecasting and value_mask is None:
            raise ValueError("masked-value pretraining needs value_mask: which events' values are hidden")
        outputs = self.medfuse(feature_ids, values, times, attention_mask, output_attentions, output_hidden_states,
                               value_mask=value_mask)
        pooled, loss, forecast, predictions = outputs.pooler_output, None, None, None
        if forecasting:
            forecast = self.forecast_head(pooled)  # (B, V)
            if forecast_values is not None:
                if forecast_mask is None:
                    raise ValueError("forecast_values needs forecast_mask: which features were observed in the window")
                loss = masked_mse(forecast, forecast_values, forecast_mask)
        else:
            rows = F.embedding(feature_ids, self.masked_value_head.weight)  # (B, T, d): each token's feature row
            bias = F.embedding(feature_ids, self.masked_value_head.bias.unsqueeze(-1)).squeeze(-1)
            predictions = (outputs.last_hidden_state * rows).sum(-1) + bias  # (B, T)
            if masked_values is not None:
                loss = masked_mse(predictions, masked_values, value_mask)
        return MedFuseForPreTrainingOutput(loss=loss, forecast=forecast, masked_value_predictions=predictions,
                                           pooler_output=pooled, hidden_states=outputs.hidden_states,
                                           attentions=outputs.attentions)


def masked_mse(predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the positions where `mask` is 1, in fp32 (0 when there are none)."""
    mask = mask.float()
    return (((predictions.float() - targets.float()) ** 2) * mask).sum() / mask.sum().clamp(min=1.0)


__all__ = [
    "MedFusePreTrainedModel",
    "MedFuseModel",
    "MedFuseForSequenceClassification",
    "MedFuseForPreTraining",
]
