"""The SynBT method for the factory: batched DDIM inpainting with the trained VQ-VAE and denoiser.

Picklable: it carries checkpoint paths and loads the models lazily, once per process (the
driver, or each Dask worker on a cluster).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synbt_factory.checkpoint import CheckpointError, file_sha256
from synbt_factory.generate.methods import Synthesized
from synbt_factory.generate.placing import PlacedCase
from synbt_factory.rng import torch_generator

__all__ = ["SynBTMethod"]

log = logging.getLogger(__name__)

#: Samplers loaded in this process (the driver, or each Dask worker), least recently used first, keyed by the
#: checkpoints' sha256, the device and the sampler settings: one generate run loads each checkpoint once, and a
#: process that goes through many checkpoints (tests, notebooks, benchmarks) keeps at most
#: :data:`_MODEL_CACHE_SIZE` samplers, and their models' memory, alive.
_MODEL_CACHE: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_MODEL_CACHE_SIZE = 2
_MODEL_CACHE_LOCK = threading.Lock()

#: (blend_start, blend_ramp) of the sampler's blend (:class:`~synbt_factory.synthesis.sampler.SamplerConfig`): the
#: synthetic image is taken as it is inside the mask and fades out within 3 voxels of it, so nothing farther than
#: 3 mm changes. The first blend, (None, 4) (full weight over the denoiser's 2-voxel mask dilation, then a 4-voxel
#: ramp), changed 7.8× the mask's voxels beyond 3 mm and put 5.9× more change outside the mask than inside
#: (median of 8 demo cases; (0, 3): 0 and 1.3).
BLEND: tuple[int | None, int] = (0, 3)
#: The blend every store had before it was an option: a card names the blend only when it differs, so those
#: stores keep their identity and still resume.
_FIRST_BLEND: tuple[int | None, int] = (None, 4)


class SynBTMethod:
    """Mask-conditioned latent diffusion (paper Sec. 2.2), DDIM with ``steps`` steps and mask ``guidance`` (1 = off)."""

    name = "synbt"
    batched = True

    def __init__(
        self,
        vqvae: Path,
        diffusion: Path,
        *,
        device: str = "auto",
        steps: int = 10,
        eta: float = 1.0,
        guidance: float = 1.0,
        mode: str = "window",
        blend: tuple[int | None, int] = BLEND,
    ) -> None:
        self.vqvae, self.diffusion = Path(vqvae), Path(diffusion)
        for path, what in ((self.vqvae, "VQ-VAE"), (self.diffusion, "diffusion")):
            if not path.is_file():
                raise CheckpointError(
                    f"{what} checkpoint {path} does not exist; train it first "
                    f"(synbt train {'vqvae' if what == 'VQ-VAE' else 'diffusion'})"
                )
        self.device, self.steps, self.eta, self.guidance, self.mode = device, steps, eta, guidance, mode
        self.blend = (blend[0], int(blend[1]))
        self.vqvae_sha256 = file_sha256(self.vqvae)
        self.diffusion_sha256 = file_sha256(self.diffusion)

    @classmethod
    def from_checkpoints(
        cls,
        vqvae: Path,
        diffusion: Path,
        *,
        device: str = "auto",
        steps: int = 10,
        eta: float = 1.0,
        guidance: float = 1.0,
        blend: tuple[int | None, int] = BLEND,
    ) -> SynBTMethod:
        method = cls(vqvae, diffusion, device=device, steps=steps, eta=eta, guidance=guidance, blend=blend)
        method.sampler()  # load now: a bad checkpoint fails before any case is started
        return method

    def card(self) -> dict[str, Any]:
        """The method's part of a store's run identity. ``guidance`` appears only when it is on, so stores begun
        before the option existed keep their identity and still resume."""
        card = {
            "method": self.name,
            "vqvae_sha256": self.vqvae_sha256,
            "diffusion_sha256": self.diffusion_sha256,
            "ddim_steps": self.steps,
            "eta": self.eta,
            "mode": self.mode,
        }
        if self.guidance != 1.0:
            card["guidance"] = self.guidance
        if self.blend != _FIRST_BLEND:
            card["blend"] = list(self.blend)
        return card

    def sampler(self) -> Any:
        """The :class:`~synbt_factory.synthesis.sampler.InpaintingSampler` of these checkpoints and settings,
        loaded on first use and then taken from this process's bounded cache (:data:`_MODEL_CACHE`)."""
        from synbt_factory.device import resolve_device
        from synbt_factory.models.diffusion import load_diffusion
        from synbt_factory.models.vqvae import load_vqvae
        from synbt_factory.synthesis.sampler import InpaintingSampler, SamplerConfig

        key = (
            self.vqvae_sha256,
            self.diffusion_sha256,
            self.device,
            self.steps,
            self.eta,
            self.guidance,
            self.mode,
            self.blend,
        )
        with _MODEL_CACHE_LOCK:
            cached = _MODEL_CACHE.get(key)
            if cached is not None:
                _MODEL_CACHE.move_to_end(key)
        if cached is None:
            device = resolve_device(self.device)
            autoencoder, _, _ = load_vqvae(self.vqvae, device)
            autoencoder.eval()
            denoiser, _, latent_norm, vq_sha = load_diffusion(self.diffusion, device)
            if vq_sha and vq_sha != self.vqvae_sha256:
                log.warning(
                    "the diffusion model was trained on a different VQ-VAE checkpoint (sha256 %s…)", vq_sha[:12]
                )
            cached = InpaintingSampler(
                autoencoder,
                denoiser,
                latent_norm,
                SamplerConfig(
                    steps=self.steps,
                    eta=self.eta,
                    guidance=self.guidance,
                    mode=self.mode,
                    blend_start=self.blend[0],
                    blend_ramp=self.blend[1],
                ),
            )
            with _MODEL_CACHE_LOCK:
                _MODEL_CACHE[key] = cached
                _MODEL_CACHE.move_to_end(key)
                while len(_MODEL_CACHE) > _MODEL_CACHE_SIZE:
                    _MODEL_CACHE.popitem(last=False)
        return cached

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def synthesize(self, cases: Sequence[PlacedCase]) -> list[Synthesized]:
        import torch

        sampler = self.sampler()
        t0 = time.perf_counter()
        images = torch.from_numpy(np.stack([c.image for c in cases]))
        masks = torch.from_numpy(np.stack([c.synthetic_mask for c in cases]))
        generators = [torch_generator(c.job.seed, c.job.index, "ddim") for c in cases]
        with torch.inference_mode():
            out = sampler.sample(images, masks, generators).float().cpu().numpy()
        per_case = (time.perf_counter() - t0) / len(cases)
        timings = {f"sampler_{k}": v / len(cases) for k, v in sampler.last_timings.items()}
        record = {
            "ddim_steps": self.steps,
            "eta": self.eta,
            "guidance": self.guidance,
            "mode": self.mode,
            "margin_voxels": sampler.margin,
        }
        return [(out[i], dict(record), {"synthesis": per_case, **timings}) for i in range(len(cases))]
