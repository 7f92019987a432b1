"""What a phantom site changes in anatomy, kinetics, tumors and stored orientation.

A :class:`SiteStyle` holds the site-dependent parameters that are not acquisition settings (those
live in :class:`~synbt_factory.phantom.presets.SiteProfile` and the size presets). Site ``A`` is the
phantom the project trains and validates on; its values are the ones the phantom always used.
Site ``B`` is an external test family that segmenters and generators never see: larger, fattier
breasts with thicker skin, slower plateau-dominant tumor kinetics with lower enhancement, larger
tumors that are rim-enhancing, lobulated or non-mass-like, and files stored in LPS, LAS or a
coronal axis order (never RAS).

Every range is ``(min, max)`` and is drawn uniformly unless said otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SiteStyle", "SITE_STYLES", "SITES", "TUMOR_KINDS", "ORIENTATIONS", "VIEWS"]

#: Tumor kinds a site can draw (site B); site A draws shape and enhancement pattern independently.
#: ``rim``: an oval or irregular mass with rim enhancement (a necrotic core when large);
#: ``lobulated``: a lobulated mass; ``non_mass``: clumped enhancing foci spread over a segment.
TUMOR_KINDS = ("rim", "lobulated", "non_mass")

#: Stored orientations: stored axis a holds world (RAS) axis ``perm[a]``; ``flip[a]`` reverses it.
ORIENTATIONS: dict[str, tuple[tuple[int, int, int], tuple[bool, bool, bool]]] = {
    "RAS": ((0, 1, 2), (False, False, False)),
    "LPS": ((0, 1, 2), (True, True, False)),
    "SAG": ((1, 2, 0), (True, True, False)),  # stored P, I, R: slices along left–right
    "LAS": ((0, 1, 2), (True, False, False)),
    "COR": ((0, 2, 1), (True, False, False)),  # stored L, S, A: slices along posterior–anterior
}

#: What the ``imaging_data.view`` of the patient info JSON says for each orientation.
VIEWS: dict[str, str] = {"RAS": "axial", "LPS": "axial", "SAG": "sagittal", "LAS": "axial", "COR": "coronal"}


def _check_pair(name: str, value: tuple[float, float], *, low: float = 0.0) -> None:
    if len(value) != 2 or not low <= value[0] <= value[1]:
        raise ValueError(f"{name} must be a (min, max) pair with {low} <= min <= max, got {value}")


@dataclass(frozen=True, kw_only=True)
class SiteStyle:
    """Site-dependent anatomy, kinetics, tumor and orientation parameters.

    Args:
        name: site label (``"A"`` or ``"B"``), written to the README and (site B) the patient info JSON.
        breast_projection: breast projection anterior of the chest wall, × the P–A field of view.
        breast_radius_x: breast half-width (L–R), × the L–R field of view.
        breast_radius_z: breast half-height (I–S), × the I–S field of view.
        breast_centre_z: height of the breast centres, × the I–S field of view (lower = more ptotic).
        skin_mm: skin thickness in mm.
        subcutaneous_fat_mm: fat between skin and fibroglandular tissue, beyond the skin, in mm at the
            default field of view (scaled with the anatomy).
        fgt_scale: multiplies the fibroglandular fraction drawn for the ACR density class (< 1: fattier).
        tumor_wash_in_s: time constant of the tumor's contrast uptake in seconds (larger = slower wash-in).
        curve_probabilities: probabilities of the ``persistent``, ``plateau`` and ``washout`` curves.
        peak_persistent: tumor enhancement at the first post-contrast phase for persistent curves.
        peak_other: the same for plateau and wash-out curves.
        diameter_beta: Beta(a, b) shape of the tumor diameter within the preset's range.
        tumor_kinds: kinds to draw (names in :data:`TUMOR_KINDS`); empty: site A's independent
            draw of shape (oval, lobulated, irregular, spiculated) and enhancement pattern.
        tumor_kind_probabilities: probabilities of ``tumor_kinds``.
        orientations: stored orientation of case ``i`` is ``orientations[i % len(orientations)]``.
    """

    name: str
    breast_projection: tuple[float, float] = (0.32, 0.46)
    breast_radius_x: tuple[float, float] = (0.17, 0.21)
    breast_radius_z: tuple[float, float] = (0.30, 0.40)
    breast_centre_z: tuple[float, float] = (0.44, 0.56)
    skin_mm: tuple[float, float] = (1.4, 2.4)
    subcutaneous_fat_mm: tuple[float, float] = (2.5, 6.0)
    fgt_scale: float = 1.0
    tumor_wash_in_s: tuple[float, float] = (35.0, 60.0)
    curve_probabilities: tuple[float, float, float] = (0.2, 0.35, 0.45)
    peak_persistent: tuple[float, float] = (1.0, 1.7)
    peak_other: tuple[float, float] = (1.2, 2.1)
    diameter_beta: tuple[float, float] = (1.6, 2.3)
    tumor_kinds: tuple[str, ...] = ()
    tumor_kind_probabilities: tuple[float, ...] = ()
    orientations: tuple[str, ...] = ("RAS", "LPS", "RAS", "RAS", "RAS", "LPS", "SAG", "RAS")

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must be non-empty")
        for key in (
            "breast_projection",
            "breast_radius_x",
            "breast_radius_z",
            "breast_centre_z",
            "skin_mm",
            "subcutaneous_fat_mm",
            "tumor_wash_in_s",
            "peak_persistent",
            "peak_other",
        ):
            _check_pair(key, getattr(self, key))
        if self.breast_radius_x[1] > 0.25 or self.breast_projection[1] > 0.55:
            raise ValueError("breast_radius_x must stay <= 0.25 and breast_projection <= 0.55 of the field of view")
        if not 0.2 <= self.fgt_scale <= 1.5:
            raise ValueError(f"fgt_scale must be in [0.2, 1.5], got {self.fgt_scale}")
        if len(self.curve_probabilities) != 3 or abs(sum(self.curve_probabilities) - 1.0) > 1e-9:
            raise ValueError(f"curve_probabilities must be three values summing to 1, got {self.curve_probabilities}")
        if len(self.diameter_beta) != 2 or min(self.diameter_beta) <= 0:
            raise ValueError(f"diameter_beta must be two positive values, got {self.diameter_beta}")
        unknown = [k for k in self.tumor_kinds if k not in TUMOR_KINDS]
        if unknown:
            raise ValueError(f"tumor_kinds has unknown names {unknown}; known: {list(TUMOR_KINDS)}")
        if len(self.tumor_kind_probabilities) != len(self.tumor_kinds) or (
            self.tumor_kinds and abs(sum(self.tumor_kind_probabilities) - 1.0) > 1e-9
        ):
            raise ValueError("tumor_kind_probabilities must give one probability per tumor kind, summing to 1")
        bad = [o for o in self.orientations if o not in ORIENTATIONS]
        if not self.orientations or bad:
            raise ValueError(f"orientations must be names in {list(ORIENTATIONS)}, got {self.orientations}")

    def orientation_for(self, case_index: int) -> str:
        """The stored orientation of case ``case_index`` (deterministic by index)."""
        return self.orientations[case_index % len(self.orientations)]


SITE_STYLES: dict[str, SiteStyle] = {
    # The training phantom (its values are the ones the phantom always used).
    "A": SiteStyle(name="A"),
    # The external test family.
    "B": SiteStyle(
        name="B",
        breast_projection=(0.40, 0.52),
        breast_radius_x=(0.19, 0.225),
        breast_radius_z=(0.34, 0.44),
        breast_centre_z=(0.40, 0.50),
        skin_mm=(2.4, 3.4),
        subcutaneous_fat_mm=(4.0, 9.0),
        fgt_scale=0.65,
        tumor_wash_in_s=(70.0, 110.0),
        curve_probabilities=(0.25, 0.6, 0.15),
        peak_persistent=(0.8, 1.3),
        peak_other=(0.9, 1.5),
        diameter_beta=(2.0, 1.6),
        tumor_kinds=TUMOR_KINDS,
        tumor_kind_probabilities=(0.35, 0.35, 0.3),
        orientations=("LPS", "LAS", "COR", "LPS", "LAS", "COR", "LPS", "LAS"),
    ),
}

#: Site names accepted by the phantom (``--site``).
SITES: tuple[str, ...] = tuple(SITE_STYLES)
