"""The README section that documents how site B differs from site A, with the numbers of both.

Every figure is read from the configurations themselves (:class:`SiteStyle`, the size presets and
their :class:`SiteProfile` entries), so the text never drifts from what the phantom draws.
"""

from __future__ import annotations

from synbt_factory.phantom.presets import SITE_PROFILES, PhantomConfig, phantom_config
from synbt_factory.phantom.sites import ORIENTATIONS, SITE_STYLES, TUMOR_KINDS, SiteStyle
from synbt_factory.phantom.tumors import NON_MASS_EQUIVALENT_FRACTION, RIM_NECROTIC_MM, RIM_NECROTIC_P, RIM_SHAPES

__all__ = ["site_b_markdown"]


def _rng(pair: tuple[float, float], unit: str = "", digits: int = 2) -> str:
    lo, hi = (round(float(v), digits) for v in pair)
    text = f"{lo:g}" if lo == hi else f"{lo:g}–{hi:g}"
    return f"{text} {unit}".rstrip()


def _axcodes(name: str) -> str:
    perm, flips = ORIENTATIONS[name]
    letters = (("R", "L"), ("A", "P"), ("S", "I"))
    return "".join(letters[p][int(f)] for p, f in zip(perm, flips, strict=True))


def _orientations(style: SiteStyle) -> str:
    seen = list(dict.fromkeys(style.orientations))
    n = len(style.orientations)
    return ", ".join(f"{o} ({_axcodes(o)}, {style.orientations.count(o)}/{n})" for o in seen)


def _kinds(style: SiteStyle) -> str:
    if not style.tumor_kinds:
        return "shape (oval, lobulated, irregular, spiculated) and pattern drawn independently"
    return ", ".join(f"{k} {p:.0%}" for k, p in zip(style.tumor_kinds, style.tumor_kind_probabilities, strict=True))


def _profiles(config: PhantomConfig) -> list[tuple[str, str]]:
    profiles = [SITE_PROFILES[name] for name in config.site_profiles]
    fat_sat = sum(p.fat_suppressed_probability for p in profiles) / len(profiles)
    slices = (min(p.slice_mm[0] for p in profiles), max(p.slice_mm[1] for p in profiles))
    inplane = (min(p.inplane_mm[0] for p in profiles), max(p.inplane_mm[1] for p in profiles))
    fields = sorted({b for p in profiles for b in p.field_strengths})
    return [
        ("site profiles", ", ".join(p.name for p in profiles)),
        ("slice thickness", _rng(slices, "mm")),
        ("in-plane spacing", _rng(inplane, "mm")),
        ("fat-suppressed share", f"{fat_sat:.0%}"),
        ("field strength", ", ".join(f"{b:g} T" for b in fields)),
    ]


def _rows(config: PhantomConfig) -> list[tuple[str, str]]:
    s = SITE_STYLES[config.site]
    return [
        ("breast projection (× P–A field of view)", _rng(s.breast_projection)),
        ("breast half-width (× L–R field of view)", _rng(s.breast_radius_x, digits=3)),
        ("breast half-height (× I–S field of view)", _rng(s.breast_radius_z)),
        ("breast centre height (× I–S field of view)", _rng(s.breast_centre_z)),
        ("skin", _rng(s.skin_mm, "mm")),
        ("subcutaneous fat beyond the skin (at 192 mm)", _rng(s.subcutaneous_fat_mm, "mm")),
        ("fibroglandular fraction (× the density class's)", f"{s.fgt_scale:g}"),
        ("tumor wash-in time constant", _rng(s.tumor_wash_in_s, "s", digits=0)),
        ("curves persistent / plateau / wash-out", " / ".join(f"{p:.0%}" for p in s.curve_probabilities)),
        ("tumor enhancement at post 1, persistent", _rng(s.peak_persistent)),
        ("tumor enhancement at post 1, plateau / wash-out", _rng(s.peak_other)),
        ("tumor kinds", _kinds(s)),
        (f"tumor equivalent diameter (`{config.name}`)", _rng(config.tumor_diameter_mm, "mm", digits=1)),
        ("diameter distribution in that range", f"Beta({s.diameter_beta[0]:g}, {s.diameter_beta[1]:g})"),
        *_profiles(config),
        ("Rician noise sigma (× pre-contrast 99.5th percentile)", _rng(config.noise_range, digits=3)),
        ("bias field strength (log amplitude)", _rng(config.bias_strength)),
        ("stored orientations (NIfTI axis codes, share of cases)", _orientations(s)),
    ]


def site_b_markdown(size: str) -> str:
    """Markdown for a site-B README: what differs from site A at preset ``size``, as a table."""
    rows_a = _rows(phantom_config(size, "A"))
    rows_b = _rows(phantom_config(size, "B"))
    table = "\n".join(f"| {name} | {a} | {b} |" for (name, a), (_, b) in zip(rows_a, rows_b, strict=True))
    return f"""## Site B: an external test family

These cases are **site B**, an independent test set: segmenters and generators are never trained or
tuned on it. It is built by the same program as site A (the default `--site A`, the data everything
is trained on) with its own random draws, and differs from it in anatomy, kinetics, tumors and
acquisition:

| | site A | site B |
|---|---|---|
{table}

Tumor kinds ({", ".join(TUMOR_KINDS)}): `rim` is an {" or ".join(RIM_SHAPES)} mass with a bright rim
({RIM_NECROTIC_P:.0%} of those of {RIM_NECROTIC_MM:g} mm or more have a non-enhancing necrotic core, labelled
in the JSON as `enhancement: necrotic`), `lobulated` a lobulated mass, `non_mass` non-mass-like enhancement:
6–10 small clumped foci spread over a segment that narrows toward the nipple (the segment is about as long
as the drawn size; the foci's equivalent diameter is {NON_MASS_EQUIVALENT_FRACTION:g} × the drawn size).
Each case's `patient_info_files/<id>.json` records `phantom.site` (`"B"`) and
`phantom.tumor_shape_kind` (null for healthy cases); `imaging_data.site` is the site-B profile's label.
A JSON without `phantom.site` is a site-A case. Every affine is exact: `synbt data prepare`
reorients the cases to RAS.
"""
