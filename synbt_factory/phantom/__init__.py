"""Procedural breast DCE-MRI phantom, written in the public MAMA-MIA dataset's exact layout.

The project's embedded default dataset: synthetic, not patient data. A case has a body with
chest wall, ribs, lungs and heart, two breasts with skin, fat, fibroglandular tissue (ACR
density a–d) and vessels, 0–2 irregular tumors (oval, lobulated, irregular, spiculated; rim
enhancement or a necrotic core), per-tissue contrast kinetics over 2–5 post-contrast phases,
partial-volume blur, a bias field and Rician noise, stored as int16 NIfTI with site-like
anisotropic spacing and RAS/LPS/sagittal orientations.

Public API::

    PRESETS["tiny" | "small" | "default"] -> PhantomConfig
    make_phantom_case(case_index, *, seed, config) -> PhantomCase        # in memory
    write_phantom(out_dir, *, n, seed=0, size="small", healthy_fraction=0.1, progress=None) -> ids
    write_preview(dataset_dir, png_path, *, case_ids=None, max_cases=4) -> png_path
"""

from synbt_factory.phantom.anatomy import CLASS_NAMES, Tissue
from synbt_factory.phantom.case import PhantomCase, make_phantom_case
from synbt_factory.phantom.presets import PRESETS, SITE_PROFILES, PhantomConfig, SiteProfile
from synbt_factory.phantom.preview import write_preview
from synbt_factory.phantom.writer import write_phantom

__all__ = [
    "CLASS_NAMES",
    "PRESETS",
    "SITE_PROFILES",
    "PhantomCase",
    "PhantomConfig",
    "SiteProfile",
    "Tissue",
    "make_phantom_case",
    "write_phantom",
    "write_preview",
]
