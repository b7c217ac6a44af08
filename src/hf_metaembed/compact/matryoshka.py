"""Matryoshka representation learning (Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022) over a
MetaEmbed model's pooled embedding, and truncation of embeddings to a prefix.

`MatryoshkaLoss` is a wrapper over the task loss, as sentence-transformers' `MatryoshkaLoss` wraps an embedding loss:
for nested widths m_1 > m_2 > ... it computes the task loss on the pooled vector with every coordinate from m_j on
set to zero, and returns sum_j c_j loss_j. Zeroing the tail before the model's own head is the weight-tied form of
the paper (MRL-E): for a linear head W z + b it equals W[:, :m] z[:m] + b, so after training the first m coordinates
alone, read by the first m columns of the head, give the model at width m. The embedding then truncates with
`truncate_embeddings` at any of those widths.

    loss_fn = MatryoshkaLoss(model, dims=[256, 128, 64, 32])
    loss = loss_fn(batch, labels)           # in a training loop, or use MatryoshkaTrainer with transformers' Trainer

Not model code.
"""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .._utils import metaembed_of


def truncate_embeddings(embeddings: torch.Tensor, dim: int | None, normalize: bool = False) -> torch.Tensor:
    """The first `dim` coordinates of `(..., width)` embeddings (all when `dim` is None), L2-normalised again when
    `normalize` (a model that normalises its embeddings must normalise the truncated ones too)."""
    if dim is not None:
        width = embeddings.shape[-1]
        if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= width:
            raise ValueError(f"truncate_dim must be an integer from 1 to the embedding width {width}, got {dim!r}")
        embeddings = embeddings[..., :dim]
    return F.normalize(embeddings, dim=-1) if normalize else embeddings


def nested_prefix(embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    """`(..., width)` with every coordinate from `dim` on set to zero: the width-`dim` model, read by the full head."""
    keep = torch.arange(embeddings.shape[-1], device=embeddings.device) < dim
    return embeddings * keep.to(embeddings.dtype)


def matryoshka_dims(width: int, dims: Sequence[int] | None = None, levels: int = 4) -> list[int]:
    """The nested widths: `dims` checked (each from 1 to `width`, distinct, widest first), or by default
    width, width/2, width/4, ... (`levels` of them, halving while at least 1)."""
    if dims is None:
        dims = [width // 2**level for level in range(levels) if width // 2**level >= 1]
    dims = sorted({int(d) for d in dims}, reverse=True)
    bad = [d for d in dims if not 1 <= d <= width]
    if bad or not dims:
        raise ValueError(f"matryoshka dims must lie between 1 and the embedding width {width}, got {bad or dims}")
    return dims


class MatryoshkaLoss:
    """The task loss summed over nested prefixes of the pooled embedding (see the module docstring).

    Args:
        model: a `MetaEmbedForSequenceClassification` (its head and loss are used), or any MetaEmbed model with
            `loss_fn` given.
        dims: nested widths (default: the full width and its halves, 4 levels).
        weights: one weight per width, in the order of `dims` as given (default: 1 each).
        loss_fn: `loss_fn(embeddings (samples, width), labels) -> scalar` to use instead of the model's head and
            loss (e.g. a contrastive loss over a `MetaEmbedModel`'s pooled vectors).
    """

    def __init__(
        self,
        model,
        dims: Sequence[int] | None = None,
        weights: Sequence[float] | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.given_dims = list(dims) if dims is not None else None
        self.given_weights = list(weights) if weights is not None else None
        if self.given_weights is not None and (
            self.given_dims is None or len(self.given_weights) != len(self.given_dims)
        ):
            raise ValueError(f"give one weight per matryoshka dim: {len(self.given_weights)} weights for {dims}")
        if loss_fn is None and not hasattr(model, "classifier"):
            raise ValueError("this model has no head: pass loss_fn(embeddings, labels) to train its embeddings")
        self.dims: list[int] | None = None
        self.weights: list[float] | None = None

    def settle(self, width: int) -> None:
        """Fix the nested widths once the embedding width is known (checked against it)."""
        self.dims = matryoshka_dims(width, self.given_dims)
        if self.given_weights is None:
            self.weights = [1.0] * len(self.dims)
        else:
            by_dim = dict(zip((int(d) for d in self.given_dims), self.given_weights))
            self.weights = [float(by_dim[d]) for d in self.dims]

    def head_loss(self, embeddings: torch.Tensor, labels) -> torch.Tensor:
        """The model's own head and task loss on (prefix-masked) pooled embeddings."""
        return _task_loss(self.model.config, self.model.classifier(embeddings), labels)

    def __call__(self, inputs: dict, labels) -> torch.Tensor:
        """`inputs`: the model's inputs without labels (processor output or cached `backbone_states`)."""
        pooled = metaembed_of(self.model)(**inputs).pooler_output  # (samples, width)
        if self.dims is None:
            self.settle(pooled.shape[-1])
        loss_fn = self.loss_fn or self.head_loss
        losses = [weight * loss_fn(nested_prefix(pooled, dim), labels) for dim, weight in zip(self.dims, self.weights)]
        return torch.stack(losses).sum()


def _task_loss(config, logits: torch.Tensor, labels) -> torch.Tensor:
    """The loss a MetaEmbed sequence model computes for `problem_type` (regression: the config's `loss`)."""
    from ..modeling.losses import regression_loss

    labels = torch.as_tensor(labels, device=logits.device)
    problem_type = config.problem_type or (
        "regression" if config.num_labels == 1 else "single_label_classification" if labels.ndim == 1 else None
    )
    if problem_type == "regression":
        return regression_loss(config, logits.squeeze(-1), labels.float())
    if problem_type == "single_label_classification":
        return F.cross_entropy(logits, labels.long())
    return F.binary_cross_entropy_with_logits(logits, labels.float())


def matryoshka_trainer_class():
    """`MatryoshkaTrainer`: transformers' `Trainer` whose `compute_loss` is a `MatryoshkaLoss` (built once from
    `matryoshka_dims` / `matryoshka_weights` given to the trainer)."""
    from transformers import Trainer

    class MatryoshkaTrainer(Trainer):
        def __init__(self, *args, matryoshka_dims=None, matryoshka_weights=None, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.matryoshka = MatryoshkaLoss(self.model, matryoshka_dims, matryoshka_weights)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            labels = inputs.pop("labels")
            loss = self.matryoshka(inputs, labels)
            return (loss, None) if return_outputs else loss

    return MatryoshkaTrainer
