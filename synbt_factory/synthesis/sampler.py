"""Batched DDIM inpainting in latent space: a synthetic tumor inside a mask, the rest stays real.

Per batch of B cases (paper Sec. 2.2 and Fig. 3):

1. **Window** (default ``mode="window"``): per case, a latent window around the mask (the mask's
   bounding box grown by the blend reach, ``keep_margin`` and ``context`` latent cells, at least
   ``window`` cells, a multiple of the denoiser's size divisor) — or the whole latent
   (``mode="whole"``, the paper's setting). Only that window is encoded, diffused and decoded.
   The window depends on the case alone, never on its batch.
2. **Condition**: z_known = norm(Q(E(x))) of the real image, Z_cond = cat(norm(Q(E(x with the
   dilated mask region removed))), down(M)) — the same :func:`~synbt_factory.models.diffusion.build_condition`
   as in training.
3. **DDIM** (MONAI ``DDIMScheduler``, 10 steps, ``eta``): starting from noise, each step runs
   ε_θ(z_t, t, Z_cond) (or, with ``guidance`` ≠ 1, the mask-guided
   :func:`~synbt_factory.models.diffusion.guided_noise`) and moves to the previous timestep; latent cells farther than
   ``keep_margin`` cells from the removed region are replaced by z_known noised to that timestep
   (RePaint-style), and after the last step by z_known itself.
4. **Decode and blend**: Ẑ → de-normalise → codebook (Q) → decoder; the decoded window is blended
   into the real image with weight w = 1 within Euclidean distance ``mask_dilation`` of the mask,
   falling linearly to 0 over ``blend_ramp`` voxels beyond it: a round halo, not a box. **Every voxel
   whose Euclidean distance to the mask is ≥ ``margin`` = mask_dilation + blend_ramp is exactly the
   input voxel** (copied, never recomputed). (The removed region of the condition, step 2, is the
   model's own :func:`~synbt_factory.models.diffusion.dilate`, as in training.)

Randomness: each case has its own ``torch.Generator``. One 63-bit seed is drawn from it and seeds a
generator on the sampling device, from which that case's initial noise, DDIM (η) noise and RePaint
noise are drawn in a fixed order and with the case's own shapes, so the noise never depends on the
batch.

Network calls and batch invariance: a case's output must be bit-identical whatever batch it lands in (a
resumed run batches other cases together and must reproduce the finished ones byte for byte). On CPU,
PyTorch's default 3-D convolutions (slow_conv3d at batch 1, oneDNN above) and ``nn.Linear`` (matrix–vector
at batch 1) compute a case in a batch of 4 differently from the case alone, by float rounding (max |Δε|
≈ 1e-5 at |ε| ≈ 0.5 for one call of the paper denoiser). So with ``per_case_calls=None`` (the default) on CPU:

* the autoencoder (encode, quantise, decode: its default path is not batch-invariant) runs one case at a time;
* the denoiser — 10 of the 12 network calls of a case, most of its time — runs once per step on the whole
  window group, (b, C, x, y, z), or (2b, …) with guidance, when its path is batch-invariant: the CPU inference
  path that ``load_diffusion`` puts it on (:mod:`~synbt_factory.models.cpu_conv`: oneDNN channels-last
  convolutions, linear and GroupNorm layers one case at a time) is, bit for bit, at every batch, row and
  thread count measured. PyTorch promises none of it, so :func:`denoiser_batch_invariant` checks it once when
  the sampler is built (one call at batch 1 against the same case as row 1 of a batch of 3, on the smallest
  window, ``torch.equal``), and the sampler falls back to one denoiser call per case when that fails (logged
  at INFO).

Batched denoiser calls pay where a case's window is small. Paper denoiser, one thread
(``bench/diffusion_bench.py``, ratio of its GFLOP/s to the machine's best conv3d/matmul, wall/CPU): at a 16³
window 0.56 at batch 1, 0.71/0.75 at batch 4 (generate's default batch), 0.84 at batch 8 (4 cases with
guidance); at the whole 32×48×48 latent 0.78 at batch 1 and 0.70 at batch 4, where batching gains nothing.
``InpaintingSampler.sample`` on 4 cases with 16³ windows, A/B interleaved over 4 rounds at load 3–3.5 on 2
cores, batched denoiser ÷ ``per_case_calls=True``: CPU time per case 0.81 with the paper denoiser (its denoise
stage 0.77 → 0.56 s per case), 0.95 with the shipped ``cpu``-preset models; outputs bit-identical.
On CUDA (default: every network batched, cuDNN and bf16 autocast) results agree across batches to a tolerance
only; ``per_case_calls=True`` forces one call per case for every network on any device.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from synbt_factory.models.autoencoder import LatentAutoencoder, LatentNorm
from synbt_factory.models.diffusion import (
    MaskConditionedDenoiser,
    build_condition,
    dilate,
    guided_noise,
    make_ddim_scheduler,
)
from synbt_factory.progress import ProgressFn, report

__all__ = ["SamplerConfig", "InpaintingSampler", "blend_weights", "denoiser_batch_invariant", "mask_distance"]

log = logging.getLogger(__name__)

_MODES = ("window", "whole")


@dataclass(frozen=True, kw_only=True)
class SamplerConfig:
    """Inpainting sampler settings.

    Args:
        steps: DDIM steps (10 in the paper).
        eta: DDIM η (0 = deterministic given the initial noise; 1 = DDPM-like, the default: the paper gives
            no η, and on the phantom η = 1 keeps more of the tumors' enhancement, ``bench/realism_bench.py``).
        guidance: mask guidance scale s of :func:`~synbt_factory.models.diffusion.guided_noise`: 1 = the
            paper's sampler (one denoiser call per step); s > 1 pushes the tumor away from what the denoiser
            predicts without the mask, at two denoiser evaluations per step.
        mode: ``"window"`` (diffuse and decode a latent window around each mask) or ``"whole"``.
        window: smallest latent window (x, y, z) in window mode.
        context: latent cells of context added around the generated region in window mode.
        keep_margin: latent cells around the removed region that are generated; all others keep
            the real latent (RePaint replacement).
        blend_start: image voxels (Euclidean) from the mask within which the synthetic image replaces the
            input outright; ``None`` = the denoiser's ``mask_dilation`` (the whole removed region).
        blend_ramp: image voxels over which the blend weight then falls from 1 to 0, so every voxel at
            distance ≥ ``blend_start + blend_ramp`` (:attr:`InpaintingSampler.margin`) keeps the input.
        clip_sample: clip the predicted z₀ in each DDIM step to the normalised codebook range (``latent_norm.clip``).
        bf16: bf16 autocast of the denoiser on CUDA (ignored on CPU).
        compile: ``torch.compile`` the denoiser on CUDA (ignored on CPU).
        per_case_calls: ``True``: every network (encoder, quantiser, denoiser, decoder) runs one case at a time
            (bit-identical results whatever the batch, on any device). ``False``: every network runs on the whole
            window group (results depend on the batch by float rounding). ``None`` (default): on CUDA as
            ``False``; on CPU the autoencoder per case and the denoiser on the whole group if
            :func:`denoiser_batch_invariant` holds for it when the sampler is built, else per case — bit-identical
            results whatever the batch either way.
    """

    steps: int = 10
    eta: float = 1.0
    guidance: float = 1.0
    mode: str = "window"
    window: tuple[int, int, int] = (16, 16, 16)
    context: int = 2
    keep_margin: int = 1
    blend_start: int | None = 0
    blend_ramp: int = 3
    clip_sample: bool = True
    bf16: bool = True
    compile: bool = False
    per_case_calls: bool | None = None

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        if not self.guidance >= 0.0:
            raise ValueError(f"guidance must be >= 0 (1 = off), got {self.guidance}")
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(_MODES)}, got {self.mode!r}")
        if len(self.window) != 3 or any(w < 1 for w in self.window):
            raise ValueError(f"window must be three positive latent sizes, got {self.window}")
        for name in ("context", "keep_margin", "blend_ramp"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.blend_start is not None and self.blend_start < 0:
            raise ValueError(f"blend_start must be >= 0 (or None), got {self.blend_start}")


def mask_distance(masks: torch.Tensor) -> torch.Tensor:
    """Euclidean distance in voxels from every voxel to the nearest mask voxel (0 on the mask).

    Exact (SciPy's Euclidean distance transform, computed on the CPU); ``inf`` everywhere for an empty mask.

    Args:
        masks: (B, 1, X, Y, Z) or (B, X, Y, Z), nonzero = tumor, any device.

    Returns:
        float64 tensor of the same shape, on the device of ``masks``.
    """
    from scipy.ndimage import distance_transform_edt

    inside = (masks > 0).cpu().numpy()
    dist = np.full(inside.shape, np.inf)
    for index in np.ndindex(inside.shape[: inside.ndim - 3]):
        if inside[index].any():
            dist[index] = distance_transform_edt(~inside[index])
    return torch.from_numpy(dist).to(masks.device)


def blend_weights(masks: torch.Tensor, *, dilation: int, ramp: int) -> torch.Tensor:
    """Blend weight of the synthetic image: (B, 1, X, Y, Z) float in [0, 1].

    With d the Euclidean distance to the mask (:func:`mask_distance`): w = 1 for d ≤ ``dilation``, then
    1 − (d − dilation)/ramp, so w = 0 exactly where d ≥ dilation + ramp (a round halo around the mask).

    Args:
        masks: (B, X, Y, Z) or (B, 1, X, Y, Z), nonzero = tumor.
    """
    dist = mask_distance(masks if masks.dim() == 5 else masks.unsqueeze(1))
    if ramp == 0:
        return (dist <= dilation).float()
    return ((dilation + ramp - dist) / ramp).clamp(0.0, 1.0).float()


@torch.inference_mode()
def denoiser_batch_invariant(denoiser: MaskConditionedDenoiser, size: Sequence[int]) -> bool:
    """Whether ``denoiser`` gives a case the same output, bit for bit, alone and inside a batch.

    One call at batch 1 and one at batch 3, on random (z_t, Z_cond) of latent ``size`` (x, y, z) and timesteps
    999/500/1-like, the batch-1 case being row 1 (a middle row, other cases around it) of the batch of 3;
    ``torch.equal`` on the (1, C, x, y, z) outputs. A check of the kernels PyTorch picks on this machine, with
    the current thread count, at one size: a pass is evidence for other sizes and batches, not proof (the
    denoiser's CPU path was measured invariant at 16³…32×48×48, batches 1–8, 1 and 2 threads). The global
    random state is untouched.
    """
    dcfg = denoiser.config
    device = next(denoiser.parameters()).device
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(3, dcfg.latent_channels, *size, generator=gen).to(device)
    cond = torch.randn(3, dcfg.cond_channels, *size, generator=gen).to(device)
    t_max = dcfg.num_train_timesteps - 1
    timesteps = torch.tensor([t_max // 2, t_max, 1], device=device)
    alone = denoiser(z[1:2], timesteps[1:2], cond[1:2])
    batch = denoiser(z, timesteps, cond)
    return torch.equal(alone[0], batch[1])


@dataclass(frozen=True)
class _Plan:
    index: int
    start: tuple[int, int, int]  # latent cells
    size: tuple[int, int, int]


class _PerCase:
    """Calls an autoencoder one batch element at a time (same interface, batch-independent numerics)."""

    def __init__(self, autoencoder: LatentAutoencoder) -> None:
        self.inner = autoencoder
        self.in_channels = autoencoder.in_channels
        self.latent_channels = autoencoder.latent_channels
        self.downsample_factor = autoencoder.downsample_factor

    @staticmethod
    def _each(fn, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([fn(x[i : i + 1]) for i in range(x.shape[0])])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._each(self.inner.encode, x)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        return self._each(self.inner.quantize, z)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        return self._each(self.inner.decode, z_q)


class InpaintingSampler:
    """Synthetic tumors inside given masks by batched latent DDIM inpainting (library class, no IO).

    Args:
        autoencoder: a :class:`~synbt_factory.models.autoencoder.LatentAutoencoder` on the denoiser's device, eval mode.
        denoiser: the trained :class:`~synbt_factory.models.diffusion.MaskConditionedDenoiser` (EMA weights), eval mode.
        latent_norm: the normalisation it was trained with.
        config: :class:`SamplerConfig`.

    Attributes:
        per_case_autoencoder: the encoder, quantiser and decoder run one case at a time.
        per_case_denoiser: the denoiser runs one case at a time (else once per DDIM step on a whole window group).
        denoiser_batch_invariant: the result of :func:`denoiser_batch_invariant` at build time; ``None`` where
            it was not needed (``per_case_calls`` given, or CUDA).
        last_timings: seconds per stage (encode, denoise, decode, blend) of the last :meth:`sample` call.
    """

    def __init__(
        self,
        autoencoder: LatentAutoencoder,
        denoiser: MaskConditionedDenoiser,
        latent_norm: LatentNorm,
        config: SamplerConfig | None = None,
    ) -> None:
        self.autoencoder = autoencoder
        self.denoiser = denoiser
        self.norm = latent_norm
        self.config = config or SamplerConfig()
        self.diffusion_config = denoiser.config
        if autoencoder.latent_channels != self.diffusion_config.latent_channels:
            raise ValueError(
                f"autoencoder has {autoencoder.latent_channels} latent channels, "
                f"the denoiser {self.diffusion_config.latent_channels}"
            )
        self.device = next(denoiser.parameters()).device
        self.scheduler = make_ddim_scheduler(
            self.diffusion_config, self.config.steps, clip_sample=self.config.clip_sample, clip_range=latent_norm.clip
        )
        self.step_ratio = self.diffusion_config.num_train_timesteps // self.config.steps
        f = autoencoder.downsample_factor
        if self.config.blend_ramp > f * self.config.keep_margin:
            log.warning(
                "blend_ramp %d voxels reaches past the generated latent margin (%d cells × %d); the outer "
                "ramp blends towards the autoencoder's reconstruction",
                self.config.blend_ramp,
                self.config.keep_margin,
                f,
            )
        cuda = self.device.type == "cuda"
        self._autocast = self.config.bf16 and cuda
        self._denoise = torch.compile(denoiser, dynamic=False) if self.config.compile and cuda else denoiser
        self.denoiser_batch_invariant: bool | None = None
        if self.config.per_case_calls is not None:
            self.per_case_autoencoder = self.per_case_denoiser = self.config.per_case_calls
        elif cuda:
            self.per_case_autoencoder = self.per_case_denoiser = False
        else:
            self.per_case_autoencoder = True
            d = self.diffusion_config.spatial_divisor
            size = tuple(math.ceil(w / d) * d for w in self.config.window)
            t0 = time.perf_counter()
            self.denoiser_batch_invariant = denoiser_batch_invariant(denoiser, size)
            self.per_case_denoiser = not self.denoiser_batch_invariant
            log.debug(
                "denoiser batch-invariance check: %s in %.2f s", self.denoiser_batch_invariant, time.perf_counter() - t0
            )
            if self.per_case_denoiser:
                log.info(
                    "denoiser output at batch 1 differs from the same case in a batch of 3 (latent %s, %d threads): "
                    "the sampler calls it one case at a time, so every case stays bit-identical whatever its batch",
                    "x".join(map(str, size)),
                    torch.get_num_threads(),
                )
        self._ae = _PerCase(autoencoder) if self.per_case_autoencoder else autoencoder
        self.last_timings: dict[str, float] = {}

    @property
    def margin(self) -> int:
        """Voxels at Euclidean distance ≥ this (voxels) from the mask are returned bit-identical to the input."""
        return self.blend_start + self.config.blend_ramp

    @property
    def blend_start(self) -> int:
        """Voxels from the mask within which the synthetic image is taken as it is (weight 1)."""
        start = self.config.blend_start
        return self.diffusion_config.mask_dilation if start is None else start

    # ------------------------------------------------------------------ planning
    def _unit(self) -> int:
        """Image size multiple: latent factor × denoiser divisor."""
        return self.autoencoder.downsample_factor * self.diffusion_config.spatial_divisor

    def _plan(self, index: int, mask: torch.Tensor, latent_shape: tuple[int, int, int]) -> _Plan:
        if self.config.mode == "whole":
            return _Plan(index, (0, 0, 0), latent_shape)
        f, d, cfg = self.autoencoder.downsample_factor, self.diffusion_config.spatial_divisor, self.config
        idx = torch.nonzero(mask)
        lo, hi = idx.min(0).values.tolist(), idx.max(0).values.tolist()
        reach = self.margin
        start, size = [], []
        for a in range(3):
            lo_c = max(lo[a] - reach, 0) // f
            hi_c = (hi[a] + reach) // f
            extent = hi_c - lo_c + 1 + 2 * (cfg.keep_margin + cfg.context)
            n = min(math.ceil(max(extent, cfg.window[a]) / d) * d, latent_shape[a])
            centre2 = lo_c + hi_c + 1  # twice the centre
            s = min(max((centre2 - n) // 2, 0), latent_shape[a] - n)
            start.append(s)
            size.append(n)
        return _Plan(index, tuple(start), tuple(size))  # type: ignore[arg-type]

    def _device_generator(self, generator: torch.Generator) -> torch.Generator:
        seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator, device=generator.device))
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed)
        return gen

    def _randn(self, shape: Sequence[int], generators: Sequence[torch.Generator]) -> torch.Tensor:
        """One standard-normal tensor of ``shape`` per case, each from its own generator, stacked."""
        return torch.stack([torch.randn(tuple(shape), generator=g, device=self.device) for g in generators])

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        generators: Sequence[torch.Generator],
        *,
        progress: ProgressFn | None = None,
    ) -> torch.Tensor:
        """Insert one synthetic tumor per case.

        Args:
            images: (B, C_in, X, Y, Z) prepared images (pre, post), any float dtype and device.
            masks: (B, X, Y, Z) tumor masks (nonzero = tumor); an empty mask returns its image unchanged.
            generators: one ``torch.Generator`` per case (any device).
            progress: ``(done, total, {})`` per DDIM step over all window groups.

        Returns:
            (B, C_in, X, Y, Z) images with the tumor, dtype and device of ``images``.
        """
        if images.dim() != 5 or images.shape[1] != self.autoencoder.in_channels:
            raise ValueError(f"images must be (B, {self.autoencoder.in_channels}, X, Y, Z), got {tuple(images.shape)}")
        if masks.shape != (images.shape[0], *images.shape[2:]):
            expected = (images.shape[0], *images.shape[2:])
            raise ValueError(f"masks must be (B, X, Y, Z) = {expected}, got {tuple(masks.shape)}")
        if len(generators) != images.shape[0]:
            raise ValueError(f"need one generator per case: {images.shape[0]} cases, {len(generators)} generators")
        timings = {"encode": 0.0, "denoise": 0.0, "decode": 0.0, "blend": 0.0}
        out = images.clone()
        device_gens = [self._device_generator(g) for g in generators]
        spatial = tuple(int(s) for s in images.shape[2:])
        unit = self._unit()
        padded = tuple(math.ceil(s / unit) * unit for s in spatial)
        pad = [v for s, p in zip(reversed(spatial), reversed(padded), strict=True) for v in (0, p - s)]
        f = self.autoencoder.downsample_factor
        latent_shape = tuple(p // f for p in padded)
        groups: dict[tuple[int, int, int], list[_Plan]] = {}
        for i in range(images.shape[0]):
            mask_i = masks[i] > 0
            if not bool(mask_i.any()):
                log.warning("case %d of the batch has an empty mask: returned unchanged", i)
                continue
            plan = self._plan(i, mask_i, latent_shape)  # type: ignore[arg-type]
            groups.setdefault(plan.size, []).append(plan)
        total, done = len(groups) * self.config.steps, 0
        for size in sorted(groups):
            plans = groups[size]
            imgs, ms = [], []
            for plan in plans:
                sl = tuple(slice(f * s, f * (s + n)) for s, n in zip(plan.start, plan.size, strict=True))
                img = F.pad(images[plan.index].float(), pad) if any(pad) else images[plan.index].float()
                m = F.pad(masks[plan.index].gt(0).float(), pad) if any(pad) else masks[plan.index].gt(0).float()
                imgs.append(img[(slice(None), *sl)])
                ms.append(m[sl])
            x_img = torch.stack(imgs).to(self.device)
            x_mask = torch.stack(ms).to(self.device)
            gens = [device_gens[p.index] for p in plans]

            def step_done() -> None:
                nonlocal done
                done += 1
                report(progress, done, total, {})

            blended, weights = self._inpaint(x_img, x_mask, gens, timings, step_done)
            t0 = time.perf_counter()
            for plan, result, w in zip(plans, blended, weights, strict=True):
                lo = [f * s for s in plan.start]
                hi = [min(f * (s + n), dim) for s, n, dim in zip(plan.start, plan.size, spatial, strict=True)]
                region = (plan.index, slice(None), *(slice(a, b) for a, b in zip(lo, hi, strict=True)))
                crop = (slice(None), *(slice(0, b - a) for a, b in zip(lo, hi, strict=True)))
                changed = (w[crop] > 0).to(out.device)  # only these voxels are written: the rest stays the input
                out[region] = torch.where(changed, result[crop].to(device=out.device, dtype=out.dtype), out[region])
            timings["blend"] += time.perf_counter() - t0
        self.last_timings = timings
        return out

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def _inpaint(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        gens: Sequence[torch.Generator],
        timings: dict[str, float],
        step_done,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One group of equal-size windows.

        Args:
            images: (b, C_in, X, Y, Z) float32 windows; masks: (b, X, Y, Z) float.

        Returns:
            blended windows (b, C_in, X, Y, Z) and blend weights (b, 1, X, Y, Z).
        """
        dcfg, cfg, ae = self.diffusion_config, self.config, self._ae
        b = images.shape[0]
        t0 = time.perf_counter()
        z_known, cond = build_condition(ae, self.norm, images, masks, dcfg)
        z_known, cond = z_known.float(), cond.float()
        hole = dilate(masks.unsqueeze(1) > 0, dcfg.mask_dilation)
        generate = dilate(F.max_pool3d(hole.float(), kernel_size=ae.downsample_factor) > 0, cfg.keep_margin)
        keep = ~generate
        self._sync()
        t1 = time.perf_counter()
        timings["encode"] += t1 - t0

        sched = self.scheduler
        shape = tuple(z_known.shape[1:])
        timesteps = sched.timesteps
        x = self._randn(shape, gens)
        first = torch.full((b,), int(timesteps[0]), device=self.device, dtype=torch.long)
        x = torch.where(keep, sched.add_noise(z_known, self._randn(shape, gens), first), x)
        for t in timesteps.tolist():
            t_batch = torch.full((b,), t, device=self.device, dtype=torch.long)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self._autocast):
                if self.per_case_denoiser:
                    eps = torch.cat(
                        [
                            guided_noise(self._denoise, x[i : i + 1], t_batch[i : i + 1], cond[i : i + 1], cfg.guidance)
                            for i in range(b)
                        ]
                    )
                else:
                    eps = guided_noise(self._denoise, x, t_batch, cond, cfg.guidance)
            eps = eps.float()
            x_prev = torch.cat(
                [sched.step(eps[i : i + 1], t, x[i : i + 1], eta=cfg.eta, generator=gens[i])[0] for i in range(b)]
            )
            prev = t - self.step_ratio
            if prev >= 0:
                prev_batch = torch.full((b,), prev, device=self.device, dtype=torch.long)
                known_t = sched.add_noise(z_known, self._randn(shape, gens), prev_batch)
            else:
                known_t = z_known
            x = torch.where(keep, known_t, x_prev)
            step_done()
        self._sync()
        t2 = time.perf_counter()
        timings["denoise"] += t2 - t1

        decoded = ae.decode(ae.quantize(self.norm.denormalise(x))).float()
        self._sync()
        t3 = time.perf_counter()
        timings["decode"] += t3 - t2

        w = blend_weights(masks, dilation=self.blend_start, ramp=cfg.blend_ramp)
        blended = torch.where(w > 0, torch.lerp(images, decoded, w), images)
        timings["blend"] += time.perf_counter() - t3
        return blended, w
