"""Linear layers with prepacked oneDNN weights, for fp32 inference on a CPU.

On a CPU, decoding multiplies a few rows (the live batch) by every weight matrix; `torch.nn.Linear`
hands each product to the BLAS with the weight in its plain layout, which at 32 rows reaches about
half the machine's matmul rate (a third for the 49k-wide output head). oneDNN's blocked weight layout
(`torch.ops.mkldnn._reorder_linear_weight`, what inductor's CPU freezing uses) multiplies the same
shapes 1.4–2.9× faster (`benchmarks/bench_hf.py`). `prepack(model)` gives every `nn.Linear` such a
copy and an instance-level forward that uses it; `unpack(model)` removes them, so weights can be
changed (a fold's adapter merged into them) and packed again. Inference only: the packed product has
no autograd, so a model that trains is never packed.
"""

from __future__ import annotations

from functools import partial

import torch

BATCH_HINT = 32  # rows the packed layout is tuned for; any row count works


def available(model: torch.nn.Module) -> bool:
    """Whether packing applies: fp32 weights on the CPU and a torch built with oneDNN."""
    try:
        param = next(model.parameters())
    except StopIteration:
        return False
    return (param.device.type == "cpu" and param.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def _packed_forward(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def prepack(model: torch.nn.Module) -> int:
    """Pack every `nn.Linear` of `model` (in place); returns how many were packed."""
    if not available(model):
        return 0
    n = 0
    with torch.no_grad():
        for module in model.modules():
            if type(module) is torch.nn.Linear:
                packed = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), BATCH_HINT)
                bias = module.bias.detach() if module.bias is not None else None
                module.forward = partial(_packed_forward, packed, bias)  # type: ignore[method-assign]
                n += 1
    return n


def unpack(model: torch.nn.Module) -> None:
    """Drop the packed copies: every linear layer multiplies with its own weight again."""
    for module in model.modules():
        module.__dict__.pop("forward", None)
