"""Phantom configurations: site-like acquisition profiles and size presets.

A :class:`SiteProfile` describes how one (imaginary) site acquires its DCE series: voxel
spacing ranges, fat suppression, field strength. A :class:`PhantomConfig` fixes the field of
view, which profiles are drawn from, tumor sizes and how many post-contrast phases a case gets.
``PRESETS`` holds the three sizes the project uses: ``tiny`` (tests), ``small`` (demo) and
``default`` (the paper-like 192 × 192 × 128 mm field of view), all of site ``A``.
``SITE_B_PRESETS`` holds the same sizes for site ``B``, the external test family (its own site
profiles, more noise, a stronger bias field, thicker slices and larger tumors; see
:mod:`synbt_factory.phantom.sites` for its anatomy, kinetics, tumor kinds and orientations).
:func:`phantom_config` picks one by size and site.
"""

from __future__ import annotations

from dataclasses import dataclass

from synbt_factory.phantom.sites import SITE_STYLES, SITES

__all__ = ["SiteProfile", "PhantomConfig", "SITE_PROFILES", "PRESETS", "SITE_B_PRESETS", "phantom_config"]


def _check_range(name: str, value: tuple[float, float], *, low: float = 0.0, strict: bool = True) -> None:
    if len(value) != 2:
        raise ValueError(f"{name} must be a (min, max) pair, got {value}")
    lo, hi = value
    if (lo <= low if strict else lo < low) or hi < lo:
        raise ValueError(f"{name} must satisfy {low} {'<' if strict else '<='} min <= max, got {value}")


@dataclass(frozen=True, kw_only=True)
class SiteProfile:
    """How one imaginary site acquires its DCE-MRI series.

    Args:
        name: profile name, written to the patient info JSON (``imaging_data.site_profile``).
        site: site label written as ``imaging_data.site`` (never a real hospital).
        inplane_mm: (min, max) in-plane voxel spacing in mm, drawn once per case.
        slice_mm: (min, max) slice spacing in mm (the thick axis).
        fat_suppressed_probability: chance that a case of this site is fat-suppressed.
        field_strengths: field strengths in tesla to draw from.
        scanner_model: free text written to the JSON.
        repetition_time_ms / echo_time_ms / flip_angle_deg: nominal sequence parameters (JSON only).
        slope_probability: chance that the NIfTI files of a case carry ``scl_slope`` != 1.
    """

    name: str
    site: str
    inplane_mm: tuple[float, float]
    slice_mm: tuple[float, float]
    fat_suppressed_probability: float
    field_strengths: tuple[float, ...] = (1.5, 3.0)
    scanner_model: str = "procedural-gre-3d"
    repetition_time_ms: float = 4.5
    echo_time_ms: float = 2.0
    flip_angle_deg: float = 12.0
    slope_probability: float = 0.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must be non-empty")
        _check_range("inplane_mm", self.inplane_mm)
        _check_range("slice_mm", self.slice_mm)
        if self.slice_mm[0] <= self.inplane_mm[1]:
            raise ValueError(
                f"slice_mm {self.slice_mm} must exceed inplane_mm {self.inplane_mm}: profiles are anisotropic"
            )
        if not 0.0 <= self.fat_suppressed_probability <= 1.0:
            raise ValueError(f"fat_suppressed_probability must be in [0, 1], got {self.fat_suppressed_probability}")
        if not 0.0 <= self.slope_probability <= 1.0:
            raise ValueError(f"slope_probability must be in [0, 1], got {self.slope_probability}")
        if not self.field_strengths or any(b <= 0 for b in self.field_strengths):
            raise ValueError(f"field_strengths must be positive, got {self.field_strengths}")


SITE_PROFILES: dict[str, SiteProfile] = {
    p.name: p
    for p in (
        # Thin slices, no fat suppression (fat bright on every phase, dark on subtraction).
        SiteProfile(
            name="thin-slice",
            site="PHANTOM_SITE_A",
            inplane_mm=(0.7, 0.9),
            slice_mm=(1.0, 1.2),
            fat_suppressed_probability=0.25,
            field_strengths=(1.5, 3.0),
            repetition_time_ms=4.6,
            echo_time_ms=2.3,
            flip_angle_deg=10.0,
        ),
        # Thick slices, mostly fat-suppressed, some files scaled with scl_slope.
        SiteProfile(
            name="thick",
            site="PHANTOM_SITE_B",
            inplane_mm=(0.6, 0.8),
            slice_mm=(2.0, 2.0),
            fat_suppressed_probability=0.8,
            field_strengths=(1.5,),
            repetition_time_ms=8.0,
            echo_time_ms=4.2,
            flip_angle_deg=20.0,
            slope_probability=0.5,
        ),
        # Coarse versions for the tiny test preset (few voxels, still anisotropic).
        SiteProfile(
            name="tiny-thin",
            site="PHANTOM_SITE_A",
            inplane_mm=(1.0, 1.2),
            slice_mm=(1.5, 1.8),
            fat_suppressed_probability=0.25,
            field_strengths=(1.5, 3.0),
        ),
        SiteProfile(
            name="tiny-thick",
            site="PHANTOM_SITE_B",
            inplane_mm=(1.0, 1.25),
            slice_mm=(2.0, 2.5),
            fat_suppressed_probability=0.8,
            field_strengths=(1.5,),
            slope_probability=0.5,
        ),
        # Site B (external test family): thick slices, 3 T, almost never fat-suppressed.
        SiteProfile(
            name="b-thick",
            site="PHANTOM_EXTERNAL_B",
            inplane_mm=(0.75, 0.95),
            slice_mm=(2.5, 3.0),
            fat_suppressed_probability=0.15,
            field_strengths=(3.0,),
            scanner_model="procedural-gre-3d-b",
            repetition_time_ms=5.5,
            echo_time_ms=2.6,
            flip_angle_deg=15.0,
            slope_probability=0.3,
        ),
        SiteProfile(
            name="b-coarse",
            site="PHANTOM_EXTERNAL_B",
            inplane_mm=(0.9, 1.1),
            slice_mm=(3.0, 3.5),
            fat_suppressed_probability=0.0,
            field_strengths=(3.0,),
            scanner_model="procedural-gre-3d-b",
            repetition_time_ms=6.2,
            echo_time_ms=2.9,
            flip_angle_deg=18.0,
        ),
        SiteProfile(
            name="tiny-b-thick",
            site="PHANTOM_EXTERNAL_B",
            inplane_mm=(1.1, 1.3),
            slice_mm=(2.8, 3.2),
            fat_suppressed_probability=0.15,
            field_strengths=(3.0,),
            scanner_model="procedural-gre-3d-b",
            slope_probability=0.3,
        ),
        SiteProfile(
            name="tiny-b-coarse",
            site="PHANTOM_EXTERNAL_B",
            inplane_mm=(1.2, 1.4),
            slice_mm=(3.2, 3.6),
            fat_suppressed_probability=0.0,
            field_strengths=(3.0,),
            scanner_model="procedural-gre-3d-b",
        ),
    )
}


@dataclass(frozen=True, kw_only=True)
class PhantomConfig:
    """Everything that shapes a phantom case apart from its seed and index.

    Args:
        name: preset name (``tiny``, ``small``, ``default`` or your own).
        fov_mm: physical field of view (L–R, P–A, I–S) in mm; the anatomy is built on a RAS
            grid of this size and the acquisition covers the same box.
        world_spacing_mm: isotropic spacing of the RAS grid the anatomy is built on.
        site_profiles: names in :data:`SITE_PROFILES`, drawn uniformly per case.
        tumor_diameter_mm: (min, max) equivalent diameter (of the same-volume sphere) of the primary
            tumor in mm; shrunk when a drawn tumor does not fit in the breast.
        satellite_probability: chance that a tumor case gets a second, smaller tumor.
        n_post_range: (min, max) number of post-contrast phases (inclusive), at least 2.
        healthy_fraction: fraction of cases without a tumor (chosen deterministically by index).
        test_fraction: fraction of cases in ``test_split`` (deterministic by index).
        noise_range: (min, max) Rician noise sigma relative to the pre-contrast 99.5th percentile.
        bias_strength: (min, max) amplitude of the log bias field (0.2 ≈ ±20 %).
        lowercase_every: every ``k``-th case (1-based id divisible by ``k``) uses lower-case names; 0 disables.
        compress_level: gzip level of the written ``.nii.gz`` files (1 fast … 9 small).
        site: ``"A"`` (the training phantom) or ``"B"`` (the external test family); picks the
            :class:`~synbt_factory.phantom.sites.SiteStyle` of anatomy, kinetics, tumors and orientation.
    """

    name: str
    fov_mm: tuple[float, float, float]
    world_spacing_mm: float = 1.0
    site_profiles: tuple[str, ...] = ("thin-slice", "thick")
    tumor_diameter_mm: tuple[float, float] = (5.0, 40.0)
    satellite_probability: float = 0.25
    n_post_range: tuple[int, int] = (2, 5)
    healthy_fraction: float = 0.1
    test_fraction: float = 0.2
    noise_range: tuple[float, float] = (0.012, 0.03)
    bias_strength: tuple[float, float] = (0.1, 0.25)
    lowercase_every: int = 4
    compress_level: int = 1
    site: str = "A"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must be non-empty")
        if self.site not in SITE_STYLES:
            raise ValueError(f"site must be one of {list(SITES)}, got {self.site!r}")
        if len(self.fov_mm) != 3 or any(f < 32 for f in self.fov_mm):
            raise ValueError(f"fov_mm must be three sizes >= 32 mm, got {self.fov_mm}")
        if not 0.25 <= self.world_spacing_mm <= 2.0:
            raise ValueError(f"world_spacing_mm must be in [0.25, 2], got {self.world_spacing_mm}")
        if not self.site_profiles:
            raise ValueError("site_profiles must name at least one profile")
        unknown = [p for p in self.site_profiles if p not in SITE_PROFILES]
        if unknown:
            raise ValueError(f"site_profiles has unknown names {unknown}; known: {sorted(SITE_PROFILES)}")
        _check_range("tumor_diameter_mm", self.tumor_diameter_mm, low=1.0)
        if self.tumor_diameter_mm[1] > 0.45 * min(self.fov_mm):
            raise ValueError(f"tumor_diameter_mm {self.tumor_diameter_mm} is too large for fov_mm {self.fov_mm}")
        if not 0.0 <= self.satellite_probability <= 1.0:
            raise ValueError(f"satellite_probability must be in [0, 1], got {self.satellite_probability}")
        lo, hi = self.n_post_range
        if not (2 <= lo <= hi <= 9):
            raise ValueError(f"n_post_range must satisfy 2 <= min <= max <= 9, got {self.n_post_range}")
        if not 0.0 <= self.healthy_fraction <= 1.0:
            raise ValueError(f"healthy_fraction must be in [0, 1], got {self.healthy_fraction}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        _check_range("noise_range", self.noise_range)
        _check_range("bias_strength", self.bias_strength, strict=False)
        if self.lowercase_every < 0:
            raise ValueError(f"lowercase_every must be >= 0, got {self.lowercase_every}")
        if not 1 <= self.compress_level <= 9:
            raise ValueError(f"compress_level must be in [1, 9], got {self.compress_level}")

    @property
    def world_shape(self) -> tuple[int, int, int]:
        """Voxels of the RAS anatomy grid (X, Y, Z)."""
        return tuple(int(round(f / self.world_spacing_mm)) for f in self.fov_mm)  # type: ignore[return-value]

    @property
    def anatomy_scale(self) -> float:
        """Scale of fixed-size anatomy (muscle, ribs, vessels) relative to the default field of view."""
        return float(min(1.0, max(0.45, min(self.fov_mm[0], self.fov_mm[1]) / 192.0)))


PRESETS: dict[str, PhantomConfig] = {
    "tiny": PhantomConfig(
        name="tiny",
        fov_mm=(64.0, 64.0, 48.0),
        site_profiles=("tiny-thin", "tiny-thick"),
        tumor_diameter_mm=(5.0, 12.0),
        n_post_range=(2, 3),
    ),
    "small": PhantomConfig(
        name="small",
        fov_mm=(128.0, 128.0, 80.0),
        tumor_diameter_mm=(5.0, 28.0),
    ),
    "default": PhantomConfig(
        name="default",
        fov_mm=(192.0, 192.0, 128.0),
        tumor_diameter_mm=(5.0, 40.0),
    ),
}


def _site_b(
    name: str,
    fov_mm: tuple[float, float, float],
    profiles: tuple[str, ...],
    tumor_mm: tuple[float, float],
    n_post_range: tuple[int, int] = (2, 5),
) -> PhantomConfig:
    """A site-B preset: its own profiles and tumor sizes, more noise and a stronger bias field than site A."""
    return PhantomConfig(
        name=name,
        fov_mm=fov_mm,
        site="B",
        site_profiles=profiles,
        tumor_diameter_mm=tumor_mm,
        noise_range=(0.035, 0.06),
        bias_strength=(0.3, 0.45),
        satellite_probability=0.2,
        n_post_range=n_post_range,
    )


SITE_B_PRESETS: dict[str, PhantomConfig] = {
    "tiny": _site_b("tiny", (64.0, 64.0, 48.0), ("tiny-b-thick", "tiny-b-coarse"), (6.0, 19.0), n_post_range=(2, 3)),
    "small": _site_b("small", (128.0, 128.0, 80.0), ("b-thick", "b-coarse"), (8.0, 32.0)),
    "default": _site_b("default", (192.0, 192.0, 128.0), ("b-thick", "b-coarse"), (8.0, 40.0)),
}


def phantom_config(size: str, site: str = "A") -> PhantomConfig:
    """The preset of one size (``tiny``, ``small``, ``default``) for one site (``"A"`` or ``"B"``).

    Raises:
        ValueError: naming the argument when ``size`` or ``site`` is unknown.
    """
    if site not in SITES:
        raise ValueError(f"site must be one of {list(SITES)}, got {site!r}")
    presets = PRESETS if site == "A" else SITE_B_PRESETS
    if size not in presets:
        raise ValueError(f"size must be one of {sorted(presets)}, got {size!r}")
    return presets[size]
