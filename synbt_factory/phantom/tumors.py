"""Irregular tumors: drawn as replayable records, then rendered into the anatomy grid.

:func:`sample_tumors` draws every parameter of a case's tumors (a :class:`TumorSpec` each) and
:func:`render_tumor` turns one record into voxels deterministically, so the records written to the
patient info JSON are enough to rebuild the masks. Shapes:

- ``oval``: a rotated ellipsoid with a mild radial perturbation;
- ``lobulated``: a union of 3–6 overlapping ellipsoidal lobes;
- ``irregular``: an ellipsoid with a strong multi-frequency radial perturbation;
- ``spiculated``: an irregular core with 6–14 tapering spikes;
- ``non_mass`` (site B only): non-mass-like enhancement, 6–10 small clumped foci (the ``lobes``,
  without a central mass) spread over a segment that narrows toward the nipple.

Enhancement patterns: ``homogeneous``, ``heterogeneous``, ``rim`` (bright rim, weaker centre)
and ``necrotic`` (non-enhancing core, labelled separately). Kinetic curves: ``persistent``,
``plateau``, ``washout``.

Site A draws shape and pattern independently; site B draws a tumor kind (``rim``, ``lobulated``,
``non_mass``: :data:`~synbt_factory.phantom.sites.TUMOR_KINDS`) that fixes both, with its own
size distribution, curve mix and enhancement levels (:class:`~synbt_factory.phantom.sites.SiteStyle`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np
from scipy import ndimage as ndi

from synbt_factory.phantom.anatomy import Anatomy, Tissue
from synbt_factory.phantom.presets import PhantomConfig
from synbt_factory.phantom.sites import SITE_STYLES, SiteStyle

__all__ = ["TumorSpec", "RenderedTumor", "sample_tumors", "render_tumor", "shape_kind"]

SHAPES = ("oval", "lobulated", "irregular", "spiculated")
SHAPE_P = (0.2, 0.3, 0.25, 0.25)
PATTERNS = ("homogeneous", "heterogeneous", "rim", "necrotic")
PATTERN_P = (0.25, 0.35, 0.22, 0.18)
CURVES = ("persistent", "plateau", "washout")
CURVE_P = (0.2, 0.35, 0.45)
NON_MASS = "non_mass"
#: Site B's rim-enhancing masses: their shape, and the share of those of at least ``RIM_NECROTIC_MM`` with a
#: non-enhancing (necrotic) core, which shows the ring at any voxel size.
RIM_SHAPES = ("oval", "irregular")
RIM_NECROTIC_P = 0.75
RIM_NECROTIC_MM = 9.0
#: A non-mass lesion's drawn size is about the length of its segment; its foci fill a fraction of it, so the
#: equivalent (same-volume sphere) diameter it is scaled to is this fraction of the drawn size.
NON_MASS_EQUIVALENT_FRACTION = 0.5


@dataclass(frozen=True, kw_only=True)
class TumorSpec:
    """Every parameter of one tumor (lengths in mm, positions in the anatomy grid's box frame).

    ``centre_mm`` is the centre in box coordinates (mm from the grid's corner, RAS axis order);
    ``rotation`` maps the tumor frame to the grid frame (columns are the tumor axes);
    directions are unit vectors in the tumor frame.
    """

    role: str  # "primary" or "satellite"
    side: str
    shape: str
    diameter_mm: float  # scale of the shape (2 × the base radius)
    target_diameter_mm: float  # the equivalent (same-volume sphere) diameter the scale was chosen for
    centre_mm: tuple[float, float, float]
    rotation: tuple[tuple[float, float, float], ...]
    axes: tuple[float, float, float]
    harmonics: tuple[tuple[float, float, float, float, float, float], ...]  # nx, ny, nz, freq, amp, phase
    lobes: tuple[tuple[float, float, float, float], ...]  # ox, oy, oz (× radius), lobe radius (× radius)
    spikes: tuple[tuple[float, float, float, float, float], ...]  # nx, ny, nz, length (× radius), width (× radius)
    enhancement: str
    curve: str
    peak_enhancement: float  # relative enhancement (post1/pre − 1) of the enhancing part
    texture_seed: int

    @property
    def radius_mm(self) -> float:
        return 0.5 * self.diameter_mm

    def extent_mm(self, *, strict: bool = True) -> float:
        """Distance from the centre to the farthest tumor voxel.

        ``strict`` gives an upper bound (for the rendering box); otherwise a typical reach
        (the radial perturbation at two standard deviations), used to check that a tumor fits.
        """
        amps = np.array([h[4] for h in self.harmonics], dtype=np.float64)
        if strict:
            amp = min(1.8, 1.0 + float(np.abs(amps).sum()))
        else:
            amp = 1.0 + 2.0 * float(np.sqrt((amps**2).sum() / 2.0))
        reach = amp * max(self.axes)
        for ox, oy, oz, r in self.lobes:
            reach = max(reach, float(np.sqrt(ox * ox + oy * oy + oz * oz)) + r * amp)
        for s in self.spikes:
            reach = max(reach, 1.0 + s[3])
        return self.radius_mm * reach

    @classmethod
    def from_record(cls, record: dict) -> TumorSpec:
        """Rebuild a spec from :meth:`to_record` output (extra keys such as measured volume are ignored)."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in record.items() if k in names}
        for key in ("centre_mm", "axes"):
            kw[key] = tuple(float(v) for v in kw[key])
        for key in ("rotation", "harmonics", "lobes", "spikes"):
            kw[key] = tuple(tuple(float(v) for v in item) for item in kw[key])
        return cls(**kw)

    def to_record(self) -> dict:
        """JSON-ready dict of every parameter, at full precision (so the tumor can be re-rendered exactly)."""
        rec = asdict(self)
        for key in ("centre_mm", "axes"):
            rec[key] = [float(v) for v in rec[key]]
        for key in ("rotation", "harmonics", "lobes", "spikes"):
            rec[key] = [[float(v) for v in item] for item in rec[key]]
        return rec


@dataclass(frozen=True, kw_only=True)
class RenderedTumor:
    """A rendered tumor: a box of the anatomy grid and its voxels.

    Attributes:
        box: slices of the anatomy grid the arrays cover.
        inside: bool, tumor voxels (necrotic core included).
        necrotic: bool, the non-enhancing core (subset of ``inside``).
        enhancement: float32, relative enhancement at the first post-contrast phase per voxel.
        volume_mm3: tumor volume; ``equivalent_diameter_mm``: diameter of the sphere of that volume.
    """

    box: tuple[slice, slice, slice]
    inside: np.ndarray
    necrotic: np.ndarray
    enhancement: np.ndarray
    volume_mm3: float
    equivalent_diameter_mm: float


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _draw_non_mass(rng: np.random.Generator) -> dict:
    """Clumped foci in a segment along the tumor's first axis (toward the nipple), widening behind."""
    axes = (1.0, float(rng.uniform(0.6, 0.85)), float(rng.uniform(0.6, 0.85)))
    dirs = _unit(rng, 3)
    harmonics = [
        (
            *dirs[i],
            float(rng.integers(1, 5)),
            float(2.0 * 0.08 * rng.uniform(0.4, 1.0) / np.sqrt(3)),
            float(rng.uniform(0, 2 * np.pi)),
        )
        for i in range(3)
    ]
    lobes = []
    for _ in range(int(rng.integers(6, 11))):
        t = float(rng.uniform(-1.0, 1.0))  # +1: the apex, toward the nipple
        width = 0.12 + 0.2 * (1.0 - t) / 2.0
        perp = np.clip(rng.normal(0.0, width, 2), -0.6, 0.6)
        lobes.append((t, float(perp[0]), float(perp[1]), float(rng.uniform(0.25, 0.42))))
    return {
        "axes": axes,
        "harmonics": tuple(tuple(float(v) for v in h) for h in harmonics),
        "lobes": tuple(tuple(float(v) for v in lb) for lb in lobes),
        "spikes": (),
    }


def _draw_shape(rng: np.random.Generator, shape: str) -> dict:
    if shape == NON_MASS:
        return _draw_non_mass(rng)
    axes = np.sort(rng.uniform(0.7, 1.0, 3))[::-1]
    axes = axes / axes[0]
    n_h = {"oval": 3, "lobulated": 3, "irregular": 7, "spiculated": 5}[shape]
    amp = {"oval": 0.04, "lobulated": 0.06, "irregular": 0.22, "spiculated": 0.10}[shape]
    dirs = _unit(rng, n_h)
    harmonics = [
        (
            *dirs[i],
            float(rng.integers(1, 5 if shape != "irregular" else 7)),
            float(2.0 * amp * rng.uniform(0.4, 1.0) / np.sqrt(n_h)),
            float(rng.uniform(0, 2 * np.pi)),
        )
        for i in range(n_h)
    ]
    lobes: list[tuple[float, float, float, float]] = []
    if shape == "lobulated":
        n_l = int(rng.integers(3, 7))
        for d in _unit(rng, n_l):
            dist = rng.uniform(0.35, 0.6)
            lobes.append((*(d * dist), float(rng.uniform(0.45, 0.7))))
    spikes: list[tuple[float, float, float, float, float]] = []
    core_axes = axes
    if shape == "spiculated":
        core_axes = axes * rng.uniform(0.72, 0.85)
        n_s = int(rng.integers(6, 15))
        for d in _unit(rng, n_s):
            spikes.append((*d, float(rng.uniform(0.35, 1.0)), float(rng.uniform(0.18, 0.32))))
    return {
        "axes": tuple(float(a) for a in core_axes),
        "harmonics": tuple(tuple(float(v) for v in h) for h in harmonics),
        "lobes": tuple(tuple(float(v) for v in lb) for lb in lobes),
        "spikes": tuple(tuple(float(v) for v in s) for s in spikes),
    }


def _draw_diameter(rng: np.random.Generator, lo: float, hi: float, beta: tuple[float, float]) -> float:
    # Site A's Beta(1.6, 2.3) is right-skewed: median about 40 % into the range (5–40 mm → ~19 mm).
    return float(lo + (hi - lo) * rng.beta(*beta))


def _segment_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation whose first column points roughly anterior (along the ducts, toward the nipple)."""
    a = np.array([rng.normal(0.0, 0.3), 1.0, rng.normal(0.0, 0.3)])
    a /= np.linalg.norm(a)
    b = _random_rotation(rng)[:, 1]
    b = b - (b @ a) * a
    if np.linalg.norm(b) < 1e-6:
        b = np.array([1.0, 0.0, 0.0]) - a[0] * a
    b /= np.linalg.norm(b)
    return np.stack([a, b, np.cross(a, b)], axis=1)


def _draw_kind(rng: np.random.Generator, style: SiteStyle) -> tuple[str, str]:
    """Site B: the tumor kind and the shape it implies."""
    kind = str(rng.choice(style.tumor_kinds, p=style.tumor_kind_probabilities))
    if kind == "rim":
        return kind, str(rng.choice(RIM_SHAPES))
    return kind, ("lobulated" if kind == "lobulated" else NON_MASS)


def _draw_pattern(rng: np.random.Generator, kind: str | None, diameter: float) -> str:
    """Enhancement pattern: site A's independent draw (``kind`` None) or the one site B's kind implies."""
    if kind is None:
        pattern = str(rng.choice(PATTERNS, p=PATTERN_P))
        return "rim" if pattern == "necrotic" and diameter < 12.0 else pattern
    if kind == "rim":
        return "necrotic" if diameter >= RIM_NECROTIC_MM and rng.random() < RIM_NECROTIC_P else "rim"
    if kind == "lobulated":
        return str(rng.choice(("homogeneous", "heterogeneous"), p=(0.4, 0.6)))
    return "heterogeneous"


def shape_kind(spec: TumorSpec) -> str:
    """The tumor's kind as site B draws it: ``non_mass``, ``rim`` (rim or necrotic enhancement) or its shape."""
    if spec.shape == NON_MASS:
        return NON_MASS
    if spec.enhancement in ("rim", "necrotic"):
        return "rim"
    return spec.shape


def _centre_candidates(
    anatomy: Anatomy, side: str | None, extent_mm: float, *, fgt_only: bool, boundary: bool
) -> np.ndarray:
    """Flat indices of voxels where a tumor of ``extent_mm`` fits inside the breast."""
    kinds = anatomy.kinds
    ok = anatomy.breast & (anatomy.breast_depth_mm >= extent_mm + anatomy.params["skin_mm"] + 1.0)
    ok &= anatomy.chest_depth_mm >= 0.5 * extent_mm + 2.0
    if side is not None:
        x, _, _ = anatomy.box_coordinates()
        ok &= (x < anatomy.midline_mm) if side == "left" else (x >= anatomy.midline_mm)
    if fgt_only:
        fgt = kinds == Tissue.FGT
        if boundary:
            fgt &= ~ndi.binary_erosion(fgt)
        ok &= fgt
    return np.flatnonzero(ok)


def sample_tumors(rng: np.random.Generator, anatomy: Anatomy, config: PhantomConfig) -> list[TumorSpec]:
    """Draw the primary tumor (and, sometimes, a smaller satellite) of one case.

    The primary is centred on fibroglandular tissue (or on its border, touching it) of a random
    breast, far enough from the skin and the chest wall to fit; when no such voxel exists the
    diameter shrinks, then any breast voxel is allowed. Diameters are equivalent diameters (of the
    same-volume sphere) drawn from ``config.tumor_diameter_mm``, skewed toward the small end; the
    shape's scale ``diameter_mm`` is set so that its volume matches. The site
    (:class:`~synbt_factory.phantom.sites.SiteStyle` of ``config.site``) sets the size distribution,
    the curve mix, the enhancement levels and, at site B, the tumor kind; a non-mass lesion's drawn
    size is about the length of its segment (its equivalent diameter is
    :data:`NON_MASS_EQUIVALENT_FRACTION` of it) and the segment points toward the nipple.

    Returns:
        one or two :class:`TumorSpec` records (never a satellite beside a non-mass lesion).
    """
    style = SITE_STYLES[config.site]
    lo, hi = config.tumor_diameter_mm
    ws = anatomy.spacing_mm
    side = "left" if rng.random() < 0.5 else "right"
    if style.tumor_kinds:
        kind, shape = _draw_kind(rng, style)
    else:
        kind, shape = None, str(rng.choice(SHAPES, p=SHAPE_P))
    geometry = _draw_shape(rng, shape)
    diameter = _draw_diameter(rng, lo, hi, style.diameter_beta)
    pattern = _draw_pattern(rng, kind, diameter)
    if shape == NON_MASS:
        diameter *= NON_MASS_EQUIVALENT_FRACTION
    curve = str(rng.choice(CURVES, p=style.curve_probabilities))
    peak = float(rng.uniform(*style.peak_persistent) if curve == "persistent" else rng.uniform(*style.peak_other))
    touching = rng.random() < 0.35
    rotation = _segment_rotation(rng) if shape == NON_MASS else _random_rotation(rng)
    texture_seed = int(rng.integers(0, 2**31 - 1))
    jitter = rng.uniform(-0.5, 0.5, 3) * ws

    def spec_for(d: float, centre: np.ndarray, **kw) -> TumorSpec:
        base = dict(
            role="primary",
            side=side,
            shape=shape,
            diameter_mm=float(d * scale),
            target_diameter_mm=float(d),
            centre_mm=tuple(float(c) for c in centre),
            rotation=tuple(tuple(float(v) for v in row) for row in rotation),
            enhancement=pattern,
            curve=curve,
            peak_enhancement=peak,
            texture_seed=texture_seed,
            **geometry,
        )
        base.update(kw)
        return TumorSpec(**base)

    # diameter_mm per mm of equivalent diameter for this shape (spec_for reads ``scale``).
    scale = 1.0
    scale = _scale_per_equivalent_diameter(spec_for(1.0, np.zeros(3)))
    probe = spec_for(diameter, np.zeros(3))
    cand = np.empty(0, dtype=np.int64)
    for attempt in range(8):
        ext = probe.extent_mm(strict=False)
        for fgt_only, boundary, which in ((True, touching, side), (True, not touching, side), (True, False, None)):
            cand = _centre_candidates(anatomy, which, ext, fgt_only=fgt_only, boundary=boundary)
            if len(cand):
                break
        if len(cand):
            break
        if attempt < 6:
            diameter = max(0.6 * lo, diameter * 0.85)
            probe = spec_for(diameter, np.zeros(3))
        else:
            cand = _centre_candidates(anatomy, None, 0.5 * ext, fgt_only=False, boundary=False)
    if not len(cand):
        cand = np.array([int(np.argmax(anatomy.breast_depth_mm))])
    flat = int(cand[rng.integers(len(cand))])
    idx = np.array(np.unravel_index(flat, anatomy.shape), dtype=np.float64)
    centre = (idx + 0.5) * ws + jitter
    side = "left" if centre[0] < anatomy.midline_mm else "right"
    primary = spec_for(diameter, centre, side=side)
    tumors = [primary]

    if shape != NON_MASS and rng.random() < config.satellite_probability:
        sat_shape = str(rng.choice(("oval", "irregular", "lobulated")))
        sat_geom = _draw_shape(rng, sat_shape)
        sat_d = max(0.8 * lo, diameter * rng.uniform(0.3, 0.55))
        sat_rot = _random_rotation(rng)
        sat_seed = int(rng.integers(0, 2**31 - 1))
        sat_spec = TumorSpec(
            role="satellite",
            side=side,
            shape=sat_shape,
            diameter_mm=float(sat_d),
            target_diameter_mm=float(sat_d),
            centre_mm=(0.0, 0.0, 0.0),
            rotation=tuple(tuple(float(v) for v in row) for row in sat_rot),
            enhancement="heterogeneous" if pattern == "necrotic" else pattern,
            curve=curve,
            peak_enhancement=float(peak * rng.uniform(0.85, 1.1)),
            texture_seed=sat_seed,
            **sat_geom,
        )
        sat_spec = replace(sat_spec, diameter_mm=sat_d * _scale_per_equivalent_diameter(sat_spec))
        for _ in range(20):
            direction = _unit(rng, 1)[0]
            dist = primary.extent_mm(strict=False) + 0.5 * sat_d + rng.uniform(3.0, 12.0)
            c = centre + direction * dist
            i = np.floor(c / ws).astype(int)
            if np.any(i < 0) or np.any(i >= np.array(anatomy.shape)):
                continue
            i = tuple(i)
            sat_ext = sat_spec.extent_mm(strict=False)
            fits = (
                anatomy.breast[i]
                and anatomy.breast_depth_mm[i] >= sat_ext + anatomy.params["skin_mm"] + 1
                and anatomy.chest_depth_mm[i] >= 0.5 * sat_ext + 2.0
            )
            if fits:
                tumors.append(replace(sat_spec, centre_mm=tuple(float(v) for v in c)))
                break
    return tumors


def _radial_factor(spec: TumorSpec, direction: np.ndarray) -> np.ndarray:
    """1 + Σ amp·cos(π·freq·(dir·n) + phase), clipped to [0.5, 1.8]; ``direction`` (..., 3)."""
    out = np.ones(direction.shape[:-1], dtype=np.float32)
    for nx, ny, nz, freq, amp, ph in spec.harmonics:
        proj = direction[..., 0] * nx + direction[..., 1] * ny + direction[..., 2] * nz
        out += amp * np.cos(np.pi * freq * proj + ph)
    return np.clip(out, 0.5, 1.8)


def _shape_inside(spec: TumorSpec, u: np.ndarray, radius: float) -> np.ndarray:
    """Which points ``u`` (..., 3), in mm in the tumor frame, are inside a tumor of scale ``radius``.

    A non-mass lesion is the union of its foci (``lobes``) only; other shapes add a central body.
    """
    r = np.linalg.norm(u, axis=-1)
    direction = u / np.maximum(r, 1e-6)[..., None]
    factor = _radial_factor(spec, direction)
    axes = np.asarray(spec.axes, dtype=np.float32) * radius
    if spec.shape == NON_MASS:
        inside = np.zeros(u.shape[:-1], dtype=bool)
    else:
        inside = (np.linalg.norm(u / axes, axis=-1) / factor) <= 1.0
    for ox, oy, oz, lr in spec.lobes:
        w = u - np.array([ox, oy, oz], dtype=np.float32) * radius
        inside |= (np.linalg.norm(w / axes, axis=-1) / (lr * factor)) <= 1.0
    core = float(min(spec.axes)) * radius
    for nx, ny, nz, length, width in spec.spikes:
        proj = u[..., 0] * nx + u[..., 1] * ny + u[..., 2] * nz
        tip = core + length * radius
        perp = np.sqrt(np.maximum(r * r - proj * proj, 0.0))
        half = width * radius * np.clip(1.0 - (proj - 0.5 * core) / (tip - 0.5 * core), 0.0, 1.0)
        inside |= (proj > 0) & (proj <= tip) & (perp <= np.maximum(half, 0.0))
    return inside


def _scale_per_equivalent_diameter(spec: TumorSpec) -> float:
    """``diameter_mm`` that gives an equivalent (same-volume sphere) diameter of 1 mm for this shape."""
    step = 0.08
    axis = np.arange(-2.2, 2.2 + 1e-9, step, dtype=np.float32)
    u = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)
    volume = float(np.count_nonzero(_shape_inside(spec, u, 1.0))) * step**3  # at radius 1
    return float(2.0 * (np.pi / (6.0 * max(volume, 1e-3))) ** (1.0 / 3.0))


def render_tumor(spec: TumorSpec, grid_shape: tuple[int, int, int], spacing_mm: float) -> RenderedTumor | None:
    """Voxelise one tumor on the anatomy grid (deterministic given ``spec``).

    Returns:
        the rendered tumor, or None when it falls entirely outside the grid.
    """
    ws = spacing_mm
    radius = spec.radius_mm
    reach = spec.extent_mm() + 2.0 * ws
    c = np.asarray(spec.centre_mm) / ws - 0.5  # index coordinates of the centre
    lo = np.maximum(np.floor(c - reach / ws).astype(int), 0)
    hi = np.minimum(np.ceil(c + reach / ws).astype(int) + 1, np.array(grid_shape))
    if np.any(hi <= lo):
        return None
    grids = np.meshgrid(*[(np.arange(a, b) - cc) * ws for a, b, cc in zip(lo, hi, c, strict=True)], indexing="ij")
    v = np.stack(grids, axis=-1).astype(np.float32)  # (x, y, z, 3) mm, grid frame
    rot = np.asarray(spec.rotation, dtype=np.float32)
    inside = _shape_inside(spec, v @ rot, radius)  # tumor frame
    if not inside.any():
        # A tumor smaller than a voxel: keep its centre voxel.
        ci = np.clip(np.rint(c).astype(int) - lo, 0, np.array(inside.shape) - 1)
        inside[tuple(ci)] = True
    inside = ndi.binary_fill_holes(inside)

    depth = ndi.distance_transform_edt(np.pad(inside, 1), sampling=ws)[1:-1, 1:-1, 1:-1].astype(np.float32)
    depth_norm = depth / max(float(depth.max()), 1e-6)
    tex_rng = np.random.default_rng(spec.texture_seed)
    noise = tex_rng.standard_normal(inside.shape).astype(np.float32)
    tex = ndi.gaussian_filter(noise, sigma=max(1.0, 0.12 * radius / ws))
    tex /= max(float(tex.std()), 1e-6)
    peak = spec.peak_enhancement
    necrotic = np.zeros_like(inside)
    if spec.enhancement == "homogeneous":
        enh = peak * (1.0 + 0.08 * tex)
    elif spec.enhancement == "heterogeneous":
        enh = peak * np.clip(1.0 + 0.3 * tex, 0.35, 1.8)
    else:
        rim = 0.55 + 0.7 * np.exp(-depth / max(0.2 * radius, ws))
        enh = peak * rim * (1.0 + 0.1 * tex)
        if spec.enhancement == "necrotic":
            necrotic = inside & (depth_norm > 0.5 + 0.1 * tex)
    enh = np.where(inside & ~necrotic, enh, 0.0).astype(np.float32)
    volume = float(np.count_nonzero(inside)) * ws**3
    return RenderedTumor(
        box=tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True)),  # type: ignore[arg-type]
        inside=inside,
        necrotic=necrotic,
        enhancement=enh,
        volume_mm3=volume,
        equivalent_diameter_mm=float((6.0 * volume / np.pi) ** (1.0 / 3.0)),
    )
