"""The phantom's anatomy as a tissue-kind volume on a RAS grid.

The grid is the configuration's field of view at ``world_spacing_mm`` (1 mm by default), axis 0
left→right, axis 1 posterior→anterior, axis 2 inferior→superior (RAS+ index order). From back
to front: lungs with the heart in its fat pad (patient's left of the midline), ribs (oval
cross-sections) and the sternum, the chest-wall muscle, then two breasts (skin, subcutaneous and retromammary fat,
fibroglandular tissue from a thresholded smooth random field whose fraction follows the ACR
density class a–d, a few vessels converging toward the nipple) and air in front.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from scipy import ndimage as ndi

from synbt_factory.phantom.fields import smooth_field
from synbt_factory.phantom.presets import PhantomConfig
from synbt_factory.phantom.sites import SITE_STYLES

__all__ = [
    "Tissue",
    "CLASS_NAMES",
    "KIND_TO_CLASS",
    "DENSITY_FGT_FRACTION",
    "BreastShape",
    "Anatomy",
    "build_anatomy",
]


class Tissue(IntEnum):
    """Tissue kinds of the anatomy grid (each with its own signal and kinetics)."""

    AIR = 0
    FAT = 1
    FGT = 2
    SKIN = 3
    MUSCLE = 4
    LUNG = 5
    HEART = 6
    VESSEL = 7
    TUMOR = 8
    NECROSIS = 9
    BONE = 10  # ribs and sternum (marrow)


#: Codes of the ``class_map`` statistics label (bone is reported with the chest wall).
CLASS_NAMES: dict[int, str] = {
    0: "background",
    1: "fat",
    2: "fgt",
    3: "skin",
    4: "chest_wall",
    5: "lung",
    6: "heart",
    7: "vessel",
    8: "tumor_enhancing",
    9: "tumor_necrotic",
}

#: Lookup table tissue kind → class code.
KIND_TO_CLASS = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 4], dtype=np.uint8)

#: Fraction of the breast volume that is fibroglandular tissue, per ACR density class.
DENSITY_FGT_FRACTION: dict[str, tuple[float, float]] = {
    "a": (0.03, 0.09),
    "b": (0.10, 0.22),
    "c": (0.25, 0.42),
    "d": (0.45, 0.62),
}


@dataclass(frozen=True, kw_only=True)
class BreastShape:
    """One breast: a superellipsoid sitting on the chest wall (box coordinates in mm)."""

    side: str  # "left" (small x in RAS) or "right"
    centre_x_mm: float
    centre_z_mm: float
    radius_x_mm: float
    radius_z_mm: float
    projection_mm: float  # how far it reaches anterior of the chest wall
    exponent: float


@dataclass(frozen=True, kw_only=True)
class Anatomy:
    """The anatomy of one case on the RAS world grid.

    Attributes:
        kinds: (X, Y, Z) uint8 :class:`Tissue` codes.
        breast: (X, Y, Z) bool, tissue anterior to the chest wall (skin included).
        breast_depth_mm: (X, Y, Z) float32, approximate depth below the breast surface
            (negative outside the breasts).
        chest_depth_mm: (X, Y, Z) float32, signed distance anterior of the chest wall.
        texture: (X, Y, Z) float32 unit-variance fine texture field.
        spacing_mm: grid spacing; ``midline_mm``: x of the sternum (box coordinates).
        breasts: the two breast shapes; ``density``: ACR class; ``fgt_fraction``: achieved.
        fgt_soft: (X, Y, Z) float32 in [0, 1], the fibroglandular fraction of each voxel (partial
            volume with fat); voxels at >= 0.5 are FGT in ``kinds``.
        params: the drawn scalar parameters (for the case record).
    """

    kinds: np.ndarray
    breast: np.ndarray
    breast_depth_mm: np.ndarray
    chest_depth_mm: np.ndarray
    texture: np.ndarray
    spacing_mm: float
    midline_mm: float
    breasts: tuple[BreastShape, BreastShape]
    density: str
    fgt_fraction: float
    fgt_soft: np.ndarray
    params: dict[str, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.kinds.shape)  # type: ignore[return-value]

    def box_coordinates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre box coordinates in mm, broadcastable: shapes (X,1,1), (1,Y,1), (1,1,Z)."""
        ws = self.spacing_mm
        nx, ny, nz = self.shape
        return (
            ((np.arange(nx, dtype=np.float32) + 0.5) * ws)[:, None, None],
            ((np.arange(ny, dtype=np.float32) + 0.5) * ws)[None, :, None],
            ((np.arange(nz, dtype=np.float32) + 0.5) * ws)[None, None, :],
        )


def _breast_rho(
    shape: BreastShape, x: np.ndarray, z: np.ndarray, t: np.ndarray, harmonics: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised superellipsoid radius (1 on the surface) and approximate depth in mm."""
    dx = (x - shape.centre_x_mm) / shape.radius_x_mm  # (X,1,1)
    dz = (z - shape.centre_z_mm) / shape.radius_z_mm  # (1,1,Z)
    angle = np.arctan2(dz, dx)  # (X,1,Z)
    wobble = 1.0 + sum(a * np.cos(k * angle + ph) for k, (a, ph) in enumerate(harmonics, start=1))
    dt = np.maximum(t, 0.0) / shape.projection_mm  # (X,Y,Z)
    # The base is wider than the tip (a cone-like superellipsoid).
    base = (1.0 + 0.18 * (1.0 - np.clip(dt, 0.0, 1.0))) * wobble
    p = shape.exponent
    rho = (np.abs(dx / base) ** p + np.abs(dz / base) ** p + dt**p) ** (1.0 / p)
    rho = rho.astype(np.float32)
    dist = np.sqrt((dx * shape.radius_x_mm) ** 2 + (dz * shape.radius_z_mm) ** 2 + np.maximum(t, 0.0) ** 2)
    depth = (1.0 - rho) * dist / np.maximum(rho, 1e-3)
    depth = np.where(t >= 0, depth, -1.0).astype(np.float32)
    return rho, depth


def _smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth minimum of two fields (a rounded union of two implicit shapes)."""
    m = np.minimum(a, b)
    return (m - k * np.log1p(np.exp(-np.abs(a - b) / k))).astype(np.float32)


def _paint_tube(
    kinds: np.ndarray,
    points_mm: np.ndarray,
    radii_mm: np.ndarray,
    spacing_mm: float,
    allowed: tuple[int, ...],
) -> None:
    """Set voxels within ``radii_mm`` of any point of a sampled curve to VESSEL (where allowed)."""
    if len(points_mm) == 0:
        return
    r_max = float(radii_mm.max())
    reach = int(np.ceil(r_max / spacing_mm)) + 1
    offs = np.stack(np.meshgrid(*[np.arange(-reach, reach + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    centres = points_mm / spacing_mm - 0.5  # voxel index coordinates
    base = np.rint(centres).astype(np.int64)
    idx = base[:, None, :] + offs[None, :, :]  # (N, M, 3)
    d2 = ((idx - centres[:, None, :]) * spacing_mm) ** 2
    hit = d2.sum(-1) <= (radii_mm[:, None] ** 2)
    idx = idx[hit]
    shape = np.array(kinds.shape)
    ok = np.all((idx >= 0) & (idx < shape), axis=1)
    idx = idx[ok]
    if len(idx) == 0:
        return
    sel = (idx[:, 0], idx[:, 1], idx[:, 2])
    current = kinds[sel]
    mask = np.isin(current, allowed)
    kinds[idx[mask, 0], idx[mask, 1], idx[mask, 2]] = Tissue.VESSEL


def _random_walk_vessel(
    rng: np.random.Generator,
    start_mm: np.ndarray,
    direction: np.ndarray,
    *,
    step_mm: float,
    max_steps: int,
    stay_inside,
) -> np.ndarray:
    """Points of a smooth random curve starting at ``start_mm``; stops where ``stay_inside`` fails."""
    pts = [start_mm.copy()]
    d = direction / np.linalg.norm(direction)
    turn = np.zeros(3)
    p = start_mm.copy()
    for _ in range(max_steps):
        turn = 0.85 * turn + 0.15 * rng.normal(0.0, 0.35, 3)
        d = d + turn
        d /= np.linalg.norm(d)
        p = p + step_mm * d
        if not stay_inside(p):
            break
        pts.append(p.copy())
    return np.asarray(pts)


def build_anatomy(rng: np.random.Generator, config: PhantomConfig, *, density: str) -> Anatomy:
    """Draw one case's anatomy on the configuration's RAS grid.

    Args:
        rng: the case's anatomy stream.
        config: field of view, grid spacing, anatomy scale and site (breast size and position,
            skin and subcutaneous fat thickness, fibroglandular proportion: :class:`SiteStyle`).
        density: ACR breast density class ``"a"``–``"d"`` (drives the FGT fraction).

    Returns:
        the :class:`Anatomy` (arrays of ``config.world_shape``).
    """
    if density not in DENSITY_FGT_FRACTION:
        raise ValueError(f"density must be one of {sorted(DENSITY_FGT_FRACTION)}, got {density!r}")
    style = SITE_STYLES[config.site]
    ws = float(config.world_spacing_mm)
    lx, ly, lz = (float(f) for f in config.fov_mm)
    shape = config.world_shape
    sc = config.anatomy_scale
    nx, ny, nz = shape
    x = ((np.arange(nx, dtype=np.float32) + 0.5) * ws)[:, None, None]
    y = ((np.arange(ny, dtype=np.float32) + 0.5) * ws)[None, :, None]
    z = ((np.arange(nz, dtype=np.float32) + 0.5) * ws)[None, None, :]
    mid = lx * 0.5 + rng.uniform(-0.02, 0.02) * lx
    u = (x - mid) / lx  # (X,1,1) roughly [-0.5, 0.5]
    w = (z - lz * 0.5) / lz  # (1,1,Z)

    # Chest wall: convex anteriorly, receding laterally, slightly tilted superior–inferior.
    cw0 = ly * rng.uniform(0.31, 0.38)
    curv = rng.uniform(0.10, 0.22) * ly
    tilt = rng.uniform(-0.04, 0.04) * ly
    y_cw = cw0 - curv * (2.0 * u) ** 2 + tilt * (2.0 * w)  # (X,1,Z)
    t = (y - y_cw).astype(np.float32)  # (X,Y,Z) mm anterior of the chest wall

    # Two breasts.
    proj = ly * rng.uniform(*style.breast_projection)
    rx = lx * rng.uniform(*style.breast_radius_x)
    rz = lz * rng.uniform(*style.breast_radius_z)
    offset = lx * rng.uniform(0.235, 0.265)
    cz = lz * rng.uniform(*style.breast_centre_z)
    exponent = rng.uniform(2.0, 2.6)
    breasts = []
    rhos, depths = [], []
    for side, sign in (("left", -1.0), ("right", 1.0)):
        asym = rng.uniform(0.94, 1.06, size=3)
        b = BreastShape(
            side=side,
            centre_x_mm=float(mid + sign * offset * rng.uniform(0.97, 1.03)),
            centre_z_mm=float(cz + rng.uniform(-0.03, 0.03) * lz),
            radius_x_mm=float(rx * asym[0]),
            radius_z_mm=float(rz * asym[1]),
            projection_mm=float(min(proj * asym[2], ly - cw0 - 10.0 * sc)),
            exponent=float(exponent),
        )
        harmonics = np.stack([rng.uniform(0.0, 0.04, 3), rng.uniform(0, 2 * np.pi, 3)], axis=1)
        rho, depth = _breast_rho(b, x, z, t, harmonics)
        breasts.append(b)
        rhos.append(rho)
        depths.append(depth)
    in_breast = ((rhos[0] <= 1.0) | (rhos[1] <= 1.0)) & (t >= 0)
    breast_depth = np.maximum(depths[0], depths[1])

    # Body surface in front of the chest wall: a smooth union of both breasts and a thin layer of
    # subcutaneous fat over the sternum and laterally (a rounded cleavage instead of a cusp).
    t_pre = (sc * rng.uniform(4.0, 9.0) + sc * rng.uniform(2.0, 6.0) * (2.0 * np.abs(u))).astype(np.float32)
    rho_pre = np.maximum(t, 0.0) / t_pre
    k_smooth = 0.08
    surface = _smooth_min(_smooth_min(rhos[0], rhos[1], k_smooth), rho_pre, k_smooth)
    anterior = (t >= 0) & ((surface <= 1.0) | in_breast)
    del rhos, depths, rho_pre, surface
    body = anterior | (t < 0)

    kinds = np.zeros(shape, dtype=np.uint8)
    kinds[anterior] = Tissue.FAT

    # Posterior: pectoral muscle, ribs (oval cross-sections) and sternum, lungs, heart in its fat.
    t_m = (sc * rng.uniform(7.0, 12.0) * (0.45 + 0.55 * np.minimum(1.0, 2.5 * np.abs(u)))).astype(np.float32)
    t_r = sc * rng.uniform(7.0, 10.0)
    muscle = (t < 0) & (t >= -t_m)
    kinds[muscle] = Tissue.MUSCLE
    band = (t < -t_m) & (t >= -t_m - t_r)
    kinds[band] = Tissue.MUSCLE
    period = sc * rng.uniform(18.0, 26.0)
    phase = rng.uniform(0.0, 1.0)
    slope = rng.uniform(-0.3, 0.3)
    zeta = (z + slope * (x - mid)) / period + phase  # (X,1,Z)
    dz_rib = period * np.abs(zeta - np.round(zeta))
    t_c = -t_m - 0.5 * t_r
    rib = ((dz_rib / (0.3 * period)) ** 2 + ((t - t_c) / (0.5 * t_r)) ** 2) <= 1.0
    kinds[rib] = Tissue.BONE
    sternum_half = sc * rng.uniform(10.0, 15.0)
    t_m_mid = float(t_m[int(np.clip(mid / ws, 0, nx - 1)), 0, :].mean())
    sternum = (
        ((x - mid) / sternum_half) ** 2 + ((t + t_m_mid * 0.6 + 0.35 * t_r) / (0.45 * t_r + 0.3 * t_m_mid)) ** 2
    ) <= 1.0
    kinds[sternum & (t < 0)] = Tissue.BONE
    lung = (t < -t_m - t_r) & ~rib
    kinds[lung] = Tissue.LUNG
    heart_r = np.array([0.17 * lx, 0.14 * ly, 0.40 * lz]) * rng.uniform(0.9, 1.1, 3)
    heart_c = np.array(
        [mid - 0.06 * lx, cw0 - 0.6 * float(t_m.max()) - t_r - 6.0 * sc - heart_r[1], lz * rng.uniform(-0.05, 0.3)]
    )
    fat_pad = 4.0 * sc

    def ellipsoid(extra: float) -> np.ndarray:
        return (
            ((x - heart_c[0]) / (heart_r[0] + extra)) ** 2
            + ((y - heart_c[1]) / (heart_r[1] + extra)) ** 2
            + ((z - heart_c[2]) / (heart_r[2] + extra)) ** 2
        ) <= 1.0

    kinds[lung & ellipsoid(fat_pad)] = Tissue.FAT
    kinds[lung & ellipsoid(0.0)] = Tissue.HEART

    # Skin: the outer shell of the body where it meets air (the box edges are not skin).
    skin_mm = rng.uniform(*style.skin_mm)
    n_skin = max(1, int(round(skin_mm / ws)))
    inner = ndi.binary_erosion(body, iterations=n_skin, border_value=1)
    kinds[body & ~inner] = Tissue.SKIN
    del inner

    # Fibroglandular tissue: a thresholded multi-scale random field (ducts run anterior–posterior),
    # denser around the breast axis. The threshold is soft: ``fgt_soft`` is the FGT fraction of a
    # voxel (partial volume with fat); voxels at >= 0.5 are labelled FGT.
    frac_lo, frac_hi = DENSITY_FGT_FRACTION[density]
    target = rng.uniform(frac_lo, frac_hi) * style.fgt_scale
    c1 = (1.0 * sc + 0.6, 2.2 * sc + 0.8, 1.0 * sc + 0.6)
    c2 = (2.2 * sc + 0.6, 4.5 * sc + 1.0, 2.2 * sc + 0.6)
    c3 = (7.0 * sc, 12.0 * sc, 7.0 * sc)
    score = 0.3 * smooth_field(rng, shape, spacing_mm=ws, correlation_mm=c1)
    score += 0.45 * smooth_field(rng, shape, spacing_mm=ws, correlation_mm=c2)
    score += 0.35 * smooth_field(rng, shape, spacing_mm=ws, correlation_mm=c3)
    axis_d2 = np.minimum(
        ((x - breasts[0].centre_x_mm) / breasts[0].radius_x_mm) ** 2
        + ((z - breasts[0].centre_z_mm) / breasts[0].radius_z_mm) ** 2,
        ((x - breasts[1].centre_x_mm) / breasts[1].radius_x_mm) ** 2
        + ((z - breasts[1].centre_z_mm) / breasts[1].radius_z_mm) ** 2,
    )
    score += rng.uniform(0.8, 1.2) * np.exp(-axis_d2 / 0.30).astype(np.float32)
    subq = skin_mm + sc * rng.uniform(*style.subcutaneous_fat_mm)
    retro = sc * rng.uniform(2.0, 5.0)
    zone = in_breast & (breast_depth >= subq) & (t >= retro) & (kinds == Tissue.FAT)
    n_breast = int(np.count_nonzero(in_breast))
    n_zone = int(np.count_nonzero(zone))
    want = int(round(target * n_breast))
    fgt_soft = np.zeros(shape, dtype=np.float32)
    if n_zone and want:
        zs = score[zone]
        thr = float(np.partition(zs, max(0, n_zone - want))[max(0, n_zone - want)])
        width = 0.25 * float(zs.std())
        fgt_soft[zone] = np.clip(0.5 + (zs - thr) / max(width, 1e-6), 0.0, 1.0)
    del score
    fgt = fgt_soft >= 0.5
    kinds[fgt] = Tissue.FGT
    fgt_fraction = float(np.count_nonzero(fgt)) / max(1, n_breast)

    # Vessels: internal mammary vessels beside the sternum, and a few per breast toward the nipple.
    for sign in (-1.0, 1.0):
        xv = mid + sign * (sternum_half + sc * rng.uniform(2.0, 6.0))
        yv = cw0 - float(t_m.min()) - 0.5 * t_r
        n_pts = int(lz / (0.7 * ws))
        pts = np.stack([np.full(n_pts, xv), np.full(n_pts, yv), np.linspace(0, lz, n_pts)], 1)
        pts[:, 0] += np.cumsum(rng.normal(0, 0.05, n_pts))
        radii = np.full(n_pts, max(1.0, 1.6 * sc) * rng.uniform(0.9, 1.2))
        _paint_tube(kinds, pts, radii, ws, (Tissue.MUSCLE, Tissue.BONE, Tissue.LUNG, Tissue.FAT))

    allowed = (Tissue.FAT, Tissue.FGT)

    def inside_breast(p: np.ndarray) -> bool:
        i = np.floor(p / ws).astype(int)
        if np.any(i < 0) or np.any(i >= np.array(shape)):
            return False
        return bool(in_breast[tuple(i)]) and float(breast_depth[tuple(i)]) > skin_mm + 0.5

    n_per_breast = (1, 3) if sc < 0.6 else (2, 5)
    for b in breasts:
        for _ in range(int(rng.integers(n_per_breast[0], n_per_breast[1] + 1))):
            sx = b.centre_x_mm + b.radius_x_mm * rng.uniform(-0.75, 0.75)
            sz = b.centre_z_mm + b.radius_z_mm * rng.uniform(-0.75, 0.75)
            ix = int(np.clip(sx / ws, 0, nx - 1))
            iz = int(np.clip(sz / ws, 0, nz - 1))
            sy = float(y_cw[ix, 0, iz]) + rng.uniform(1.0, 4.0) * sc
            start = np.array([sx, sy, sz])
            towards = np.array(
                [
                    (b.centre_x_mm - sx) / b.radius_x_mm * 0.6 + rng.normal(0, 0.2),
                    1.0,
                    (b.centre_z_mm - sz) / b.radius_z_mm * 0.6 + rng.normal(0, 0.2),
                ]
            )
            pts = _random_walk_vessel(
                rng,
                start,
                towards,
                step_mm=0.7 * ws,
                max_steps=int(1.3 * b.projection_mm / (0.7 * ws)),
                stay_inside=inside_breast,
            )
            if len(pts) < 4:
                continue
            r0 = max(0.9, 1.5 * sc) * rng.uniform(0.85, 1.25)
            radii = np.linspace(r0, 0.65 * r0, len(pts))
            _paint_tube(kinds, pts, radii, ws, allowed)

    texture = smooth_field(rng, shape, spacing_mm=ws, correlation_mm=max(2.0, 3.0 * sc))
    params = {
        "chest_wall_y_mm": float(cw0),
        "breast_projection_mm": float(proj),
        "skin_mm": float(skin_mm),
        "subcutaneous_fat_mm": float(subq),
        "fgt_target_fraction": float(target),
    }
    return Anatomy(
        kinds=kinds,
        breast=anterior,
        breast_depth_mm=breast_depth,
        chest_depth_mm=t,
        texture=texture,
        spacing_mm=ws,
        midline_mm=float(mid),
        breasts=(breasts[0], breasts[1]),
        density=density,
        fgt_fraction=fgt_fraction,
        fgt_soft=fgt_soft,
        params=params,
    )
