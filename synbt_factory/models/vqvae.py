"""Patch-to-volume VQ-VAE (SynBT paper Sec. 2.1, after 3D MedDiffusion).

The network is MONAI's :class:`monai.networks.nets.VQVAE` (encoder, EMA codebook, decoder).
What this module adds is the patch-to-volume use of it:

* **patch-wise encoding**: a volume X = Concat(X_pre, X_post) is zero-padded to a multiple of
  the patch size, cut into non-overlapping patches x_i, each encoded z_i = E(x_i) (batched),
  and the z_i are reassembled by grid position into the latent volume Z;
* **quantisation** of Z by nearest-code search (memory-bounded, bit-identical to MONAI's);
* **whole-volume decoding** X̂ = D(Ẑ) in one pass, or tiled (overlapping latent tiles decoded
  separately and blended with MONAI's sliding-window inferer) under a memory bound.

Stage 1 trains everything on random patches through MONAI's own quantiser (EMA codebook
updates); stage 2 freezes the encoder and codebook (:meth:`PatchVolumeVQVAE.freeze_encoder_and_codebook`)
and fine-tunes the decoder on whole volumes.

:func:`load_vqvae` rebuilds a trained model from its checkpoint. This module imports nothing from
``store/``, ``training/``, ``data/`` or ``cli/``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.networks.nets import VQVAE
from torch import nn

from synbt_factory.checkpoint import load_checkpoint, rebuilding_from
from synbt_factory.config import config_from_dict
from synbt_factory.models.autoencoder import LatentNorm
from synbt_factory.models.quantizer import DEFAULT_CHUNK_BYTES, chunk_rows_for, embed_indices, nearest_code_indices

__all__ = [
    "CHECKPOINT_KIND",
    "VQVAEConfig",
    "PatchVolumeVQVAE",
    "LoadedVQVAE",
    "load_vqvae",
    "vqvae_preset",
    "VQVAE_PRESETS",
    "ENCODE_CHUNK_BYTES",
    "patch_chunks",
    "patch_grid_shape",
    "tile_weight_map",
]

log = logging.getLogger(__name__)

#: ``kind`` of every VQ-VAE checkpoint (:func:`synbt_factory.checkpoint.save_checkpoint`).
CHECKPOINT_KIND = "vqvae"


@dataclass(frozen=True, kw_only=True)
class VQVAEConfig:
    """Architecture of the patch-to-volume VQ-VAE (defaults: the paper's, Sec. 3 "Implementation Details").

    Args:
        in_channels: image channels (2: pre-contrast and one post-contrast phase).
        channels: feature channels per encoder level. The paper's "initial convolution 32 channels,
            doubled as the resolution halves" with compression 4 is (32, 64, 128) at strides (1, 2, 2).
        strides: stride of each level's first convolution, 1 or 2; their product is the compression.
        num_res_layers: residual units per level (not given in the paper; 2 is our choice).
        num_res_channels: channels inside the residual units per level; ``None`` = ``channels``.
        num_embeddings: codebook size K (8192).
        embedding_dim: code dimension D = latent channels (8).
        commitment_cost: weight of the commitment term β‖z − sg[e]‖².
        ema_decay: EMA decay of the codebook updates (MONAI ``decay``).
        ema_epsilon: Laplace smoothing of the EMA cluster sizes.
        patch_size: edge of the cubic training / encoding patch (64).
        quantize_chunk_bytes: memory budget of one distance buffer in the chunked code search.
        use_checkpointing: activation checkpointing in encoder/decoder (trades compute for memory).
    """

    in_channels: int = 2
    channels: tuple[int, ...] = (32, 64, 128)
    strides: tuple[int, ...] = (1, 2, 2)
    num_res_layers: int = 2
    num_res_channels: tuple[int, ...] | None = None
    num_embeddings: int = 8192
    embedding_dim: int = 8
    commitment_cost: float = 0.25
    ema_decay: float = 0.99
    ema_epsilon: float = 1e-5
    patch_size: int = 64
    quantize_chunk_bytes: int = DEFAULT_CHUNK_BYTES
    use_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {self.in_channels}")
        if not self.channels or any(c < 1 for c in self.channels):
            raise ValueError(f"channels must be a non-empty tuple of positive ints, got {self.channels}")
        if len(self.strides) != len(self.channels):
            raise ValueError(f"strides must have one entry per level ({len(self.channels)}), got {self.strides}")
        if any(s not in (1, 2) for s in self.strides):
            raise ValueError(f"strides must be 1 or 2 each, got {self.strides}")
        if self.num_res_layers < 0:
            raise ValueError(f"num_res_layers must be >= 0, got {self.num_res_layers}")
        if self.num_res_channels is not None and len(self.num_res_channels) != len(self.channels):
            raise ValueError(f"num_res_channels must match channels in length, got {self.num_res_channels}")
        if self.num_embeddings < 2:
            raise ValueError(f"num_embeddings must be >= 2, got {self.num_embeddings}")
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {self.embedding_dim}")
        if self.commitment_cost < 0:
            raise ValueError(f"commitment_cost must be >= 0, got {self.commitment_cost}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.ema_epsilon <= 0:
            raise ValueError(f"ema_epsilon must be > 0, got {self.ema_epsilon}")
        if self.patch_size < self.downsample_factor or self.patch_size % self.downsample_factor:
            raise ValueError(
                f"patch_size must be a positive multiple of the compression {self.downsample_factor}, "
                f"got {self.patch_size}"
            )
        if self.quantize_chunk_bytes < 4 * self.num_embeddings:
            raise ValueError(
                f"quantize_chunk_bytes must be >= {4 * self.num_embeddings}, got {self.quantize_chunk_bytes}"
            )

    @property
    def downsample_factor(self) -> int:
        return math.prod(self.strides)

    @property
    def latent_patch_size(self) -> int:
        return self.patch_size // self.downsample_factor


#: Named configurations: ``tiny`` for tests (seconds on CPU), ``cpu`` the CPU recipe behind the demo's
#: shipped weights (``tiny`` with twice the channels and 256 codes), ``small`` for a laptop run, ``paper`` the
#: published one.
VQVAE_PRESETS: dict[str, VQVAEConfig] = {
    "tiny": VQVAEConfig(channels=(8, 16), strides=(2, 2), num_res_layers=1, num_embeddings=64, patch_size=16),
    "cpu": VQVAEConfig(channels=(16, 32), strides=(2, 2), num_res_layers=1, num_embeddings=256, patch_size=16),
    "small": VQVAEConfig(
        channels=(16, 32, 64), strides=(1, 2, 2), num_res_layers=1, num_embeddings=1024, patch_size=32
    ),
    "paper": VQVAEConfig(),
}


def vqvae_preset(name: str) -> VQVAEConfig:
    """The named :data:`VQVAE_PRESETS` entry."""
    try:
        return VQVAE_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown VQ-VAE preset {name!r}; choose one of {', '.join(VQVAE_PRESETS)}") from None


def tile_weight_map(
    roi: tuple[int, ...],
    *,
    mode: str = "gaussian",
    sigma_scale: float = 0.125,
    floor: float = 1e-3,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Separable blending weights of one tile: the outer product of one 1-D profile per axis.

    Args:
        roi: tile size per axis.
        mode: ``"gaussian"`` (σ = ``sigma_scale``·size), ``"linear"`` (tent, 1 at the centre) or ``"constant"``.
        floor: smallest value of each 1-D profile (keeps every voxel covered).

    Returns:
        ``roi``-shaped float32 weights in (0, 1].
    """
    if mode not in ("gaussian", "linear", "constant"):
        raise ValueError(f"mode must be 'gaussian', 'linear' or 'constant', got {mode!r}")
    profiles = []
    for n in roi:
        pos = torch.arange(n, dtype=torch.float64, device=device)
        centre = (n - 1) / 2.0
        if mode == "gaussian":
            w = torch.exp(-0.5 * ((pos - centre) / max(sigma_scale * n, 1e-6)) ** 2)
        elif mode == "linear":
            w = 1.0 - (pos - centre).abs() / (centre + 1.0)
        else:
            w = torch.ones(n, dtype=torch.float64, device=device)
        profiles.append((w / w.max()).clamp_min(floor))
    grid = profiles[0]
    for w in profiles[1:]:
        grid = grid[..., None] * w
    return grid.float()


#: Memory budget of the largest encoder activation of one encoder call when :meth:`PatchVolumeVQVAE.encode` chooses
#: how many patches go into each call (``patch_batch=None``).
ENCODE_CHUNK_BYTES = 256 * 1024 * 1024

#: Patches per encoder call before ``patch_batch=None`` existed; the default reproduces its results (see
#: :func:`patch_chunks`).
_REFERENCE_PATCH_BATCH = 4


def patch_chunks(n: int, most: int) -> list[tuple[int, int]]:
    """(start, stop) of the encoder calls for ``n`` patches, at most ``most`` patches per call.

    Equal results to calls of 4 patches, in far fewer calls: on CPU, oneDNN's 3-D convolution gives every sample
    the same values in any batch of 2 or more, while a batch of 1 takes another kernel (float rounding differs,
    ~1e-6). Calls of 4 leave a lone last patch when ``n`` is 1 modulo 4; that patch is encoded alone here too,
    and the others are split into calls of nearly equal size, each of 2 or more patches.

    Args:
        n: patches to encode (>= 0).
        most: largest call (>= 4).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if most < _REFERENCE_PATCH_BATCH:
        raise ValueError(f"most must be >= {_REFERENCE_PATCH_BATCH}, got {most}")
    lone = n % _REFERENCE_PATCH_BATCH == 1
    bulk = n - lone
    chunks = []
    if bulk:
        calls = -(-bulk // most)
        base, extra = divmod(bulk, calls)  # base >= most / 2 >= 2 when calls > 1
        start = 0
        for k in range(calls):
            stop = start + base + (k < extra)
            chunks.append((start, stop))
            start = stop
    if lone:
        chunks.append((bulk, n))
    return chunks


def patch_grid_shape(spatial: tuple[int, ...], patch: int) -> tuple[int, ...]:
    """Patches per axis after padding ``spatial`` up to a multiple of ``patch``."""
    return tuple(-(-s // patch) for s in spatial)


class PatchVolumeVQVAE(nn.Module):
    """MONAI VQ-VAE with patch-wise encoding and whole-volume (or tiled) decoding.

    Implements :class:`synbt_factory.models.autoencoder.LatentAutoencoder`.

    Attributes:
        config: the :class:`VQVAEConfig` it was built from.
        net: the MONAI ``VQVAE`` (``net.encoder``, ``net.quantizer``, ``net.decoder``).
        in_channels, latent_channels, downsample_factor: latent geometry.
    """

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.in_channels = config.in_channels
        self.latent_channels = config.embedding_dim
        self.downsample_factor = config.downsample_factor
        down = tuple((s, 3, 1, 1) if s == 1 else (s, 4, 1, 1) for s in config.strides)
        up = tuple((s, 3, 1, 1, 0) if s == 1 else (s, 4, 1, 1, 0) for s in reversed(config.strides))
        self.net = VQVAE(
            spatial_dims=3,
            in_channels=config.in_channels,
            out_channels=config.in_channels,
            channels=config.channels,
            num_res_layers=config.num_res_layers,
            num_res_channels=config.num_res_channels or config.channels,
            downsample_parameters=down,
            upsample_parameters=up,
            num_embeddings=config.num_embeddings,
            embedding_dim=config.embedding_dim,
            commitment_cost=config.commitment_cost,
            decay=config.ema_decay,
            epsilon=config.ema_epsilon,
            ddp_sync=False,
            use_checkpointing=config.use_checkpointing,
        )
        self._frozen = False

    # ------------------------------------------------------------------ codebook
    @property
    def codebook(self) -> torch.Tensor:
        """The (K, D) code vectors (EMA-updated during patch training)."""
        return self.net.quantizer.quantizer.embedding.weight

    def latent_norm(self) -> LatentNorm:
        """Codebook range → [-1, 1] normalisation for the diffusion model."""
        return LatentNorm.from_codebook(self.codebook.detach())

    @property
    def encoder_frozen(self) -> bool:
        return self._frozen

    def freeze_encoder_and_codebook(self) -> None:
        """Stage 2 (paper Fig. 1, blue): encoder and codebook fixed, only the decoder trains.

        Sets ``requires_grad=False`` on encoder and quantiser parameters and keeps both in eval
        mode (so the EMA codebook never updates) even after ``model.train()``.
        """
        for module in (self.net.encoder, self.net.quantizer):
            for p in module.parameters():
                p.requires_grad_(False)
            module.eval()
        self._frozen = True

    def train(self, mode: bool = True) -> PatchVolumeVQVAE:
        super().train(mode)
        if self._frozen:
            self.net.encoder.eval()
            self.net.quantizer.eval()
        return self

    def decoder_parameters(self) -> list[nn.Parameter]:
        """Parameters trained in the volume stage (MONAI's VQVAE has no separate post-quantisation layer)."""
        return list(self.net.decoder.parameters())

    # ------------------------------------------------------------------ encoding
    def encode_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Encoder on a batch of patches: (N, C, p, p, p) → (N, D, p/f, p/f, p/f) continuous latents."""
        return self.net.encode(patches)

    def encode(self, x: torch.Tensor, *, patch_batch: int | None = None) -> torch.Tensor:
        """Patch-wise encoding of whole volumes (paper Sec. 2.1: z_i = E(x_i), reassembled by grid position).

        Args:
            x: (B, C, X, Y, Z) image; X, Y, Z multiples of ``downsample_factor``. Zero-padded up to a
                multiple of ``patch_size``; the latent of the padding is cropped off again.
            patch_batch: patches per encoder call (memory knob). ``None`` (default): as many as
                :data:`ENCODE_CHUNK_BYTES` allows, split by :func:`patch_chunks`, which gives the results of
                ``patch_batch=4`` bit for bit on CPU in far fewer calls (a 64³ window of the ``cpu`` preset: 1 call
                instead of 16; small calls are what a loaded CPU slows down most). A fixed number encodes
                consecutive chunks of that many patches; a chunk of one patch rounds differently (~1e-6).

        Returns:
            (B, D, X/f, Y/f, Z/f) continuous latent.
        """
        self._check_image(x)
        p, f = self.config.patch_size, self.downsample_factor
        b, c = x.shape[:2]
        spatial = tuple(x.shape[2:])
        grid = patch_grid_shape(spatial, p)
        pad = [v for s, g in zip(reversed(spatial), reversed(grid), strict=True) for v in (0, g * p - s)]
        xp = F.pad(x, pad) if any(pad) else x
        gx, gy, gz = grid
        patches = (
            xp.reshape(b, c, gx, p, gy, p, gz, p).permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b * gx * gy * gz, c, p, p, p)
        )
        if patch_batch is None:
            chunks = patch_chunks(patches.shape[0], self.patches_per_call())
        elif patch_batch < 1:
            raise ValueError(f"patch_batch must be >= 1, got {patch_batch}")
        else:
            chunks = [(i, min(i + patch_batch, patches.shape[0])) for i in range(0, patches.shape[0], patch_batch)]
        latents = torch.cat([self.encode_patches(patches[a:b]) for a, b in chunks])
        q, d = p // f, latents.shape[1]
        z = (
            latents.reshape(b, gx, gy, gz, d, q, q, q)
            .permute(0, 4, 1, 5, 2, 6, 3, 7)
            .reshape(b, d, gx * q, gy * q, gz * q)
        )
        return z[:, :, : spatial[0] // f, : spatial[1] // f, : spatial[2] // f].contiguous()

    def patches_per_call(self, chunk_bytes: int | None = None) -> int:
        """Most patches per encoder call under ``chunk_bytes`` (default :data:`ENCODE_CHUNK_BYTES`) for the
        largest activation (float32), and at least 4."""
        p, size, largest = self.config.patch_size, 1, 0
        for channels, stride in zip(self.config.channels, self.config.strides, strict=True):
            size *= stride
            largest = max(largest, channels * (p // size) ** 3 * 4)
        budget = ENCODE_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
        return max(_REFERENCE_PATCH_BATCH, budget // max(largest, 1))

    # ------------------------------------------------------------------ quantisation
    def quantize_indices(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, x, y, z) → (B, x, y, z) nearest-code indices (chunked; identical to MONAI's)."""
        rows = chunk_rows_for(self.config.num_embeddings, self.config.quantize_chunk_bytes)
        return nearest_code_indices(z, self.codebook.detach(), chunk_rows=rows)

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, x, y, z) code indices → (B, D, x, y, z) code vectors."""
        return embed_indices(indices, self.codebook.detach())

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Replace every latent vector by its nearest code (exact codebook values); same shape, no gradient."""
        return self.embed(self.quantize_indices(z))

    # ------------------------------------------------------------------ decoding
    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Whole-volume decoding in one pass: (B, D, x, y, z) → (B, C, f·x, f·y, f·z)."""
        return self.net.decode(z_q)

    def decode_tiled(
        self,
        z_q: torch.Tensor,
        *,
        tile: int | tuple[int, int, int] = 16,
        overlap: float = 0.5,
        mode: str = "gaussian",
        sw_batch_size: int = 1,
        out_device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Decode overlapping latent tiles and blend them (MONAI ``sliding_window_inference``).

        The blending weights are separable (a product of one 1-D profile per axis, see
        :func:`tile_weight_map`), so two tiles that overlap along one axis are weighted against each
        other by that axis alone; MONAI's own Gaussian map clamps the 3-D product to 1e-3, which
        equalises the weights of tile corners and lets their border errors through.

        Peak memory is that of decoding ``sw_batch_size`` tiles plus the (B, C, f·x, f·y, f·z)
        output and weight maps (on ``out_device``, e.g. CPU while tiles decode on the GPU).

        Args:
            z_q: quantised latent (B, D, x, y, z).
            tile: latent tile edge(s); clipped to the latent size.
            overlap: fraction of a tile shared with its neighbour, in [0, 1).
            mode: blending weights, ``"gaussian"``, ``"linear"`` (tent) or ``"constant"``.
            sw_batch_size: tiles decoded per call.
            out_device: where the output is assembled (default: ``z_q``'s device).

        Returns:
            (B, C, f·x, f·y, f·z) image.
        """
        roi = (tile,) * 3 if isinstance(tile, int) else tuple(tile)
        if len(roi) != 3 or any(t < 1 for t in roi):
            raise ValueError(f"tile must be a positive int or three of them, got {tile}")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        roi = tuple(min(t, s) for t, s in zip(roi, z_q.shape[2:], strict=True))
        weights = tile_weight_map(roi, mode=mode, device=z_q.device)
        out = sliding_window_inference(
            z_q,
            roi_size=roi,
            sw_batch_size=sw_batch_size,
            predictor=self.net.decode,
            overlap=overlap,
            mode="constant",
            roi_weight_map=weights,
            sw_device=z_q.device,
            device=out_device or z_q.device,
            progress=False,
        )
        return torch.as_tensor(out)

    # ------------------------------------------------------------------ full passes
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch-stage pass through MONAI's quantiser (EMA codebook update in train mode).

        Args:
            x: (B, C, p, p, p) patches.

        Returns:
            reconstruction (B, C, p, p, p) and the commitment loss (scalar).
        """
        return self.net(x)

    @torch.no_grad()
    def reconstruct(
        self, x: torch.Tensor, *, tiled: bool = False, patch_batch: int = 4, **tile_kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference: patch-wise encode → chunked quantise → whole (or tiled) decode.

        Args:
            x: (B, C, X, Y, Z) image, X, Y, Z multiples of ``downsample_factor``.
            tiled: use :meth:`decode_tiled` (``tile_kwargs`` passed on) instead of one pass.

        Returns:
            (B, C, X, Y, Z) reconstruction and (B, X/f, Y/f, Z/f) code indices.
        """
        idx = self.quantize_indices(self.encode(x, patch_batch=patch_batch))
        z_q = self.embed(idx)
        recon = self.decode_tiled(z_q, **tile_kwargs) if tiled else self.decode(z_q)  # type: ignore[arg-type]
        return recon, idx

    def _check_image(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, X, Y, Z), got {tuple(x.shape)}")
        bad = [s for s in x.shape[2:] if s % self.downsample_factor]
        if bad:
            raise ValueError(
                f"spatial size {tuple(x.shape[2:])} must be a multiple of {self.downsample_factor} on every axis"
            )


# ---------------------------------------------------------------------------- loading
class LoadedVQVAE(NamedTuple):
    """A trained VQ-VAE rebuilt from its checkpoint (unpacks as ``model, norm, config``).

    Attributes:
        model: the network in eval mode, gradients off, on the requested device.
        norm: its latent normalisation (codebook range → [-1, 1], or the one saved with it).
        config: the architecture it was built from.
    """

    model: PatchVolumeVQVAE
    norm: LatentNorm
    config: VQVAEConfig


def load_vqvae(path: Path, device: str | torch.device = "cpu") -> LoadedVQVAE:
    """Rebuild a trained VQ-VAE for inference (eval mode, gradients off) from a checkpoint.

    Args:
        path: a VQ-VAE checkpoint (``final.pt``, ``last.pt`` or ``step_<N>.pt`` of ``synbt train vqvae``).
        device: where the model goes.

    Returns:
        :class:`LoadedVQVAE` ``(model, norm, config)``.

    Raises:
        CheckpointError: missing, corrupt, not a VQ-VAE checkpoint, or its config and weights cannot
            rebuild the model.
    """
    ckpt = load_checkpoint(Path(path), kind=CHECKPOINT_KIND, map_location="cpu")
    with rebuilding_from(path, "VQ-VAE"):
        config = config_from_dict(VQVAEConfig, ckpt["config"])
        model = PatchVolumeVQVAE(config)
        model.load_state_dict(ckpt["model"])
        norm = LatentNorm(**ckpt["latent_norm"]) if "latent_norm" in ckpt else model.latent_norm()
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedVQVAE(model, norm, config)
