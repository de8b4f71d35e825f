"""One synthetic glioma per patient, whose look follows its molecular class's radiological signs.

Signs (each drawn with a strength, and sometimes absent, so classes overlap):

* ``IDHwt``: ring enhancement on T1c around a necrotic core, large FLAIR oedema, anywhere in
  the hemispheres.
* ``IDHmut-codel``: frontal and cortical, heterogeneous, calcification foci (dark on T1 and T2),
  little or no enhancement, little oedema.
* ``IDHmut-intact``: homogeneous T2 signal with a T2-FLAIR mismatch (bright T2, darker FLAIR
  centre with a bright rim), no enhancement, frontal or temporal white matter.

The tumour is built in atlas space on a box around it; ``lesion_image`` pastes its signal into
a sequence's atlas-space image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from glioma.demo.anatomy import Atlas
from glioma.demo.contrast import LESION_SIGNAL

COMPARTMENTS: tuple[str, ...] = ("oedema", "solid", "necrosis", "calcification")


@dataclass(frozen=True)
class Tumour:
    """A tumour on a box of the atlas grid.

    Attributes:
        centre: LPS centre in atlas space (mm).
        radius: mean semi-axis of the tumour proper (necrosis + solid), in mm.
        box: the slices of the atlas grid (z, y, x) the arrays below cover.
        occupancy: compartment -> fraction of each box voxel it fills.
        enhancement: T1c signal added by gadolinium on the box.
        modulation: sequence -> multiplicative texture of the solid compartment on the box.
        signs: the drawn sign strengths, recorded in the truth file.
    """

    centre: np.ndarray
    radius: float
    box: tuple[slice, slice, slice]
    occupancy: dict[str, np.ndarray]
    enhancement: np.ndarray
    modulation: dict[str, np.ndarray]
    signs: dict[str, float | str] = field(default_factory=dict)

    @property
    def lesion(self) -> np.ndarray:
        """Fraction of each box voxel that is tumour, necrosis or oedema (the ROI)."""
        return sum(self.occupancy.values())


def _region(atlas: Atlas, name: str) -> np.ndarray:
    """Return a boolean atlas mask of where a tumour of a given predilection may be centred."""
    x, y, z = (-atlas.coords[0], -atlas.coords[1], atlas.coords[2])  # LPS -> RAS reads easier
    depth, wm = atlas.depth, atlas.fractions["wm"]
    parenchyma = atlas.fractions["gm"] + wm
    if name == "frontal_cortex":
        return (y > 15) & (z > -5) & (depth > 7) & (depth < 16) & (parenchyma > 0.8)
    if name == "frontotemporal_wm":
        frontal = (y > 10) & (z > -5)
        temporal = (np.abs(x) > 28) & (y > -40) & (y < 15) & (z > -35) & (z < 5)
        return (frontal | temporal) & (depth > 10) & (depth < 25) & (wm > 0.5)
    if name == "hemisphere":
        return (np.abs(x) > 10) & (z > -25) & (depth > 12) & (depth < 45) & (wm > 0.4)
    raise ValueError(f"unknown tumour region {name!r}")


def _pick_centre(rng: np.random.Generator, atlas: Atlas, region: str) -> np.ndarray:
    """Draw a tumour centre (LPS mm) uniformly among the voxels of ``region``."""
    candidates = np.flatnonzero(_region(atlas, region))
    flat = candidates[rng.integers(len(candidates))]
    centre = np.array([c.flat[flat] for c in atlas.coords], dtype=float)
    return centre + rng.uniform(-0.5, 0.5, 3) * atlas.spacing


def _smooth_noise(rng: np.random.Generator, shape, sigma_mm: float, spacing: float) -> np.ndarray:
    """Gaussian random field of unit standard deviation, correlated over ``sigma_mm``."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_mm / spacing, mode="wrap")
    return (noise / max(noise.std(), 1e-6)).astype(np.float32)


def _inside(rho: np.ndarray, edge: float, radius: float, spacing: float) -> np.ndarray:
    """Soft indicator of ``rho < edge``, one voxel wide at the edge (partial volume)."""
    return np.clip((edge - rho) * radius / spacing + 0.5, 0.0, 1.0).astype(np.float32)


def draw_signs(rng: np.random.Generator, cls: str) -> dict[str, float | str]:
    """Draw the size, location and sign strengths of one tumour of class ``cls``."""
    u = rng.uniform
    if cls == "IDHwt":
        necrotic = u() < 0.85
        weak = u() < 0.15  # a minority of glioblastomas enhance faintly
        return {
            "region": "hemisphere",
            "radius_mm": u(14, 26),
            "oedema_extent": u(1.5, 2.2),
            "necrosis_extent": u(0.4, 0.7) if necrotic else 0.0,
            "enhancement": u(0.1, 0.3) if weak else u(0.45, 1.0),
            "enhancement_pattern": "rim" if necrotic else "patchy",
            "heterogeneity": u(0.05, 0.2),
            "calcifications": 0,
            "mismatch": 0.0,
        }
    if cls == "IDHmut-codel":
        return {
            "region": "frontal_cortex" if u() < 0.75 else "hemisphere",
            "radius_mm": u(12, 24),
            "oedema_extent": u(1.05, 1.35),
            "necrosis_extent": 0.0,
            "enhancement": u(0.1, 0.35) if u() < 0.3 else 0.0,
            "enhancement_pattern": "patchy",
            "heterogeneity": u(0.15, 0.35),
            "calcifications": int(rng.poisson(3.0)) if u() < 0.75 else 0,
            "mismatch": 0.0,
        }
    if cls == "IDHmut-intact":
        return {
            "region": "frontotemporal_wm" if u() < 0.75 else "hemisphere",
            "radius_mm": u(12, 24),
            "oedema_extent": u(1.05, 1.25),
            "necrosis_extent": 0.0,
            "enhancement": u(0.05, 0.2) if u() < 0.1 else 0.0,
            "enhancement_pattern": "patchy",
            "heterogeneity": u(0.02, 0.07),
            "calcifications": 0,
            "mismatch": u(0.4, 1.0) if u() < 0.85 else u(0.0, 0.3),
        }
    raise ValueError(f"unknown class {cls!r}")


def _box(atlas: Atlas, centre: np.ndarray, half_mm: float) -> tuple[slice, slice, slice]:
    """Slices (z, y, x) of the atlas voxels within ``half_mm`` of ``centre`` along each axis."""
    ref = atlas.reference
    index = np.array(ref.TransformPhysicalPointToContinuousIndex(centre.tolist()))
    half = half_mm / atlas.spacing
    lo = np.clip(np.floor(index - half), 0, None).astype(int)
    hi = np.minimum(np.ceil(index + half) + 1, ref.GetSize()).astype(int)
    return tuple(slice(lo[a], hi[a]) for a in (2, 1, 0))


def _calcifications(rng, count: int, solid: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Fraction of small calcified foci (1.5-3 mm radius) centred in solid tumour."""
    calc = np.zeros(solid.shape, np.float32)
    candidates = np.flatnonzero(solid > 0.9)
    for flat in rng.choice(candidates, size=min(count, len(candidates)), replace=False):
        distance = np.linalg.norm(points - points.reshape(-1, 3)[flat], axis=-1)
        calc = np.maximum(calc, np.clip(rng.uniform(1.5, 3.0) - distance + 0.5, 0, 1))
    return calc * solid


def _enhancement(rng, signs, rho, solid, rim_width, shape, spacing) -> np.ndarray:
    """T1c gain: a ring around the necrotic core, or patchy blobs in solid tumour."""
    strength = float(signs["enhancement"])
    if strength == 0:
        return np.zeros(shape, np.float32)
    patches = np.clip(0.6 + 0.4 * _smooth_noise(rng, shape, 3.0, spacing), 0, 1)
    if signs["enhancement_pattern"] == "rim":
        middle = 1.0 - rim_width / 2
        profile = np.exp(-(((rho - middle) / (rim_width / 2)) ** 2))
    else:
        profile = np.clip(_smooth_noise(rng, shape, 4.0, spacing) - 0.8, 0, 1)
    return (strength * profile * patches * solid).astype(np.float32)


def _modulation(rng, signs, rho, shape, radius, spacing) -> dict[str, np.ndarray]:
    """Texture of solid tumour per sequence, with the T2-FLAIR mismatch of IDHmut-intact."""
    texture = float(signs["heterogeneity"]) * _smooth_noise(rng, shape, 3.0, spacing)
    # Cyst-like, water-rich patches are bright on T2 and FLAIR and dark on T1.
    t2 = 1.0 + texture
    t1 = 1.0 - 0.5 * texture
    flair = 1.0 + texture
    mismatch = float(signs["mismatch"])
    if mismatch > 0:
        rim_width = rng.uniform(2.0, 4.0) / radius
        centre = np.clip((1.0 - rho) / rim_width, 0.0, 1.0)  # 0 at the rim, 1 inside it
        flair = flair * (1.0 - 0.6 * mismatch * centre)
        t2 = t2 * (1.0 + 0.08 * mismatch)
    return {"t1w": t1, "t1c": t1, "t2w": t2, "flair": flair}


def make_tumour(rng: np.random.Generator, atlas: Atlas, cls: str) -> Tumour:
    """Draw one tumour of class ``cls`` in atlas space.

    Args:
        rng: the patient's random generator.
        atlas: the head the tumour grows in.
        cls: one of ``glioma.constants.CLASSES``.

    Returns:
        The tumour with its compartments on a box of the atlas grid.
    """
    signs = draw_signs(rng, cls)
    radius = float(signs["radius_mm"])
    centre = _pick_centre(rng, atlas, str(signs["region"]))
    semi_axes = radius * rng.uniform(0.8, 1.2, 3)
    rotation = Rotation.random(random_state=rng).as_matrix()
    extent = float(signs["oedema_extent"])
    box = _box(atlas, centre, extent * semi_axes.max() * 1.3 + 2 * atlas.spacing)
    points = np.stack([c[box] for c in atlas.coords], axis=-1) - centre
    shape, spacing = points.shape[:3], atlas.spacing
    rho = np.linalg.norm(points @ rotation.T / semi_axes, axis=-1)
    rho_tumour = rho * (1 + 0.12 * _smooth_noise(rng, shape, 6.0, spacing))
    rho_oedema = rho * (1 + 0.2 * _smooth_noise(rng, shape, 5.0, spacing))

    brain = atlas.brain[box]
    tumour = _inside(rho_tumour, 1.0, radius, spacing) * brain
    necrosis = _inside(rho_tumour, float(signs["necrosis_extent"]), radius, spacing) * brain
    solid_all = np.clip(tumour - necrosis, 0, 1)
    calc = _calcifications(rng, int(signs["calcifications"]), solid_all, points)
    # Oedema follows white matter tracts and spares CSF.
    tracts = atlas.fractions["wm"][box] + 0.5 * atlas.fractions["gm"][box]
    oedema = _inside(rho_oedema, extent, radius, spacing) * tracts * (1 - tumour)
    rim = max(1.0 - float(signs["necrosis_extent"]), 0.15)
    occupancy = {
        "oedema": np.clip(oedema, 0, 1).astype(np.float32),
        "solid": np.clip(solid_all - calc, 0, 1).astype(np.float32),
        "necrosis": necrosis.astype(np.float32),
        "calcification": calc.astype(np.float32),
    }
    return Tumour(
        centre=centre,
        radius=radius * float(np.mean(semi_axes / radius)),
        box=box,
        occupancy=occupancy,
        enhancement=_enhancement(rng, signs, rho_tumour, solid_all, rim, shape, spacing),
        modulation=_modulation(rng, signs, rho_tumour, shape, radius, spacing),
        signs=signs,
    )


def lesion_image(tumour: Tumour, seq: str, image: np.ndarray) -> np.ndarray:
    """Return a copy of atlas-space ``image`` of sequence ``seq`` with the tumour painted in."""
    out = image.copy()
    normal = out[tumour.box]
    lesion = np.clip(tumour.lesion, 0, 1)
    signal = np.zeros_like(normal)
    for name in COMPARTMENTS:
        value = np.float32(LESION_SIGNAL[name][seq]) * tumour.occupancy[name]
        signal += value * tumour.modulation[seq] if name == "solid" else value
    if seq == "t1c":
        signal += tumour.enhancement
    out[tumour.box] = (1 - lesion) * normal + signal
    return out
