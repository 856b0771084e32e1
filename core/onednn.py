"""CPU training's linear layers through oneDNN instead of the BLAS behind torch.matmul.

torch sends CPU fp32 matmuls to MKL, which runs its AVX2 kernels on AMD processors such as this
machine's EPYC; oneDNN, which ships inside the same torch wheel, dispatches on the instruction sets the
CPU reports and uses AVX-512. On the model's shapes that is 2.0-2.4x faster for the forward and input
gradient and 1.2-1.9x for the weight gradient (`make bench` prints both machines' matmul GFLOP/s).
The arithmetic stays fp32; results differ from MKL's by float rounding only.

`use_onednn_linear(model)` switches the bias-free nn.Linear modules of a model in place (all of a
Llama's); parameters, state dicts and saved checkpoints are unchanged. It changes nothing on a machine
with a GPU (the model is still on the CPU when the stages call it), for non-fp32 weights, or without
oneDNN. Under bf16 autocast, which does not cast a custom op's inputs, a switched layer is a plain linear.
"""

from __future__ import annotations

import torch


def _nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.numel() < 16 * a.shape[-1]:  # a few rows (token-by-token decoding): oneDNN's ~15 us set-up costs more
        return a @ b.t()
    return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")


@torch.library.custom_op("pipeline::matmul_nt", mutates_args=())
def matmul_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b.T with a of shape (..., k) and b of shape (n, k), by oneDNN."""
    return _nt(a, b)


@matmul_nt.register_fake
def _(a, b):
    return a.new_empty((*a.shape[:-1], b.shape[0]))


def _save(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad):
    a, b = ctx.saved_tensors
    grad_a = grad_b = None
    if ctx.needs_input_grad[0]:
        grad_a = matmul_nt(grad, b.t())                                   # (..., n) @ (n, k)
    if ctx.needs_input_grad[1]:
        a2, g2 = a.reshape(-1, a.shape[-1]), grad.reshape(-1, grad.shape[-1])
        grad_b = matmul_nt(a2.t(), g2.t()).t()                            # (g^T a)^T computed as a^T g: faster here
    return grad_a, grad_b


matmul_nt.register_autograd(_backward, setup_context=_save)


class OneDNNLinear(torch.nn.Linear):
    """nn.Linear (no bias) whose matmuls run in oneDNN; same parameters and state dict."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):  # bf16 autocast casts F.linear's inputs, not a custom op's
            return torch.nn.functional.linear(x, self.weight)
        return matmul_nt(x, self.weight)


def available(model: torch.nn.Module) -> bool:
    p = next(model.parameters())
    return (p.device.type == "cpu" and p.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and not torch.accelerator.is_available())


def use_onednn_linear(*models: torch.nn.Module, on: bool = True) -> int:
    """Switch the models' bias-free nn.Linear modules to OneDNNLinear (on=False: back); returns how many switched."""
    n = 0
    for module in (m for model in models if available(model) for m in model.modules()):
        if on and type(module) is torch.nn.Linear and module.bias is None:
            module.__class__ = OneDNNLinear
            n += 1
        elif not on and type(module) is OneDNNLinear:
            module.__class__ = torch.nn.Linear
            n += 1
    return n
