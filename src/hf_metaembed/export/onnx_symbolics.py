"""ONNX conversions of three ATen operators, in place of the stock ones while `export_onnx` traces a model: `unfold`
(ConvBERT's convolution windows) over a length known only at run time, `unflatten` (inside `nn.MultiheadAttention`,
the `pad` architecture's cross-attention) whose stock conversion loses the shapes around the split dimension so the
exporter freezes them at the example batch's, and `rms_norm` (the `perceiver` architecture's RMSNorm), which opsets
before 23 have no operator for. Each is registered only for the duration of one export (`export_symbolics`).

Not model code: the saved model's files never import this module.
"""

import contextlib
from collections.abc import Iterator

import torch


def _unfold_symbolic(g, tensor, dimension, size, step):
    """`Tensor.unfold(dimension, size, step)` for a dimension whose length is known only at run time (the exporter's
    own conversion needs it fixed): gather the windows with an index matrix built from the input's shape."""
    from torch.onnx import symbolic_helper

    dimension = symbolic_helper._get_const(dimension, "i", "dimension")
    size = symbolic_helper._get_const(size, "i", "size")
    step = symbolic_helper._get_const(step, "i", "step")
    rank = symbolic_helper._get_tensor_rank(tensor)
    if rank is None:
        raise ValueError("unfold over a tensor of unknown rank cannot be exported")
    dimension = dimension % rank
    length = g.op("Gather", g.op("Shape", tensor), g.op("Constant", value_t=torch.tensor(dimension)), axis_i=0)
    last_start = g.op("Sub", length, g.op("Constant", value_t=torch.tensor(size - 1)))
    zero, stride = g.op("Constant", value_t=torch.tensor(0)), g.op("Constant", value_t=torch.tensor(step))
    starts = g.op("Range", zero, last_start, stride)  # (windows,)
    offsets = g.op("Constant", value_t=torch.arange(size))  # (size,)
    index = g.op(
        "Add",
        g.op("Unsqueeze", starts, g.op("Constant", value_t=torch.tensor([1]))),
        g.op("Unsqueeze", offsets, g.op("Constant", value_t=torch.tensor([0]))),
    )  # (windows, size)
    gathered = g.op("Gather", tensor, index, axis_i=dimension)  # (..., windows, size, ...)
    order = [axis for axis in range(rank + 1) if axis != dimension + 1] + [dimension + 1]
    return g.op("Transpose", gathered, perm_i=order)  # (..., windows, ..., size), as unfold lays it out


def _unflatten_symbolic(g, tensor, dimension, sizes):
    """`Tensor.unflatten(dimension, sizes)` (inside `nn.MultiheadAttention` between sides of different lengths) with
    the split dimension a constant: the stock conversion computes it at run time, which loses the shapes of the
    dimensions around it, and the exporter then freezes them at the example batch's."""
    from torch.onnx import symbolic_helper

    rank = symbolic_helper._get_tensor_rank(tensor)
    if rank is None:
        raise ValueError("unflatten of a tensor of unknown rank cannot be exported")
    dimension = symbolic_helper._get_const(dimension, "i", "dimension") % rank
    shape = g.op("Shape", tensor)
    head = g.op(
        "Slice",
        shape,
        g.op("Constant", value_t=torch.tensor([0])),
        g.op("Constant", value_t=torch.tensor([dimension])),
    )
    tail = g.op(
        "Slice",
        shape,
        g.op("Constant", value_t=torch.tensor([dimension + 1])),
        g.op("Constant", value_t=torch.tensor([rank])),
    )
    return g.op("Reshape", tensor, g.op("Concat", head, sizes, tail, axis_i=0))


def _rms_norm_symbolic(g, tensor, normalized_shape, weight, eps):
    """`nn.functional.rms_norm` (the Perceiver's RMSNorm), which the opsets before 23 have no operator for:
    `x / sqrt(mean(x * x over the normalised axes) + eps) * weight`, eps the float32 machine epsilon when unset."""
    from torch.onnx import symbolic_helper

    axes = list(range(-len(symbolic_helper._get_const(normalized_shape, "is", "normalized_shape")), 0))
    epsilon = (
        torch.finfo(torch.float32).eps
        if symbolic_helper._is_none(eps)
        else symbolic_helper._get_const(eps, "f", "eps")
    )
    square = g.op("Mul", tensor, tensor)
    if g.opset >= 18:  # ReduceMean takes its axes as an input from opset 18
        mean = g.op("ReduceMean", square, g.op("Constant", value_t=torch.tensor(axes)), keepdims_i=1)
    else:
        mean = g.op("ReduceMean", square, axes_i=axes, keepdims_i=1)
    scale = g.op("Sqrt", g.op("Add", mean, g.op("Constant", value_t=torch.tensor(epsilon, dtype=torch.float32))))
    normalised = g.op("Div", tensor, scale)
    return normalised if symbolic_helper._is_none(weight) else g.op("Mul", normalised, weight)


EXPORT_SYMBOLICS = {
    "aten::unfold": _unfold_symbolic,
    "aten::unflatten": _unflatten_symbolic,
    "aten::rms_norm": _rms_norm_symbolic,
}


@contextlib.contextmanager
def export_symbolics(opset: int) -> Iterator[None]:
    """The conversions above in place of the stock ones while one graph is exported."""
    for name, symbolic in EXPORT_SYMBOLICS.items():
        torch.onnx.register_custom_op_symbolic(name, symbolic, opset)
    try:
        yield
    finally:
        for name in EXPORT_SYMBOLICS:
            torch.onnx.unregister_custom_op_symbolic(name, opset)


__all__ = ["EXPORT_SYMBOLICS", "export_symbolics"]
