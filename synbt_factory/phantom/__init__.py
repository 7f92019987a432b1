"""Procedural breast DCE-MRI phantom, written in the public MAMA-MIA dataset's exact layout.

The project's embedded default dataset: synthetic, not patient data. A case has a body with
chest wall, ribs, lungs and heart, two breasts with skin, fat, fibroglandular tissue (ACR
density a–d) and vessels, 0–2 irregular tumors (oval, lobulated, irregular, spiculated; rim
enhancement or a necrotic core), per-tissue contrast kinetics over 2–5 post-contrast phases,
partial-volume blur, a bias field and Rician noise, stored as int16 NIfTI with site-like
anisotropic spacing and RAS/LPS/sagittal orientations.

Two sites: ``A`` (default) is the phantom everything trains on; ``B`` is an external test family
that segmenters and generators never see (other anatomy proportions, slower kinetics, mostly
non-fat-suppressed, more noise and bias, thicker slices, larger rim-enhancing, lobulated and
non-mass tumors, LPS/LAS/coronal storage; see :mod:`synbt_factory.phantom.sites`).

Public API::

    PRESETS["tiny" | "small" | "default"] -> PhantomConfig              # site A
    phantom_config(size, site="A") -> PhantomConfig                     # site A or B
    make_phantom_case(case_index, *, seed, config) -> PhantomCase        # in memory
    write_phantom(out_dir, *, n, seed=0, size="small", healthy_fraction=0.1, progress=None,
                  workers=1, site="A", test_fraction=None) -> ids
    write_preview(dataset_dir, png_path, *, case_ids=None, max_cases=4) -> png_path
"""

from synbt_factory.phantom.anatomy import CLASS_NAMES, Tissue
from synbt_factory.phantom.case import PhantomCase, make_phantom_case
from synbt_factory.phantom.presets import (
    PRESETS,
    SITE_B_PRESETS,
    SITE_PROFILES,
    PhantomConfig,
    SiteProfile,
    phantom_config,
)
from synbt_factory.phantom.preview import write_preview
from synbt_factory.phantom.sites import SITE_STYLES, SITES, SiteStyle
from synbt_factory.phantom.writer import write_phantom

__all__ = [
    "CLASS_NAMES",
    "PRESETS",
    "SITES",
    "SITE_B_PRESETS",
    "SITE_PROFILES",
    "SITE_STYLES",
    "PhantomCase",
    "PhantomConfig",
    "SiteProfile",
    "SiteStyle",
    "Tissue",
    "make_phantom_case",
    "phantom_config",
    "write_phantom",
    "write_preview",
]
