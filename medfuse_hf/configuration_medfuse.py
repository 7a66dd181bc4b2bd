"""MedFuse model configuration."""

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .privacy import RefusesExactPrevalence


@strict
class MedFuseConfig(RefusesExactPrevalence, PreTrainedConfig):
    r"""Configuration of a MedFuse model ("MedFuse: Multiplicative Embedding Fusion for Irregular Clinical Time
    Series", arXiv 2511.09247; not the 2022 chest X-ray + EHR MedFuse).

    Defaults follow the authors' PhysioNet 2012 setting (d = d′ = 144, one layer, one head, FFN 144,
    post-LayerNorm, mean pooling). `MedFuseConfig.paper_p12()` adds their dropout and focal loss.

    Args:
        vocab_size (`int`, defaults to 64):
            Number of feature ids, the reserved `0 = [PAD]` and `1 = [UNK]` included. Take it from
            `FeatureVocabulary.config_kwargs()` so model and tokenizer agree.
        hidden_size (`int`, defaults to 144):
            Token dimension d: feature-identity embedding, fused token and transformer width.
        value_embedding_size (`int`, defaults to 144):
            Value embedding dimension d′ of MuFuse and concatenation. `hidden_size` must be a multiple of it: the
            value embedding is broadcast over d (the paper's generalized Hadamard product).
        value_projector_hidden_size (`int`, defaults to 16):
            Width of the shared value projector φ = Linear(1→h) → tanh → Linear(h→d′).
        value_projector (`str`, defaults to `"mlp"`):
            `"mlp"`: φ as above (the paper's); `"periodic"`: h/2 learned frequencies, [sin, cos] → Linear(h→d′)
            (Gorishniy et al. 2022's periodic numerical embedding).
        fusion (`str`, defaults to `"multiplicative"`):
            How a numeric value is combined with its feature embedding: `"multiplicative"` (MuFuse,
            e_f ⊙ (γ_f ⊙ φ(v) + β_f)), `"additive"` (e_f + φ(v)), `"concat"` (Linear([e_f ; φ(v)])) or `"scane"`
            (e_f · v, MuFuse with d′ = 1, φ = identity, γ = 1, β = 0).
        time_embedding (`str`, defaults to `"sinusoidal"`):
            `"sinusoidal"`: fixed sinusoidal encoding of continuous hours (the paper); `"cve"`: STraTS' learned
            continuous value embedding of time. Either is added to the fused token. On the P12 benchmark `"cve"`
            scored higher and varied less over seeds (benchmarks/RESULTS.md); the default stays the paper's.
        num_categories (`int`, defaults to 1):
            Size of the global category table of categorical features (reserved id 0 included).
        categorical_feature_ids (`list[int]`, defaults to `[]`):
            Feature ids whose `values` carry a global category id instead of a normalised number.
        num_hidden_layers (`int`, defaults to 1):
            Number of transformer encoder layers.
        num_attention_heads (`int`, defaults to 1):
            Attention heads per layer.
        intermediate_size (`int`, defaults to 144):
            Feed-forward width.
        hidden_act (`str`, defaults to `"gelu"`):
            Feed-forward activation.
        hidden_dropout_prob (`float`, defaults to 0.1):
            Dropout on the residual branches.
        attention_probs_dropout_prob (`float`, defaults to 0.0):
            Dropout on attention weights.
        norm_first (`bool`, defaults to `False`):
            Pre-LayerNorm when `True`; the paper uses post-LayerNorm.
        layer_norm_eps (`float`, defaults to 1e-5):
            LayerNorm epsilon.
        pooling (`str`, defaults to `"mean"`):
            How token states become one patient vector: masked `"mean"`, `"max"`, `"attention"` (a learned
            score per token, softmax over the patient's events), or `"per_feature"` (each feature summarised from
            its own tokens, a learned "not measured" vector for each absent one, a transformer layer over the
            features, their mean: every feature one say, however often it was charted); padding never counts.
        static_feature_ids (`list[int]`, defaults to `()`):
            Features that also reach the patient vector directly (STraTS' demographics embedding): the token of
            each one's earliest event, and whether it was recorded, projected and added to the pooled vector.
            Their events stay tokens as well. P12's descriptors (age, gender, height, ICU type, weight) are such.
        classifier_dropout (`float`, defaults to 0.1):
            Dropout inside the classification head Linear(d→d/2) → GELU → Linear(d/2→labels).
        classification_loss (`str`, defaults to `"cross_entropy"`):
            `"cross_entropy"` or `"focal"` for `single_label_classification`.
        focal_gamma (`float`, defaults to 2.0):
            Focusing parameter γ of the focal loss.
        focal_alpha (`float`, *optional*):
            Weight of class 1 in binary focal loss (class 0 gets 1 - α); `None` weights classes equally.
        class_weights (`list[float]`, *optional*):
            Per-class weights of the cross-entropy loss (e.g. inverse class frequency for rare outcomes); focal loss
            has `focal_alpha` instead.
        logit_offsets (`list[float]`, *optional*):
            Added to the classification logits when they are read as risks (`MedFuseForSequenceClassification.risks`),
            never in the loss: minus the log of how many times training over-weighted each class (class weights, or
            sampling that draws the classes equally). Such training multiplies a class's odds by its weight; the
            offsets bring the probabilities back to the training cohort's prevalence (Saerens et al., 2002), leaving
            their order as it was.
        pretraining_objective (`str`, defaults to `"forecasting"`):
            The head of `MedFuseForPreTraining`: `"forecasting"` (each feature's value after a cut-off, from the
            patient vector) or `"masked_values"` (hidden values, each from its own token state).
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialiser of linear layers.
    """

    model_type = "medfuse"

    vocab_size: int = 64
    hidden_size: int = 144
    value_embedding_size: int = 144
    value_projector_hidden_size: int = 16
    value_projector: Literal["mlp", "periodic"] = "mlp"
    fusion: Literal["multiplicative", "additive", "concat", "scane"] = "multiplicative"
    time_embedding: Literal["sinusoidal", "cve"] = "sinusoidal"
    num_categories: int = 1
    categorical_feature_ids: list[int] | tuple[int, ...] = ()
    num_hidden_layers: int = 1
    num_attention_heads: int = 1
    intermediate_size: int = 144
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.0
    norm_first: bool = False
    layer_norm_eps: float = 1e-5
    pooling: Literal["mean", "max", "attention", "per_feature"] = "mean"
    static_feature_ids: list[int] | tuple[int, ...] = ()
    classifier_dropout: float | int = 0.1
    classification_loss: Literal["cross_entropy", "focal"] = "cross_entropy"
    focal_gamma: float | int = 2.0
    focal_alpha: float | None = None
    class_weights: list[float] | None = None
    logit_offsets: list[float] | None = None
    pretraining_objective: Literal["forecasting", "masked_values"] = "forecasting"
    initializer_range: float = 0.02
    pad_token_id: int | None = 0

    def __post_init__(self, **kwargs):
        self.categorical_feature_ids = [int(i) for i in self.categorical_feature_ids]
        self.static_feature_ids = [int(i) for i in self.static_feature_ids]
        if self.fusion == "scane":
            # SCANE is MuFuse's special case d′ = 1: the raw value scales the feature embedding.
            self.value_embedding_size = 1
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Part of `@strict` validation: shapes that would otherwise fail deep inside torch."""
        if self.hidden_size % self.value_embedding_size:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of value_embedding_size "
                f"({self.value_embedding_size}) for the generalized Hadamard product"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.time_embedding == "sinusoidal" and self.hidden_size % 2:
            raise ValueError(f"the sinusoidal time embedding needs an even hidden_size, got {self.hidden_size}")
        if self.vocab_size < 3:
            raise ValueError(f"vocab_size ({self.vocab_size}) must cover [PAD], [UNK] and at least one feature")
        if self.fusion == "scane" and self.pretraining_objective == "masked_values":
            raise ValueError("masked_values pretraining hides a value by reducing its token to e_f, which under SCANE "
                             "(e_f scaled by the value) is the token of value 1: choose another fusion or objective")
        for name in ("categorical_feature_ids", "static_feature_ids"):
            bad_ids = [i for i in getattr(self, name) if not 2 <= i < self.vocab_size]
            if bad_ids:
                raise ValueError(f"{name} {bad_ids} are outside the feature ids 2..{self.vocab_size - 1}")
        if len(set(self.static_feature_ids)) != len(self.static_feature_ids):
            raise ValueError(f"static_feature_ids {self.static_feature_ids} name a feature twice")
        if self.categorical_feature_ids and self.num_categories < 2:
            raise ValueError("categorical features need num_categories >= 2 (id 0 is reserved)")
        for name in ("class_weights", "logit_offsets"):
            if getattr(self, name) is not None and len(getattr(self, name)) != self.num_labels:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {self.num_labels} labels")
        if self.focal_alpha is not None and not 0.0 < self.focal_alpha < 1.0:
            raise ValueError(f"focal_alpha must lie in (0, 1), got {self.focal_alpha}")
        if self.classification_loss == "focal" and self.class_weights is not None:
            raise ValueError("focal loss weighs the classes by focal_alpha, and would ignore class_weights: give one")

    @classmethod
    def paper_p12(cls, **kwargs) -> "MedFuseConfig":
        """The authors' PhysioNet 2012 setting: their dropouts, binary focal loss (α = 0.5, γ = 2).

        The same source trains with Adam, lr 1e-4, batch 256; `--preset paper_p12` sets only the model, so pass
        `--learning_rate 1e-4 --batch_size 256` to the recipes for those too.
        """
        preset = dict(
            hidden_size=144,
            value_embedding_size=144,
            value_projector_hidden_size=16,
            fusion="multiplicative",
            time_embedding="sinusoidal",
            num_hidden_layers=1,
            num_attention_heads=1,
            intermediate_size=144,
            hidden_act="gelu",
            hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.025,
            norm_first=False,
            pooling="mean",
            classifier_dropout=0.45,
            classification_loss="focal",
            focal_alpha=0.5,
            focal_gamma=2.0,
            num_labels=2,
        )
        return cls(**{**preset, **kwargs})


__all__ = ["MedFuseConfig"]
