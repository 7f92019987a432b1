"""Pre-contrast signal and contrast-enhancement curves per tissue kind.

The signal of a voxel of kind ``k`` at acquisition time ``t`` (seconds after injection) is::

    S(t) = S0[k] · (1 + E1(x) · C[k](t))

where ``S0`` is the pre-contrast signal (relative units: non-fat-suppressed fat = 1), ``E1`` the
relative enhancement at the first post-contrast phase (``post1/pre − 1``, per voxel: tissue value
times a heterogeneity field, or the tumor's rendered map) and ``C`` the curve shape normalised
to ``C(0) = 0`` and ``C(t1) = 1``.

Curve shapes: tumors wash in fast (time constant 35–60 s at site A; slower, 70–110 s, at site B)
then keep rising (``persistent``), stay flat (``plateau``) or wash out (``washout``); fibroglandular
tissue (background parenchymal enhancement) rises slowly; fat, muscle, bone and necrosis are
nearly flat; blood (heart, vessels) peaks at the first phase and decays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synbt_factory.phantom.anatomy import Tissue

__all__ = ["Kinetics", "sample_acquisition_times", "sample_kinetics", "tumor_curve", "BPE_LEVELS"]

N_KINDS = len(Tissue)

#: Background parenchymal enhancement: (probability, E1 range of fibroglandular tissue).
BPE_LEVELS: dict[str, tuple[float, tuple[float, float]]] = {
    "minimal": (0.30, (0.06, 0.12)),
    "mild": (0.35, (0.12, 0.22)),
    "moderate": (0.25, (0.22, 0.32)),
    "marked": (0.10, (0.32, 0.40)),
}

# Pre-contrast signal per kind, (min, max), without and with fat suppression.
_S0_PLAIN = {
    Tissue.AIR: (0.0, 0.0),
    Tissue.FAT: (0.95, 1.05),
    Tissue.FGT: (0.38, 0.48),
    Tissue.SKIN: (0.55, 0.65),
    Tissue.MUSCLE: (0.32, 0.38),
    Tissue.LUNG: (0.03, 0.06),
    Tissue.HEART: (0.28, 0.38),
    Tissue.VESSEL: (0.28, 0.36),
    Tissue.TUMOR: (0.36, 0.44),
    Tissue.NECROSIS: (0.24, 0.30),
    Tissue.BONE: (0.65, 0.75),
}
_S0_FATSAT = {
    Tissue.AIR: (0.0, 0.0),
    Tissue.FAT: (0.10, 0.18),
    Tissue.FGT: (0.44, 0.54),
    Tissue.SKIN: (0.45, 0.55),
    Tissue.MUSCLE: (0.34, 0.40),
    Tissue.LUNG: (0.03, 0.06),
    Tissue.HEART: (0.30, 0.40),
    Tissue.VESSEL: (0.30, 0.38),
    Tissue.TUMOR: (0.42, 0.50),
    Tissue.NECROSIS: (0.26, 0.34),
    Tissue.BONE: (0.18, 0.24),
}
# Relative enhancement at the first post-contrast phase (tumor E1 comes from the tumor spec).
_E1 = {
    Tissue.AIR: (0.0, 0.0),
    Tissue.FAT: (0.01, 0.035),
    Tissue.SKIN: (0.08, 0.15),
    Tissue.MUSCLE: (0.02, 0.05),
    Tissue.LUNG: (0.02, 0.05),
    Tissue.HEART: (2.2, 3.2),
    Tissue.VESSEL: (1.6, 2.6),
    Tissue.NECROSIS: (0.02, 0.05),
    Tissue.BONE: (0.03, 0.08),
}
# Relative spread of E1 within a tissue (multiplies a smooth unit-variance field).
_HETEROGENEITY = {Tissue.FGT: 0.35, Tissue.FAT: 0.3, Tissue.SKIN: 0.2, Tissue.MUSCLE: 0.2}
# Relative spread of S0 within a tissue (fine texture).
_TEXTURE = {
    Tissue.FAT: 0.03,
    Tissue.FGT: 0.08,
    Tissue.SKIN: 0.05,
    Tissue.MUSCLE: 0.05,
    Tissue.LUNG: 0.3,
    Tissue.HEART: 0.05,
    Tissue.BONE: 0.1,
    Tissue.TUMOR: 0.06,
    Tissue.NECROSIS: 0.08,
}


@dataclass(frozen=True, kw_only=True)
class Kinetics:
    """Signal tables of one case, indexed by :class:`Tissue` code.

    Attributes:
        times_s: acquisition time of every phase in seconds after injection (phase 0 = 0).
        s0: (n_kinds,) pre-contrast signal.
        e1: (n_kinds,) relative enhancement at the first post-contrast phase.
        curves: (n_kinds, n_phases) curve shapes, column 0 = 0 and column 1 = 1.
        heterogeneity: (n_kinds,) relative spread of E1; texture: (n_kinds,) relative spread of S0.
        fat_suppressed: whether fat is suppressed; bpe: background parenchymal enhancement level.
        tumor_curve: the tumors' curve type.
    """

    times_s: tuple[float, ...]
    s0: np.ndarray
    e1: np.ndarray
    curves: np.ndarray
    heterogeneity: np.ndarray
    texture: np.ndarray
    fat_suppressed: bool
    bpe: str
    tumor_curve: str

    @property
    def n_phases(self) -> int:
        return len(self.times_s)

    def ratio_at(self, kind: Tissue, phase: int) -> float:
        """Nominal post/pre signal ratio of a kind at a phase (no heterogeneity)."""
        return float(1.0 + self.e1[kind] * self.curves[kind, phase])


def sample_acquisition_times(rng: np.random.Generator, n_post: int) -> list[float]:
    """Phase times in seconds: 0 for pre-contrast, the first post at 60–90 s, then every 60–120 s."""
    if n_post < 1:
        raise ValueError(f"n_post must be >= 1, got {n_post}")
    first = rng.uniform(60.0, 90.0)
    step = rng.uniform(60.0, 120.0)
    times = [0.0, first]
    for k in range(1, n_post):
        times.append(first + k * step + rng.uniform(-4.0, 4.0))
    return [round(float(t), 1) for t in times]


def _uptake(t: np.ndarray, tau: float) -> np.ndarray:
    return 1.0 - np.exp(-t / tau)


def tumor_curve(times: np.ndarray, curve: str, *, tau_s: float, late_slope: float) -> np.ndarray:
    """Tumor curve shape: fast wash-in, then a linear late trend (``late_slope`` per 600 s).

    ``late_slope`` > 0 is persistent, ≈ 0 plateau, < 0 wash-out. Normalised to 1 at ``times[1]``.
    """
    if curve not in ("persistent", "plateau", "washout"):
        raise ValueError(f"unknown tumor curve {curve!r}")
    t = np.asarray(times, dtype=np.float64)
    raw = _uptake(t, tau_s) * (1.0 + late_slope * np.maximum(t - t[1], 0.0) / 600.0)
    return raw / raw[1]


def sample_kinetics(
    rng: np.random.Generator,
    times_s: list[float],
    *,
    fat_suppressed: bool,
    tumor_curve_type: str,
    tumor_wash_in_s: tuple[float, float] = (35.0, 60.0),
) -> Kinetics:
    """Draw one case's signal tables.

    Args:
        rng: the case's kinetics stream.
        times_s: acquisition times (phase 0 = pre-contrast at 0 s).
        fat_suppressed: use the fat-suppressed pre-contrast signal table.
        tumor_curve_type: ``persistent``, ``plateau`` or ``washout``.
        tumor_wash_in_s: (min, max) time constant of the tumor's uptake in seconds (the site's
            :attr:`SiteStyle.tumor_wash_in_s`).
    """
    t = np.asarray(times_s, dtype=np.float64)
    n_phases = len(t)
    table = _S0_FATSAT if fat_suppressed else _S0_PLAIN
    s0 = np.zeros(N_KINDS, dtype=np.float32)
    e1 = np.zeros(N_KINDS, dtype=np.float32)
    for kind in Tissue:
        lo, hi = table[kind]
        s0[kind] = rng.uniform(lo, hi)
        if kind in _E1:
            e1[kind] = rng.uniform(*_E1[kind])
    names = list(BPE_LEVELS)
    probs = np.array([BPE_LEVELS[n][0] for n in names])
    bpe = str(rng.choice(names, p=probs / probs.sum()))
    e1[Tissue.FGT] = rng.uniform(*BPE_LEVELS[bpe][1])
    e1[Tissue.TUMOR] = 1.5  # nominal; voxels take the rendered tumor map

    curves = np.zeros((N_KINDS, n_phases), dtype=np.float32)

    def slow(tau: float) -> np.ndarray:
        c = _uptake(t, tau)
        return c / c[1]

    curves[Tissue.FAT] = slow(rng.uniform(200, 400))
    curves[Tissue.FGT] = slow(rng.uniform(150, 300))
    curves[Tissue.SKIN] = slow(rng.uniform(150, 300))
    curves[Tissue.MUSCLE] = slow(rng.uniform(200, 400))
    curves[Tissue.BONE] = slow(rng.uniform(200, 400))
    curves[Tissue.LUNG] = slow(150.0)
    curves[Tissue.NECROSIS] = slow(rng.uniform(300, 600))
    gamma = rng.uniform(0.2, 0.4)
    blood = np.zeros(n_phases)
    blood[1:] = (t[1:] / t[1]) ** (-gamma)
    curves[Tissue.HEART] = blood
    curves[Tissue.VESSEL] = blood
    slope = {
        "persistent": rng.uniform(0.15, 0.35),
        "plateau": rng.uniform(-0.04, 0.04),
        "washout": rng.uniform(-0.35, -0.15),
    }[tumor_curve_type]
    curves[Tissue.TUMOR] = tumor_curve(t, tumor_curve_type, tau_s=rng.uniform(*tumor_wash_in_s), late_slope=slope)

    heterogeneity = np.zeros(N_KINDS, dtype=np.float32)
    for kind, value in _HETEROGENEITY.items():
        heterogeneity[kind] = value
    texture = np.zeros(N_KINDS, dtype=np.float32)
    for kind, value in _TEXTURE.items():
        texture[kind] = value
    return Kinetics(
        times_s=tuple(float(v) for v in t),
        s0=s0,
        e1=e1,
        curves=curves,
        heterogeneity=heterogeneity,
        texture=texture,
        fat_suppressed=fat_suppressed,
        bpe=bpe,
        tumor_curve=tumor_curve_type,
    )
