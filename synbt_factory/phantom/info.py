"""The patient info JSON of a phantom case, in MAMA-MIA's layout.

Keys follow the public dataset's ``patient_info_files/<id>.json``: ``patient_id``,
``clinical_data`` (age, menopausal status, ACR breast density), ``primary_lesion`` (with
``breast_coordinates``) and ``imaging_data`` (bilateral, dataset, site, scanner, field strength,
sequence timing, acquisition times ...). A ``phantom`` block records how the case was generated.

``breast_coordinates`` use MAMA-MIA's convention as read by the challenge's own code, which slices
the SimpleITK array (axes z, y, x of ITK = reversed NIfTI axes) as ``[x_min:x_max, y_min:y_max,
z_min:z_max]``: ``x`` indexes NIfTI axis 2 (slices), ``y`` axis 1, ``z`` axis 0 of the stored
image; ``*_min`` inclusive, ``*_max`` exclusive.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["breast_coordinates", "sample_clinical", "BREAST_COORDINATES_CONVENTION"]

BREAST_COORDINATES_CONVENTION = (
    "voxel indices of the stored image in MAMA-MIA's convention: x = NIfTI axis 2, y = axis 1, "
    "z = axis 0 (the SimpleITK array order); min inclusive, max exclusive"
)


def breast_coordinates(mask: np.ndarray) -> dict[str, int]:
    """Bounding box of a stored-grid mask in MAMA-MIA's ``breast_coordinates`` convention.

    Args:
        mask: (I, J, K) array in stored voxel order (NIfTI axes); non-zero = breast.

    Returns:
        ``{"x_min", "x_max", "y_min", "y_max", "z_min", "z_max"}`` with x ↔ axis 2, y ↔ axis 1,
        z ↔ axis 0; the whole volume when ``mask`` is empty.
    """
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3-D, got shape {mask.shape}")
    nonzero = np.argwhere(mask)
    if len(nonzero) == 0:
        lo, hi = np.zeros(3, dtype=int), np.array(mask.shape)
    else:
        lo, hi = nonzero.min(axis=0), nonzero.max(axis=0) + 1
    return {
        "x_min": int(lo[2]),
        "x_max": int(hi[2]),
        "y_min": int(lo[1]),
        "y_max": int(hi[1]),
        "z_min": int(lo[0]),
        "z_max": int(hi[0]),
    }


def sample_clinical(rng: np.random.Generator) -> dict[str, Any]:
    """Age, menopausal status and ACR density (a–d), with density falling with age."""
    age = int(rng.integers(28, 78))
    if age < 46:
        status = "pre"
    elif age > 55:
        status = "post"
    else:
        status = str(rng.choice(["pre", "peri", "post"], p=[0.3, 0.3, 0.4]))
    probs = [0.05, 0.25, 0.45, 0.25] if age < 50 else [0.15, 0.45, 0.33, 0.07]
    density = str(rng.choice(["a", "b", "c", "d"], p=probs))
    return {"age": age, "menopausal_status": status, "breast_density": density}
