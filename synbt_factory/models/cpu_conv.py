"""CPU inference path for 3-D convolution networks: oneDNN convolutions at every batch size, channels-last layout.

PyTorch (``ConvParams::use_mkldnn``, 2.x) sends a float32 CPU convolution to oneDNN only if the batch is > 1,
or N·C·D·H > 20480, or the kernel is larger than 3 in its last two dims; every other 3×3×3 convolution runs
``slow_conv3d`` (im2col + GEMM). At batch 1 — the batch the CPU sampler calls its denoiser with — that is
every level of the paper UNet below the first at a 32×48×48 latent and every level at a 16³ window, and
there ``slow_conv3d`` ran up to 7× slower than oneDNN (``bench/diffusion_bench.py``). :func:`use_cpu_inference_path`
makes a module's ``nn.Conv3d`` layers call oneDNN directly (:class:`OneDNNConv3d`) and puts its weights in
``torch.channels_last_3d`` (NDHWC), the layout oneDNN's 3-D convolutions run fastest in. Same weights, same
function: outputs differ from the default path by float rounding only.

Batch invariance: on this path a case's output is bit-identical whatever batch it is computed in (alone, or as
any row of a batch with any companions; measured on the paper denoiser at 16³, 16×16×32 and 32×48×48 latents,
batches 1–8, 1 and 2 threads). oneDNN's channels-last 3-D convolutions and the attention compute each case with
the same kernels at every batch size. Two kinds of layer did not, and run one case at a time on this path:

* ``nn.Linear`` on the (B, C) time embedding: a matrix–vector kernel at B = 1, matrix–matrix at B > 1
  (≈ 1e-7 apart there, ≈ 1e-5 in the denoiser's ε) — :class:`RowwiseLinear`;
* channels-last ``nn.GroupNorm`` with more than one thread: PyTorch parallelises it over (case, group) when
  there are enough of them and over voxels, with per-thread partial sums, when not (batch 1 at the finest
  levels), which reorders the sums — :class:`RowwiseGroupNorm`.

Both cost a few small calls per layer, nothing next to the convolutions. PyTorch promises none of this, so
callers that depend on it check it where they run (:func:`~synbt_factory.synthesis.sampler.denoiser_batch_invariant`).

This module imports nothing but torch.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

__all__ = ["OneDNNConv3d", "RowwiseGroupNorm", "RowwiseLinear", "use_cpu_inference_path"]

log = logging.getLogger(__name__)


class OneDNNConv3d(nn.Conv3d):
    """``nn.Conv3d`` that runs oneDNN (``torch.mkldnn_convolution``) for float32 CPU input with zero padding,
    whatever the batch size, and ``nn.Conv3d``'s own dispatch otherwise (CUDA, other dtypes or padding modes,
    oneDNN disabled). Same parameters and state dict as ``nn.Conv3d``.

    Input (N, C_in, D, H, W) in either memory format; output (N, C_out, D', H', W') in oneDNN's choice of
    format (channels-last when the input or the weight is).
    """

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (
            input.device.type == "cpu"
            and input.dtype == torch.float32
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and torch.backends.mkldnn.enabled
        ):
            return torch.mkldnn_convolution(input, weight, bias, self.padding, self.stride, self.dilation, self.groups)
        return super()._conv_forward(input, weight, bias)


def _rowwise(forward, input: torch.Tensor) -> torch.Tensor:
    """``forward`` on each ``input[i : i + 1]`` (CPU, batch > 1), concatenated in ``input``'s memory format."""
    if input.device.type != "cpu" or input.dim() < 2 or input.shape[0] == 1:
        return forward(input)
    out = torch.cat([forward(input[i : i + 1]) for i in range(input.shape[0])])
    if input.dim() == 5 and input.is_contiguous(memory_format=torch.channels_last_3d):
        out = out.contiguous(memory_format=torch.channels_last_3d)
    return out


class RowwiseLinear(nn.Linear):
    """``nn.Linear`` that, on CPU, computes each slice ``input[i : i + 1]`` of the first dimension in its own call,
    so row i's output is bit-identical to a call on that row alone, whatever the other rows are. Same parameters
    and state dict as ``nn.Linear``.

    For layers whose first input dimension is the batch: the denoiser's time embedding (B, C) and its attention
    projections (B, N, C). Never use it on an input whose rows were flattened into the first dimension (it would
    become one call per row).
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _rowwise(super().forward, input)


class RowwiseGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that, on CPU, normalises each case ``input[i : i + 1]`` (1, C, D, H, W) in its own call,
    so its statistics are summed in the same order as for the case alone whatever the batch and thread count.
    Same parameters and state dict as ``nn.GroupNorm``; output in the input's memory format."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _rowwise(super().forward, input)


def use_cpu_inference_path(module: nn.Module) -> bool:
    """Turn every plain ``nn.Conv3d`` of ``module`` into an :class:`OneDNNConv3d`, every ``nn.Linear`` into a
    :class:`RowwiseLinear` and every ``nn.GroupNorm`` into a :class:`RowwiseGroupNorm` (in place, same parameters)
    and move its 5-D parameters to ``torch.channels_last_3d``. ``module``'s linear and normalisation layers must
    take the batch in their input's first dimension.

    Feed the module channels-last input (``x.contiguous(memory_format=torch.channels_last_3d)``) to avoid a
    layout conversion at its first convolution.

    Returns:
        True if the path is on; False (module unchanged) where PyTorch was built without oneDNN.
    """
    if not torch.backends.mkldnn.is_available():
        log.info("PyTorch has no oneDNN: %s keeps the default convolution path", type(module).__name__)
        return False
    for m in module.modules():
        if type(m) is nn.Conv3d:
            m.__class__ = OneDNNConv3d
        elif type(m) is nn.Linear:
            m.__class__ = RowwiseLinear
        elif type(m) is nn.GroupNorm:
            m.__class__ = RowwiseGroupNorm
    module.to(memory_format=torch.channels_last_3d)
    return True
