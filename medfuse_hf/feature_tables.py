"""A model's per-feature tables (rows indexed by feature id): growing them when a hospital's vocabulary brings
features the model lacks, and keeping the rows a model came with frozen while new ones train.

Modules *declare* their tables in a `feature_tables` mapping, parameter path -> how a new feature's row starts (the
identity embedding, MuFuse's γ and β, a pretraining head's rows, the per-feature pooling's queries), so that a new
fusion or head grows without an edit here. A module whose buffers are indexed by feature id, or whose category table
follows the config, refreshes them in `follow_vocabulary(config, init_weights)`.
"""

import math
import weakref
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from .feature_vocabulary import FeatureVocabulary

Initialiser = Callable[[torch.Tensor], torch.Tensor]


def per_feature_tables(model: nn.Module) -> dict[str, tuple[nn.Parameter, Initialiser]]:
    """Every declared per-feature table, by its `named_parameters()` name, with how a new feature's row starts."""
    tables = {}
    for prefix, module in model.named_modules():
        for name, initialise in getattr(module, "feature_tables", {}).items():
            tables[f"{prefix}.{name}" if prefix else name] = (module.get_parameter(name), initialise)
    return tables


def resize_feature_tables(model: nn.Module, new_num_tokens: int, pad_to_multiple_of: int | None = None) -> None:
    """Give `model` (a `MedFusePreTrainedModel`) `new_num_tokens` feature ids: every declared table keeps its
    existing rows and grows new ones from their initialisers, the layers owning them record their new size, and
    modules that follow the vocabulary refresh their buffers."""
    config = model.config
    if pad_to_multiple_of:
        new_num_tokens = math.ceil(new_num_tokens / pad_to_multiple_of) * pad_to_multiple_of
    lost = [i for i in (*config.categorical_feature_ids, *config.static_feature_ids) if i >= new_num_tokens]
    if new_num_tokens < 3 or lost:
        raise ValueError(f"cannot resize to {new_num_tokens} feature ids: [PAD], [UNK] and the categorical and "
                         f"static features {lost or ''} need room")
    with torch.no_grad():
        for name, (parameter, initialise) in per_feature_tables(model).items():
            kept = min(len(parameter), new_num_tokens)
            rows = parameter.new_empty((new_num_tokens, *parameter.shape[1:]))
            rows[:kept] = parameter[:kept]
            if new_num_tokens > kept:
                initialise(rows[kept:])
            parameter.data = rows
            _record_size(model.get_submodule(name.rpartition(".")[0]), new_num_tokens)
    config.vocab_size = new_num_tokens
    for module in list(model.modules()):  # a module may replace its children as it follows
        if hasattr(module, "follow_vocabulary"):
            module.follow_vocabulary(config, model._init_weights)


def _record_size(layer: nn.Module, num_rows: int) -> None:
    """The size attribute of a layer whose weight grew: a Linear's outputs, an Embedding's rows."""
    if isinstance(layer, nn.Linear):
        layer.out_features = num_rows
    elif isinstance(layer, nn.Embedding):
        layer.num_embeddings = num_rows


def grow_to_vocabulary(model: nn.Module, vocabulary: FeatureVocabulary) -> list[str]:
    """Grow `model` to `vocabulary`, the model's own vocabulary followed by a hospital's features it lacks
    (`FeatureVocabulary.merge`), as `recipes/finetune.py --init_from` does when a checkpoint's features only partly
    match a cohort's. Matched features keep every trained row; new ones, numeric or categorical, start from their
    initialisers. Returns the new features' names."""
    config, fields = model.config, vocabulary.config_kwargs()
    old_size, old_categorical = config.vocab_size, list(config.categorical_feature_ids)
    if (fields["vocab_size"] < old_size
            or [i for i in fields["categorical_feature_ids"] if i < old_size] != old_categorical):
        raise ValueError(f"the vocabulary ({fields['vocab_size']} ids) does not start with this model's "
                         f"{old_size} feature ids: build it with merge(model_vocabulary, cohort_vocabulary)")
    if fields["num_categories"] > config.num_categories:  # new categorical features bring new levels
        config.num_categories, config.categorical_feature_ids = (fields["num_categories"],
                                                                 fields["categorical_feature_ids"])
    resize_feature_tables(model, fields["vocab_size"])
    return [vocabulary.spec_of(feature_id).name for feature_id in range(old_size, fields["vocab_size"])]


class FrozenRows:
    """Keeps some rows of a module's parameters exactly as loaded while the rest of them trains, whatever the
    optimizer: a feature-embedding transfer's rows while the target's new features train beside them, or a probe's
    frozen encoder while the cohort's new features learn their own rows of its tables.

    Those rows get zero gradients and are written back from their loaded values after every optimizer step, before
    every forward and before every `state_dict`: that undoes AdamW's decoupled weight decay, which moves a parameter
    even where its gradient is zero. Rows are found by parameter name in the module the hooks are called with, so a
    deep copy of the model (an EMA's) stays frozen on its own. Not for FSDP or DeepSpeed ZeRO-3, which flatten
    parameters so that rows cannot be addressed.
    """

    def __init__(self, module: nn.Module, rows: dict[str, list[int]]):
        self.rows = {}
        for name, index in rows.items():
            if not index:
                continue
            parameter = module.get_parameter(name)
            self.rows[name] = (torch.tensor(index), parameter.detach()[index].clone())
            keep = torch.ones(parameter.shape[0], *([1] * (parameter.dim() - 1)))
            keep[index] = 0.0
            parameter.register_hook(lambda grad, keep=keep: grad * keep.to(grad.device, grad.dtype))
        module.register_forward_pre_hook(self._before_forward)
        module.register_state_dict_pre_hook(self._before_state_dict)
        self._module = weakref.ref(module)
        register_optimizer_step_post_hook(self._after_optimizer_step)

    def _before_forward(self, module, inputs) -> None:
        self.restore(module)

    def _before_state_dict(self, module, prefix, keep_vars) -> None:
        self.restore(module)

    def _after_optimizer_step(self, optimizer, args, kwargs) -> None:
        module = self._module()
        if module is None:  # the model is gone; the hook stays (optimizers iterate over the hooks), emptied
            self.rows.clear()
        else:
            self.restore(module)

    @torch.no_grad()
    def restore(self, module: nn.Module) -> None:
        for name, (index, values) in self.rows.items():
            parameter = module.get_parameter(name)
            if values.device != parameter.device:  # the model moved (e.g. to the GPU) after loading
                self.rows[name] = index, values = index.to(parameter.device), values.to(parameter.device)
            parameter[index] = values.to(parameter.dtype)
