"""The denoiser's CPU inference path (oneDNN convolutions, channels-last): same function, taken where the sampler
runs, deterministic. Its speed is measured in ``bench/diffusion_bench.py``, never here."""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

import pytest
import torch
from tiny_autoencoder import TinyVQAE
from torch import nn
from torch.profiler import ProfilerActivity, profile

from synbt_factory.checkpoint import save_checkpoint
from synbt_factory.config import config_to_dict
from synbt_factory.models.autoencoder import LatentNorm
from synbt_factory.models.cpu_conv import OneDNNConv3d, RowwiseGroupNorm, RowwiseLinear
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


def _cases(n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    images = torch.nn.functional.avg_pool3d(torch.rand(n, 2, *SHAPE, generator=g), 5, stride=1, padding=2)
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in SHAPE], indexing="ij"))
    masks = torch.stack(
        [
            (((grid - torch.tensor(c, dtype=torch.float32)[:, None, None, None]) ** 2).sum(0) <= r**2).to(torch.uint8)
            for c, r in [((16, 16, 16), 5.0), ((8, 20, 10), 3.0), ((22, 10, 20), 4.0), ((12, 12, 24), 3.5)][:n]
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


@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_path_gives_a_case_the_same_bits_alone_and_in_any_batch(threads: int) -> None:
    """On the default path a case differs between batch 1 and a batch by float rounding (the (B, C) time-embedding
    ``nn.Linear`` and, with several threads, channels-last ``nn.GroupNorm`` pick other kernels); the path runs those
    layers one case at a time, so row i of any batch is bit-identical to case i alone."""
    fast = _denoiser("small", seed=5).use_cpu_inference_path()
    assert any(type(m) is RowwiseLinear for m in fast.modules())
    assert any(type(m) is RowwiseGroupNorm for m in fast.modules())
    g = torch.Generator().manual_seed(6)
    z = torch.randn(4, 8, 16, 16, 16, generator=g)
    cond = torch.randn(4, 9, 16, 16, 16, generator=g)
    t = torch.tensor([999, 500, 100, 1])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            alone = [fast(z[i : i + 1], t[i : i + 1], cond[i : i + 1]) for i in range(4)]
            four = fast(z, t, cond)
            three = fast(z[[3, 0, 2]], t[[3, 0, 2]], cond[[3, 0, 2]])
    finally:
        torch.set_num_threads(before)
    assert float(alone[0].abs().mean()) > 0.1
    assert all(torch.equal(four[i], alone[i][0]) for i in range(4))
    assert all(torch.equal(three[r], alone[i][0]) for r, i in enumerate([3, 0, 2]))


def _batches_seen(den: MaskConditionedDenoiser) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    seen: list[int] = []
    handle = den.register_forward_hook(lambda _m, args, _out: seen.append(int(args[0].shape[0])))
    return seen, handle


@pytest.mark.parametrize("guidance", [1.0, 1.5])
def test_cpu_sampler_calls_the_invariant_denoiser_batched_and_a_case_keeps_its_bits(
    autoencoder: TinyVQAE, guidance: float
) -> None:
    fast = _denoiser("tiny", seed=4).use_cpu_inference_path()
    sampler = InpaintingSampler(autoencoder, fast, autoencoder.latent_norm(), SamplerConfig(steps=3, guidance=guidance))
    assert sampler.denoiser_batch_invariant is True
    assert not sampler.per_case_denoiser and sampler.per_case_autoencoder
    images, masks = _cases(4)
    gens = lambda idx: [torch_generator(7, i, "ddim") for i in idx]  # noqa: E731
    seen, handle = _batches_seen(fast)
    try:
        batch = sampler.sample(images[[0, 1, 2]], masks[[0, 1, 2]], gens([0, 1, 2]))
        other = sampler.sample(images[[3, 2, 1]], masks[[3, 2, 1]], gens([3, 2, 1]))  # case 1 and 2, other company
    finally:
        handle.remove()
    per_call = 3 if guidance == 1.0 else 6  # with guidance one call on the doubled batch
    assert seen == [per_call] * 6  # one call per DDIM step on the whole window group, both samples
    alone = sampler.sample(images[[1]], masks[[1]], gens([1]))
    assert torch.equal(alone[0], batch[1]) and torch.equal(alone[0], other[2])
    assert torch.equal(other[1], batch[2])
    changed = (batch - images[[0, 1, 2]]).abs().amax()
    assert float(changed) > 1e-2  # the denoiser's output reached the images: the comparisons are no tautology


def test_cpu_sampler_falls_back_to_per_case_denoiser_calls_when_the_check_fails(
    autoencoder: TinyVQAE, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import synbt_factory.synthesis.sampler as sampler_module

    fast = _denoiser("tiny", seed=4).use_cpu_inference_path()
    images, masks = _cases(3)
    gens = [torch_generator(7, i, "ddim") for i in range(3)]
    batched = InpaintingSampler(autoencoder, fast, autoencoder.latent_norm(), SamplerConfig(steps=3))
    monkeypatch.setattr(sampler_module, "denoiser_batch_invariant", lambda *_args: False)
    with caplog.at_level(logging.INFO, logger=sampler_module.__name__):
        sampler = InpaintingSampler(autoencoder, fast, autoencoder.latent_norm(), SamplerConfig(steps=3))
    assert sampler.denoiser_batch_invariant is False and sampler.per_case_denoiser
    assert "one case at a time" in caplog.text
    seen, handle = _batches_seen(fast)
    try:
        out = sampler.sample(images, masks, gens)
    finally:
        handle.remove()
    assert seen == [1] * 9  # 3 steps × 3 cases
    # on the invariant path the fallback and the batched calls give the same bits
    assert torch.equal(out, batched.sample(images, masks, [torch_generator(7, i, "ddim") for i in range(3)]))


@pytest.mark.parametrize("per_case", [True, False])
def test_per_case_calls_given_decides_every_network_without_the_check(
    autoencoder: TinyVQAE, monkeypatch: pytest.MonkeyPatch, per_case: bool
) -> None:
    import synbt_factory.synthesis.sampler as sampler_module

    def never(*_args: object) -> bool:
        raise AssertionError("the invariance check ran although per_case_calls was given")

    monkeypatch.setattr(sampler_module, "denoiser_batch_invariant", never)
    fast = _denoiser("tiny", seed=4).use_cpu_inference_path()
    sampler = InpaintingSampler(
        autoencoder, fast, autoencoder.latent_norm(), SamplerConfig(steps=2, per_case_calls=per_case)
    )
    assert sampler.per_case_denoiser is per_case and sampler.per_case_autoencoder is per_case
    assert sampler.denoiser_batch_invariant is None
    images, masks = _cases(2)
    seen, handle = _batches_seen(fast)
    try:
        sampler.sample(images, masks, [torch_generator(1, i, "ddim") for i in range(2)])
    finally:
        handle.remove()
    assert seen == ([1] * 4 if per_case else [2] * 2)
