"""The denoiser's CPU inference path (oneDNN convolutions, channels-last): same function, taken where the sampler
runs, deterministic. Its speed is measured in ``bench/diffusion_bench.py``, never here."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from tiny_autoencoder import TinyVQAE
from torch import nn
from torch.profiler import ProfilerActivity, profile

from synbt_factory.checkpoint import save_checkpoint
from synbt_factory.config import config_to_dict
from synbt_factory.models.autoencoder import LatentNorm
from synbt_factory.models.cpu_conv import OneDNNConv3d
from synbt_factory.models.diffusion import CHECKPOINT_KIND, MaskConditionedDenoiser, diffusion_preset, load_diffusion
from synbt_factory.rng import torch_generator
from synbt_factory.synthesis.sampler import InpaintingSampler, SamplerConfig

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")


def _denoiser(preset: str, seed: int = 0) -> MaskConditionedDenoiser:
    """A denoiser with every weight random (MONAI zero-initialises its output and residual convolutions)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = MaskConditionedDenoiser(diffusion_preset(preset)).eval()
        with torch.no_grad():
            for p in net.parameters():
                if p.dim() > 1 and not bool(p.any()):
                    nn.init.normal_(p, std=0.05)
    return net


def _inputs(batch: int, shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(batch, 8, *shape, generator=g)
    cond = torch.randn(batch, 9, *shape, generator=g)
    return z, torch.tensor([999, 500, 100, 1][:batch]), cond


def _ops(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


@pytest.mark.parametrize("batch", [1, 2])
def test_cpu_path_computes_the_default_path_function_with_onednn_convolutions(batch: int) -> None:
    plain = _denoiser("small")
    fast = copy.deepcopy(plain).use_cpu_inference_path()
    assert fast.memory_format == torch.channels_last_3d
    convs = [m for m in fast.modules() if isinstance(m, nn.Conv3d)]
    assert convs and all(type(m) is OneDNNConv3d for m in convs)
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last_3d) for m in convs)
    z, t, cond = _inputs(batch, (8, 8, 8))
    with torch.inference_mode():
        ref_ops = _ops(lambda: plain(z, t, cond))
        fast_ops = _ops(lambda: fast(z, t, cond))
        ref, out = plain(z, t, cond), fast(z, t, cond)
    # at batch 1 PyTorch's own dispatch sends these small 3×3×3 convolutions to slow_conv3d; the path never does
    assert batch > 1 or "aten::slow_conv3d_forward" in ref_ops
    assert "aten::slow_conv3d_forward" not in fast_ops and "aten::mkldnn_convolution" in fast_ops
    assert out.shape == ref.shape and out.is_contiguous()
    assert float(ref.abs().mean()) > 0.1  # a denoiser whose output depends on its weights
    rel = float((out - ref).abs().max() / ref.abs().max())
    assert rel < 1e-4, rel


def test_gradients_and_other_devices_fall_back_to_nn_conv3d_semantics() -> None:
    conv = nn.Conv3d(4, 6, 3, padding=1, stride=2)
    fast = copy.deepcopy(conv)
    fast.__class__ = OneDNNConv3d
    x = torch.randn(1, 4, 6, 8, 10, generator=torch.Generator().manual_seed(2), requires_grad=True)
    out = fast(x)
    ref = conv(x)
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-5)
    (g_fast,) = torch.autograd.grad(out.square().sum(), x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    assert torch.allclose(g_fast, g_ref, atol=1e-4)
    assert torch.equal(fast.double()(x.double()), conv.double()(x.double()))  # float64: nn.Conv3d's own dispatch


def _saved(net: MaskConditionedDenoiser, folder: Path) -> Path:
    state = net.state_dict()
    payload = {
        "model": state,
        "ema": {**{f"module.{k}": v for k, v in state.items()}, "n_averaged": torch.tensor(1)},
        "latent_norm": dataclasses.asdict(LatentNorm()),
    }
    return save_checkpoint(folder / "d.pt", payload, kind=CHECKPOINT_KIND, config=config_to_dict(net.config))


def test_load_diffusion_on_cpu_takes_the_path_with_the_saved_weights(tmp_path: Path) -> None:
    net = _denoiser("tiny")
    loaded = load_diffusion(_saved(net, tmp_path), "cpu").model
    assert loaded.memory_format == torch.channels_last_3d
    assert all(type(m) is OneDNNConv3d for m in loaded.modules() if isinstance(m, nn.Conv3d))
    state = loaded.state_dict()
    assert state.keys() == net.state_dict().keys()
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


SHAPE = (32, 32, 32)


@pytest.fixture(scope="module")
def autoencoder() -> TinyVQAE:
    images, _ = _cases()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ae = TinyVQAE().eval()
    ae.init_codebook(images, torch.Generator().manual_seed(0))
    return ae


def _cases() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    images = torch.nn.functional.avg_pool3d(torch.rand(2, 2, *SHAPE, generator=g), 5, stride=1, padding=2)
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in SHAPE], indexing="ij"))
    masks = torch.stack(
        [
            (((grid - torch.tensor(c, dtype=torch.float32)[:, None, None, None]) ** 2).sum(0) <= r**2).to(torch.uint8)
            for c, r in [((16, 16, 16), 5.0), ((8, 20, 10), 3.0)]
        ]
    )
    return images, masks


def test_sampling_with_the_path_is_deterministic_batch_invariant_and_close_to_the_default(
    autoencoder: TinyVQAE,
) -> None:
    plain = _denoiser("tiny", seed=4)
    fast = copy.deepcopy(plain).use_cpu_inference_path()
    images, masks = _cases()

    def sample(den: MaskConditionedDenoiser, idx: list[int], seed: int = 7) -> torch.Tensor:
        sampler = InpaintingSampler(autoencoder, den, autoencoder.latent_norm(), SamplerConfig(steps=4))
        return sampler.sample(images[idx], masks[idx], [torch_generator(seed, i, "ddim") for i in idx])

    batch = sample(fast, [0, 1])
    assert torch.equal(batch, sample(fast, [0, 1]))  # same seeds → identical output
    assert torch.equal(sample(fast, [1])[0], batch[1])  # a case alone = the case in a batch
    assert not torch.equal(sample(fast, [0], seed=8)[0], batch[0])  # the seed matters
    ref = sample(plain, [0, 1])
    changed = (ref - images).abs().amax()
    assert float(changed) > 1e-2  # the sampler changed the images, so the comparison below is no tautology
    assert float((batch - ref).abs().max()) < 1e-3 * float(changed)
