"""CPU inference path for 3-D convolution networks: oneDNN convolutions at every batch size, channels-last layout.

PyTorch (``ConvParams::use_mkldnn``, 2.x) sends a float32 CPU convolution to oneDNN only if the batch is > 1,
or N·C·D·H > 20480, or the kernel is larger than 3 in its last two dims; every other 3×3×3 convolution runs
``slow_conv3d`` (im2col + GEMM). At batch 1 — the batch the CPU sampler calls its denoiser with — that is
every level of the paper UNet below the first at a 32×48×48 latent and every level at a 16³ window, and
there ``slow_conv3d`` ran up to 7× slower than oneDNN (``bench/diffusion_bench.py``). :func:`use_cpu_inference_path`
makes a module's ``nn.Conv3d`` layers call oneDNN directly (:class:`OneDNNConv3d`) and puts its weights in
``torch.channels_last_3d`` (NDHWC), the layout oneDNN's 3-D convolutions run fastest in. Same weights, same
function: outputs differ from the default path by float rounding only.

This module imports nothing but torch.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

__all__ = ["OneDNNConv3d", "use_cpu_inference_path"]

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


def use_cpu_inference_path(module: nn.Module) -> bool:
    """Turn every plain ``nn.Conv3d`` of ``module`` into an :class:`OneDNNConv3d` (in place, same parameters)
    and move its 5-D parameters to ``torch.channels_last_3d``.

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
    module.to(memory_format=torch.channels_last_3d)
    return True
