"""One phantom case in memory: anatomy → tumors → kinetics → acquisition → labels → info.

Every random draw comes from a named per-case stream (:func:`synbt_factory.rng.case_generator`
with ``stream="phantom/<part>"`` at site A and ``"phantom/site-B/<part>"`` at site B, so that the
two sites never share draws even at the same seed), so a case depends only on
``(seed, case_index, config)`` and never on how many cases are made or in which order. The anatomy
stream does not depend on whether the case is healthy, so the healthy and the tumor version of a
case share their anatomy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from synbt_factory import __version__
from synbt_factory.phantom.acquisition import (
    VIEWS,
    Geometry,
    orientation_for,
    psf_sigma_mm,
    resample,
    rician,
    sample_geometry,
    to_stored,
)
from synbt_factory.phantom.anatomy import CLASS_NAMES, KIND_TO_CLASS, Anatomy, Tissue, build_anatomy
from synbt_factory.phantom.fields import bias_field, smooth_field
from synbt_factory.phantom.info import BREAST_COORDINATES_CONVENTION, breast_coordinates, sample_clinical
from synbt_factory.phantom.kinetics import Kinetics, sample_acquisition_times, sample_kinetics
from synbt_factory.phantom.presets import SITE_PROFILES, PhantomConfig
from synbt_factory.phantom.sites import SITE_STYLES
from synbt_factory.phantom.tumors import RenderedTumor, TumorSpec, render_tumor, sample_tumors, shape_kind
from synbt_factory.rng import case_generator

__all__ = ["PhantomCase", "make_phantom_case", "case_id_for", "is_healthy", "is_test", "is_lowercase"]

log = logging.getLogger(__name__)

DATASET_NAME = "PHANTOM"


def case_id_for(case_index: int) -> str:
    """``PHANTOM_001`` for index 0 (1-based, zero-padded to 3 digits)."""
    if case_index < 0:
        raise ValueError(f"case_index must be >= 0, got {case_index}")
    return f"PHANTOM_{case_index + 1:03d}"


def _spread(case_index: int, fraction: float, phase: float) -> bool:
    """True for an evenly spread ``fraction`` of indices (exact to ±1 over any run of indices)."""
    if fraction <= 0.0:
        return False
    if fraction >= 1.0:
        return True
    return int(np.floor((case_index + 1) * fraction + phase)) > int(np.floor(case_index * fraction + phase))


def _seed_phase(seed: int, stream: str) -> float:
    return float(case_generator(seed, 0, stream).random())


def is_healthy(case_index: int, seed: int, fraction: float) -> bool:
    """Whether a case has no tumor: an evenly spread, seed-shifted ``fraction`` of indices."""
    return _spread(case_index, fraction, _seed_phase(seed, "phantom/healthy"))


def is_test(case_index: int, seed: int, fraction: float) -> bool:
    """Whether a case is in ``test_split`` (evenly spread, seed-shifted)."""
    return _spread(case_index, fraction, _seed_phase(seed, "phantom/split"))


def is_lowercase(case_index: int, every: int) -> bool:
    """Every ``every``-th case (by 1-based number) uses lower-case file names."""
    return every > 0 and (case_index + 1) % every == 0


@dataclass(frozen=True, kw_only=True, eq=False)
class PhantomCase:
    """One case, in stored voxel order (the arrays written to the NIfTI files).

    Attributes:
        case_id: ``PHANTOM_###``; ``file_stem`` is the name used on disk (lower-case for some cases).
        phases: int16 (I, J, K) arrays, ``phases[0]`` pre-contrast, ``phases[1]`` first post ...;
            multiply by ``scl_slope`` for the intensity (see :meth:`phase_float`).
        affine: (4, 4) float64 voxel → RAS+ mm affine shared by every array.
        expert_mask / automatic_mask / breast_mask: uint8 0/1.
        tissue_labels: uint8, 0 background, 1 vessels, 2 dense fibroglandular tissue (in the breast).
        class_map: uint8 statistics label, codes in :data:`CLASS_NAMES` (0 background, 1 fat,
            2 fgt, 3 skin, 4 chest wall, 5 lung, 6 heart, 7 vessel, 8 tumor enhancing, 9 tumor necrotic).
        info: the patient info JSON (dict).
        acquisition_times_s: seconds after injection per phase (phase 0 = 0).
        tumors: one record per tumor (its :class:`TumorSpec` plus measured volume and
            equivalent diameter in the anatomy grid).
        site: ``"A"`` (training phantom) or ``"B"`` (external test family).
    """

    case_id: str
    case_index: int
    seed: int
    preset: str
    phases: list[np.ndarray]
    affine: np.ndarray
    scl_slope: float
    expert_mask: np.ndarray
    automatic_mask: np.ndarray
    tissue_labels: np.ndarray
    breast_mask: np.ndarray
    class_map: np.ndarray
    info: dict[str, Any]
    acquisition_times_s: list[float]
    tumors: tuple[dict[str, Any], ...] = field(default=())
    healthy: bool = False
    lowercase: bool = False
    site_profile: str = ""
    fat_suppressed: bool = False
    orientation: str = "RAS"
    site: str = "A"

    @property
    def file_stem(self) -> str:
        return self.case_id.lower() if self.lowercase else self.case_id

    @property
    def n_post(self) -> int:
        return len(self.phases) - 1

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.phases[0].shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing (mm) of the stored axes."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    def phase_float(self, index: int) -> np.ndarray:
        """Phase ``index`` as float32 intensities (stored ints × ``scl_slope``)."""
        return self.phases[index].astype(np.float32) * np.float32(self.scl_slope)


def _automatic_mask(rng: np.random.Generator, expert: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """A plausible automatic segmentation: dilated or eroded, then shifted by 1–2 voxels."""
    op = str(rng.choice(["dilate", "erode", "none"], p=[0.4, 0.3, 0.3]))
    axis = int(rng.integers(3))
    shift = int(rng.choice([-2, -1, 1, 2]))
    if not expert.any():
        return np.zeros_like(expert), {"operation": "none", "shift_axis": axis, "shift_voxels": 0}
    mask = expert.astype(bool)
    if op == "dilate":
        mask = ndi.binary_dilation(mask)
    elif op == "erode":
        eroded = ndi.binary_erosion(mask)
        mask = eroded if eroded.any() else mask
    shifted = np.zeros_like(mask)
    src = [slice(None)] * 3
    dst = [slice(None)] * 3
    if shift > 0:
        src[axis], dst[axis] = slice(0, -shift), slice(shift, None)
    else:
        src[axis], dst[axis] = slice(-shift, None), slice(0, shift)
    shifted[tuple(dst)] = mask[tuple(src)]
    if not shifted.any():
        shifted = mask
    return shifted.astype(np.uint8), {"operation": op, "shift_axis": axis, "shift_voxels": shift}


def _render_tumors(specs: list[TumorSpec], anatomy: Anatomy) -> tuple[list[RenderedTumor], list[TumorSpec]]:
    out, kept = [], []
    for spec in specs:
        r = render_tumor(spec, anatomy.shape, anatomy.spacing_mm)
        if r is not None:
            out.append(r)
            kept.append(spec)
    return out, kept


def _signal_maps(
    rng: np.random.Generator,
    anatomy: Anatomy,
    kinds: np.ndarray,
    kinetics: Kinetics,
    rendered: list[RenderedTumor],
    config: PhantomConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Signal maps on the world grid.

    Returns:
        base: pre-contrast signal × bias field; e1: per-voxel enhancement at the first
        post-contrast phase; curve_kind: the kind whose curve shape each voxel follows (voxels
        partly fibroglandular follow the FGT curve); the drawn bias strength.
    """
    ws = anatomy.spacing_mm
    tex = anatomy.texture
    s0 = kinetics.s0[kinds] * (1.0 + kinetics.texture[kinds] * tex)
    het = smooth_field(rng, anatomy.shape, spacing_mm=ws, correlation_mm=6.0 * config.anatomy_scale + 2.0)
    e1 = kinetics.e1[kinds] * np.maximum(1.0 + kinetics.heterogeneity[kinds] * het, 0.1)
    curve_kind = kinds.copy()
    # Partial volume of fibroglandular tissue and fat (soft FGT border).
    mixed = (anatomy.fgt_soft > 0) & ((kinds == Tissue.FAT) | (kinds == Tissue.FGT))
    f = anatomy.fgt_soft[mixed]
    t = tex[mixed]
    s_fgt = kinetics.s0[Tissue.FGT] * (1.0 + kinetics.texture[Tissue.FGT] * t)
    s_fat = kinetics.s0[Tissue.FAT] * (1.0 + kinetics.texture[Tissue.FAT] * t)
    mix = f * s_fgt + (1.0 - f) * s_fat
    e_fgt = kinetics.e1[Tissue.FGT] * np.maximum(1.0 + kinetics.heterogeneity[Tissue.FGT] * het[mixed], 0.1)
    e_fat = kinetics.e1[Tissue.FAT]
    s0[mixed] = mix
    e1[mixed] = (f * s_fgt * e_fgt + (1.0 - f) * s_fat * e_fat) / np.maximum(mix, 1e-6)
    curve_kind[mixed] = Tissue.FGT
    del het, mixed, f, t
    for r in rendered:
        sub = e1[r.box]
        enhancing = r.inside & ~r.necrotic
        sub[enhancing] = r.enhancement[enhancing]
    strength = float(rng.uniform(*config.bias_strength))
    base = s0 * bias_field(rng, anatomy.shape, spacing_mm=ws, strength=strength)
    return base.astype(np.float32, copy=False), e1.astype(np.float32, copy=False), curve_kind, strength


def make_phantom_case(case_index: int, *, seed: int, config: PhantomConfig) -> PhantomCase:
    """Generate one phantom case in memory.

    Args:
        case_index: 0-based position (``PHANTOM_001`` is index 0); content depends only on
            ``(seed, case_index, config)``.
        seed: run seed (>= 0).
        config: a :class:`PhantomConfig` (e.g. ``PRESETS["small"]``).

    Returns:
        the :class:`PhantomCase` (int16 phases and uint8 labels in stored voxel order).
    """
    if case_index < 0:
        raise ValueError(f"case_index must be >= 0, got {case_index}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    case_id = case_id_for(case_index)

    prefix = "phantom" if config.site == "A" else f"phantom/site-{config.site}"

    def stream(name: str) -> np.random.Generator:
        return case_generator(seed, case_index, f"{prefix}/{name}")

    site_rng = stream("site")
    profile = SITE_PROFILES[config.site_profiles[int(site_rng.integers(len(config.site_profiles)))]]
    fat_suppressed = bool(site_rng.random() < profile.fat_suppressed_probability)
    field_strength = float(site_rng.choice(profile.field_strengths))
    slope = 2.0 if site_rng.random() < profile.slope_probability else 1.0
    n_post = int(site_rng.integers(config.n_post_range[0], config.n_post_range[1] + 1))
    orientation = orientation_for(case_index, config.site)
    geometry: Geometry = sample_geometry(site_rng, config, profile, orientation)
    times = sample_acquisition_times(site_rng, n_post)

    clinical = sample_clinical(stream("clinical"))
    anatomy = build_anatomy(stream("anatomy"), config, density=clinical["breast_density"])
    healthy = is_healthy(case_index, seed, config.healthy_fraction)

    tumor_rng = stream("tumors")
    specs = [] if healthy else sample_tumors(tumor_rng, anatomy, config)
    rendered, specs = _render_tumors(specs, anatomy)
    kinds = anatomy.kinds.copy()
    tumor_world = np.zeros(anatomy.shape, dtype=bool)
    for r in rendered:
        sub = kinds[r.box]
        sub[r.inside & ~r.necrotic] = Tissue.TUMOR
        sub[r.necrotic] = Tissue.NECROSIS
        tumor_world[r.box] |= r.inside

    kin_rng = stream("kinetics")
    kinetics = sample_kinetics(
        kin_rng,
        times,
        fat_suppressed=fat_suppressed,
        tumor_curve_type=specs[0].curve if specs else "plateau",
        tumor_wash_in_s=SITE_STYLES[config.site].tumor_wash_in_s,
    )
    base, e1, curve_kind, bias_strength = _signal_maps(kin_rng, anatomy, kinds, kinetics, rendered, config)

    # Acquisition: blur, sample, noise, int16.
    acq_rng = stream("acquisition")
    sigma = psf_sigma_mm(geometry)
    shifts = [np.zeros(3)] + [np.clip(acq_rng.normal(0.0, 0.15, 3), -0.4, 0.4) for _ in range(n_post)]
    noise_rel = float(acq_rng.uniform(*config.noise_range))
    target = float(acq_rng.uniform(800.0, 1200.0) if not fat_suppressed else acq_rng.uniform(600.0, 1000.0))
    noise_rng = stream("noise")
    phases: list[np.ndarray] = []
    ref = gain = sigma_noise = 0.0
    for p in range(len(times)):
        curve = kinetics.curves[:, p].astype(np.float32)[curve_kind]
        world_img = base * (1.0 + e1 * curve)
        del curve
        acq = resample(world_img, geometry, order=1, sigma_mm=sigma, shift_mm=shifts[p])
        del world_img
        if p == 0:
            ref = float(np.percentile(acq[::2, ::2, ::2], 99.5))
            gain = target / max(ref, 1e-6)
            sigma_noise = noise_rel * ref
        noisy = rician(noise_rng, acq, sigma_noise)
        stored = np.clip(np.rint(noisy * (gain / slope)), 0, np.iinfo(np.int16).max).astype(np.int16)
        phases.append(to_stored(stored, geometry))

    # Labels on the acquisition grid.
    class_acq = resample(KIND_TO_CLASS[kinds], geometry, order=0)
    expert_acq = np.zeros(geometry.shape_world, dtype=bool)
    if rendered:
        frac = resample(tumor_world.astype(np.float32), geometry, order=1, sigma_mm=sigma)
        expert_acq = frac >= 0.5
        if not expert_acq.any():
            expert_acq = frac >= 0.5 * float(frac.max())
        bg_acq = resample(KIND_TO_CLASS[anatomy.kinds], geometry, order=0)
        in_tumor_class = (class_acq == 8) | (class_acq == 9)
        class_acq = np.where(in_tumor_class & ~expert_acq, bg_acq, class_acq)
        class_acq[expert_acq & ~in_tumor_class] = 8
    breast_acq = resample(anatomy.breast.view(np.uint8), geometry, order=0)
    tissue_acq = np.zeros_like(class_acq)
    tissue_acq[(class_acq == 7) & (breast_acq > 0)] = 1
    tissue_acq[(class_acq == 2) & (breast_acq > 0)] = 2

    x_box = anatomy.box_coordinates()[0]
    if specs:
        side_world = anatomy.breast & (
            (x_box < anatomy.midline_mm) if specs[0].side == "left" else (x_box >= anatomy.midline_mm)
        )
        side_stored = to_stored(resample(side_world.view(np.uint8), geometry, order=0), geometry)
    else:
        side_stored = to_stored(breast_acq, geometry)

    expert = to_stored(expert_acq.astype(np.uint8), geometry)
    automatic, auto_record = _automatic_mask(stream("automatic"), expert)
    affine = geometry.affine

    tumor_records = []
    for spec, r in zip(specs, rendered, strict=True):
        rec = spec.to_record()
        rec["centre_ras_mm"] = [
            round(float(v), 3) for v in (np.asarray(geometry.world_origin_mm) + np.asarray(spec.centre_mm))
        ]
        rec["volume_mm3"] = round(r.volume_mm3, 2)
        rec["equivalent_diameter_mm"] = round(r.equivalent_diameter_mm, 3)
        rec["necrotic_fraction"] = round(float(r.necrotic.sum()) / max(1, int(r.inside.sum())), 4)
        tumor_records.append(rec)

    spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    shape = phases[0].shape
    axcodes = "".join(nib.aff2axcodes(affine))
    primary = tumor_records[0] if tumor_records else None
    info: dict[str, Any] = {
        "patient_id": case_id,
        "clinical_data": clinical,
        "primary_lesion": {
            "breast_coordinates": breast_coordinates(side_stored),
            "tumor_count": len(tumor_records),
            "laterality": primary["side"] if primary else None,
            "largest_diameter_mm": (
                round(max(t["equivalent_diameter_mm"] for t in tumor_records), 2) if tumor_records else None
            ),
            "shape": primary["shape"] if primary else None,
            "enhancement_pattern": primary["enhancement"] if primary else None,
            "kinetic_curve": primary["curve"] if primary else None,
            "tumor_subtype": None,
            "pcr": None,
        },
        "imaging_data": {
            "bilateral": True,
            "dataset": DATASET_NAME,
            "site": profile.site,
            "site_profile": profile.name,
            "scanner_manufacturer": "SYNTHETIC",
            "scanner_model": profile.scanner_model,
            "field_strength": field_strength,
            "echo_time": profile.echo_time_ms,
            "repetition_time": profile.repetition_time_ms,
            "flip_angle": profile.flip_angle_deg,
            "fat_suppressed": fat_suppressed,
            "view": VIEWS[orientation],
            "orientation": axcodes,
            "num_phases": len(phases),
            "acquisition_times": times,
            "image_rows": int(shape[1]),
            "image_columns": int(shape[0]),
            "num_slices": int(shape[2]),
            "pixel_spacing": [round(spacing[0], 4), round(spacing[1], 4)],
            "slice_thickness": round(spacing[2], 4),
            "scl_slope": slope,
        },
        "phantom": {
            "synthetic": True,
            "note": "procedural phantom, not patient data",
            "generator": "synbt_factory.phantom",
            "generator_version": __version__,
            "seed": int(seed),
            "case_index": int(case_index),
            "preset": config.name,
            "healthy": bool(healthy),
            "background_parenchymal_enhancement": kinetics.bpe,
            "fgt_fraction_of_breast": round(anatomy.fgt_fraction, 4),
            "noise_sigma_relative": round(noise_rel, 5),
            "bias_strength": round(bias_strength, 4),
            "motion_mm": [[round(float(v), 3) for v in s] for s in shifts],
            "automatic_mask": auto_record,
            "class_codes": {str(k): v for k, v in CLASS_NAMES.items()},
            "tissue_label_codes": {"0": "background", "1": "vessels", "2": "dense fibroglandular tissue"},
            "breast_coordinates_convention": BREAST_COORDINATES_CONVENTION,
            "anatomy": {k: round(v, 3) for k, v in anatomy.params.items()},
            "world_grid": {
                "spacing_mm": anatomy.spacing_mm,
                "shape": list(anatomy.shape),
                "origin_ras_mm": [round(v, 3) for v in geometry.world_origin_mm],
            },
            "tumors": tumor_records,
        },
    }
    if config.site != "A":
        # Site A's JSON keeps the keys it always had (its files stay byte-identical); no "site" key means site A.
        info["phantom"]["site"] = config.site
        info["phantom"]["tumor_shape_kind"] = shape_kind(specs[0]) if specs else None
    log.debug(
        "made %s (%s, %s, %d post phases, %d tumors)", case_id, profile.name, orientation, n_post, len(tumor_records)
    )
    return PhantomCase(
        case_id=case_id,
        case_index=case_index,
        seed=seed,
        preset=config.name,
        phases=phases,
        affine=affine,
        scl_slope=slope,
        expert_mask=expert,
        automatic_mask=automatic,
        tissue_labels=to_stored(tissue_acq, geometry),
        breast_mask=to_stored(breast_acq, geometry),
        class_map=to_stored(class_acq, geometry),
        info=info,
        acquisition_times_s=list(times),
        tumors=tuple(tumor_records),
        healthy=healthy,
        lowercase=is_lowercase(case_index, config.lowercase_every),
        site_profile=profile.name,
        fat_suppressed=fat_suppressed,
        orientation=orientation,
        site=config.site,
    )
