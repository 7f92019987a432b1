"""One synthetic tumor in one case (``synbt generate-one``): latent DDIM inpainting inside a given mask.

The steps, each its own function so a caller can check its inputs before the models load:

1. :func:`read_case`: a prepared case (``STORE::CASE_ID``) or a NIfTI folder (``<ID>_0000`` pre-contrast,
   ``<ID>_0001`` post-contrast on the prepared grid);
2. :func:`read_mask`: a tumor mask NIfTI, checked to lie on the case's grid and to hold a tumor;
3. :func:`load_generators`: the VQ-VAE and the denoiser;
4. :func:`generate_one`: the inpainting (voxels farther than the sampler's margin from the mask stay the input's);
5. :func:`write_4d`: the result as one 4-D NIfTI (X, Y, Z, 2), written atomically.
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from synbt_factory.io import atomic_write_bytes

if TYPE_CHECKING:
    from synbt_factory.progress import ProgressFn
    from synbt_factory.synthesis.sampler import SamplerConfig

__all__ = [
    "Generators",
    "MaskGridError",
    "OneCase",
    "OneResult",
    "generate_one",
    "load_generators",
    "read_case",
    "read_mask",
    "write_4d",
]

log = logging.getLogger(__name__)


class MaskGridError(ValueError):
    """A tumor mask that is not on its case's grid (shape or affine), or that holds no tumor."""


@dataclass(frozen=True)
class OneCase:
    """The case a tumor is inserted into.

    Attributes:
        image: (2, X, Y, Z) float32: pre-contrast, first post-contrast.
        affine: its 4×4 voxel-to-world (RAS mm) matrix.
        label: the case's name in messages (case id, or the NIfTI folder's name).
    """

    image: np.ndarray
    affine: np.ndarray
    label: str


@dataclass(frozen=True)
class Generators:
    """The trained networks that synthesise a tumor (see :func:`load_generators`).

    Attributes:
        autoencoder: the VQ-VAE, eval mode, on the sampling device.
        denoiser: the mask-conditioned denoiser (EMA weights), eval mode, on the same device.
        norm: the latent normalisation the denoiser was trained with.
        same_vqvae: False when the denoiser's checkpoint records another VQ-VAE checkpoint than the one loaded
            (fine for a volume-stage fine-tune of the same patch model, wrong otherwise).
    """

    autoencoder: Any
    denoiser: Any
    norm: Any
    same_vqvae: bool = True


@dataclass(frozen=True)
class OneResult:
    """What :func:`generate_one` made.

    Attributes:
        image: (2, X, Y, Z) float32, the case with the synthetic tumor.
        tumor_voxels: voxels of the mask.
        margin: voxels at least this far (Euclidean) from the mask are exactly the input's.
        timings: seconds per sampler stage (``encode``, ``denoise``, ``decode``, ...).
    """

    image: np.ndarray
    tumor_voxels: int
    margin: int
    timings: dict[str, float] = field(default_factory=dict)


def read_case(case: str) -> OneCase:
    """Read the case a tumor goes into.

    Args:
        case: ``STORE::CASE_ID`` (a complete case of a Zarr store) or a folder holding exactly one
            ``*_0000.nii[.gz]`` (pre-contrast) and one ``*_0001.nii[.gz]`` (post-contrast) on one grid.

    Raises:
        KeyError: the store has no complete case of that id.
        FileNotFoundError: ``case`` is neither form, or the folder lacks a phase (or holds two files of one).
        ValueError: the two phases lie on different grids.
        StoreError, NiftiReadError: an unreadable store or file.
    """
    from synbt_factory.data.nifti import read_full, same_geometry

    if "::" in case:
        from synbt_factory.store import CaseStore

        location, case_id = case.rsplit("::", 1)
        store = CaseStore.open(location)
        if case_id not in store:
            raise KeyError(f"case {case_id!r} is not a complete case of {location} (have e.g. {store.case_ids()[:5]})")
        arrays, attrs = store.read_case(case_id, ("image",))
        return OneCase(arrays["image"].astype(np.float32), np.asarray(attrs["affine"], dtype=np.float64), case_id)
    folder = Path(case)
    if not folder.is_dir():
        raise FileNotFoundError(f"--case {case} is neither STORE::CASE_ID nor a folder")
    files = {}
    for phase in ("0000", "0001"):
        found = sorted(p for p in folder.iterdir() if p.name.lower().endswith((f"_{phase}.nii.gz", f"_{phase}.nii")))
        if len(found) != 1:
            raise FileNotFoundError(f"{folder} must hold exactly one *_{phase}.nii.gz (found {len(found)})")
        files[phase] = found[0]
    pre, g_pre = read_full(files["0000"])
    post, g_post = read_full(files["0001"])
    if not same_geometry(g_pre, g_post):
        raise ValueError(f"{files['0000'].name} and {files['0001'].name} are on different grids")
    return OneCase(np.stack([pre, post]).astype(np.float32), g_pre.affine, folder.name)


def read_mask(path: Path, case: OneCase) -> np.ndarray:
    """The tumor mask at ``path`` as (X, Y, Z) uint8 (1 = tumor), checked against ``case``'s grid.

    Raises:
        NiftiReadError, FileNotFoundError: the file cannot be read.
        MaskGridError: another shape or affine than the case's (resample it first), or no tumor voxel.
    """
    from synbt_factory.data.nifti import read_full

    mask_data, mask_geometry = read_full(path)
    if tuple(mask_data.shape[:3]) != tuple(case.image.shape[1:]) or mask_data.ndim != 3:
        raise MaskGridError(
            f"mask {path} has shape {tuple(mask_data.shape)}, case {case.label} has "
            f"{tuple(case.image.shape[1:])}: the mask must be on the prepared case's grid "
            "(resample it first)"
        )
    if not np.allclose(mask_geometry.affine, case.affine, atol=1e-3):
        raise MaskGridError(
            f"mask {path} has another affine than case {case.label}: the mask must be on the prepared "
            f"case's grid (mask affine {np.round(mask_geometry.affine, 3).tolist()}, case "
            f"{np.round(case.affine, 3).tolist()})"
        )
    if not np.any(mask_data > 0):
        raise MaskGridError(f"mask {path} is empty: nothing to synthesise")
    return (mask_data > 0).astype(np.uint8)


def load_generators(vqvae: Path, diffusion: Path, device: Any = "cpu") -> Generators:
    """Load the VQ-VAE and the denoiser for sampling on ``device``.

    Raises:
        CheckpointError, FileNotFoundError: a missing or broken checkpoint (the message names the file).
    """
    from synbt_factory.checkpoint import file_sha256
    from synbt_factory.models.diffusion import load_diffusion
    from synbt_factory.models.vqvae import load_vqvae

    autoencoder, _, _ = load_vqvae(vqvae, device)
    denoiser, _, norm, vq_sha = load_diffusion(diffusion, device)
    same = not (vq_sha and vq_sha != file_sha256(vqvae))
    if not same:
        log.debug("%s was trained on latents of VQ-VAE sha256 %s…, not %s", diffusion, vq_sha[:12], vqvae)
    return Generators(autoencoder, denoiser, norm, same)


def generate_one(
    case: OneCase,
    mask: np.ndarray,
    generators: Generators,
    config: SamplerConfig,
    *,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> OneResult:
    """Insert one synthetic tumor into ``case`` inside ``mask`` by latent DDIM inpainting.

    Args:
        case: the case (:func:`read_case`).
        mask: (X, Y, Z) tumor mask on the case's grid, nonzero = tumor (:func:`read_mask`).
        generators: the networks (:func:`load_generators`).
        config: the sampler's settings (steps, eta, guidance, mode).
        seed: seed of the case's noise (stream ``"ddim"``, case index 0): same seed, same tumor.
        progress: ``(done, total, {})`` per DDIM step.

    Raises:
        ValueError, RuntimeError: the sampler refused the inputs or failed (e.g. out of memory).
    """
    import torch

    from synbt_factory.rng import torch_generator
    from synbt_factory.synthesis.sampler import InpaintingSampler

    sampler = InpaintingSampler(generators.autoencoder, generators.denoiser, generators.norm, config)
    images = torch.from_numpy(case.image)[None]
    masks = torch.from_numpy((np.asarray(mask) > 0).astype(np.uint8))[None]
    result = sampler.sample(images, masks, [torch_generator(seed, 0, "ddim")], progress=progress)
    timings = dict(sampler.last_timings)
    log.debug("generated one tumor in case %s: %s", case.label, timings)
    return OneResult(result[0].float().numpy(), int(masks.sum()), sampler.margin, timings)


def write_4d(path: Path, image: np.ndarray, affine: np.ndarray) -> Path:
    """Write (2, X, Y, Z) ``image`` as a gzipped 4-D NIfTI (X, Y, Z, 2) float32 with ``affine`` as sform and
    qform (code 2, aligned), atomically (:func:`synbt_factory.io.atomic_write_bytes`; the folder is created)."""
    import nibabel as nib

    img = nib.Nifti1Image(np.moveaxis(np.asarray(image), 0, -1).astype(np.float32), affine)
    img.set_sform(affine, code=2)
    img.set_qform(affine, code=2)
    return atomic_write_bytes(path, gzip.compress(img.to_bytes(), compresslevel=1, mtime=0))
