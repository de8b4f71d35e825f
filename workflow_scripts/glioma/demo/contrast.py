"""Tissue intensities of the four MRI contrasts and the atlas-space images built from them.

Intensities are relative (white matter on T1w about 0.85) and follow the usual ordering:
T1w WM > GM > CSF with bright fat and marrow, dark bone; T2w CSF > GM > WM; FLAIR GM > WM
with CSF suppressed; T1c is T1w plus gadolinium in vessels, dura and enhancing tumour.
"""

from __future__ import annotations

import numpy as np

from glioma.constants import SEQUENCES

#: Relative signal of each tissue per sequence.
TISSUE_SIGNAL: dict[str, dict[str, float]] = {
    "t1w": {
        "csf": 0.22,
        "gm": 0.58,
        "wm": 0.86,
        "vessel": 0.30,
        "dura": 0.35,
        "bone": 0.04,
        "marrow": 0.75,
        "muscle": 0.45,
        "fat": 1.00,
    },
    "t2w": {
        "csf": 1.00,
        "gm": 0.55,
        "wm": 0.40,
        "vessel": 0.08,
        "dura": 0.25,
        "bone": 0.03,
        "marrow": 0.50,
        "muscle": 0.28,
        "fat": 0.70,
    },
    "flair": {
        "csf": 0.09,
        "gm": 0.62,
        "wm": 0.46,
        "vessel": 0.08,
        "dura": 0.30,
        "bone": 0.03,
        "marrow": 0.50,
        "muscle": 0.30,
        "fat": 0.72,
    },
}
#: Gadolinium shortens T1 in vessels and dura (and in tumour, see ``tumour.py``).
T1C_ENHANCEMENT: dict[str, float] = {"vessel": 0.85, "dura": 0.55}
TISSUE_SIGNAL["t1c"] = {
    tissue: value + T1C_ENHANCEMENT.get(tissue, 0.0)
    for tissue, value in TISSUE_SIGNAL["t1w"].items()
}

#: Relative signal of tumour compartments (before heterogeneity and the class's signs).
LESION_SIGNAL: dict[str, dict[str, float]] = {
    # Vasogenic oedema: water raises T2 and FLAIR, lowers T1.
    "oedema": {"t1w": 0.52, "t1c": 0.52, "t2w": 0.80, "flair": 0.95},
    # Solid, non-enhancing tumour.
    "solid": {"t1w": 0.46, "t1c": 0.46, "t2w": 0.88, "flair": 0.88},
    # Necrosis: fluid-like on T1 and T2 but not suppressed on FLAIR (proteinaceous).
    "necrosis": {"t1w": 0.22, "t1c": 0.22, "t2w": 0.98, "flair": 0.74},
    # Calcification: few mobile protons, dark on every sequence here.
    "calcification": {"t1w": 0.16, "t1c": 0.16, "t2w": 0.10, "flair": 0.14},
}


def jitter_signal(rng: np.random.Generator, spread: float = 0.05) -> dict[str, dict[str, float]]:
    """Return the tissue table with every entry scaled by its own factor in [1-spread, 1+spread].

    Patients differ a little in relaxation times; this keeps tissue ordering intact.
    """
    return {
        seq: {
            tissue: value * float(rng.uniform(1 - spread, 1 + spread))
            for tissue, value in TISSUE_SIGNAL[seq].items()
        }
        for seq in SEQUENCES
    }


def tissue_image(fractions: dict[str, np.ndarray], signal: dict[str, float]) -> np.ndarray:
    """Mix tissue signals by their voxel fractions (linear partial-volume model).

    Args:
        fractions: tissue -> fraction array, all the same shape.
        signal: tissue -> relative signal of one sequence.

    Returns:
        float32 image of the same shape.
    """
    image = np.zeros(next(iter(fractions.values())).shape, np.float32)
    for tissue, fraction in fractions.items():
        image += np.float32(signal[tissue]) * fraction
    return image
