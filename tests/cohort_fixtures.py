"""Writers of public-cohort fixture files shared by the cohort tests.

Two kinds: small writers of each download's label tables, headers and DICOM series (used with
8-voxel placeholder volumes by the builder tests), and :func:`write_mixed_downloads`, which
renders demo patients (``glioma.demo``) at 4 mm into each cohort's layout, file names, grids and
conventions for a real workflow run. Each cohort's hazards stay in its own test file.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from glioma.constants import SEQUENCES
from glioma.demo import acquisition as acq
from glioma.demo.anatomy import load_atlas
from glioma.demo.cohort import cohort_scanner, demographics
from glioma.demo.patient import Patient, make_patient
from glioma.io import read_image, write_image

#: UCSF-PDGM-metadata_v2.csv / _v5.csv header, as TCIA ships it.
UCSF_HEADER = [
    "ID", "Sex", "Age at MRI", "WHO CNS Grade", "Final pathologic diagnosis (WHO 2021)",
    "MGMT status", "MGMT index", "1p/19q", "IDH", "1-dead 0-alive", "OS", "EOR",
    "Biopsy prior to imaging", "BraTS21 ID", "BraTS21 Segmentation Cohort", "BraTS21 MGMT Cohort",
]  # fmt: skip
#: Pan-glioma table header as R writes it (TCGAbiolinks) and as the paper's Table S1 prints it.
R_HEADER = ["Case", "Study", "Grade", "Age..years.at.diagnosis.", "Gender", "IDH.status",
            "X1p.19q.codeletion", "IDH.codel.subtype"]  # fmt: skip
PAPER_HEADER = ["Case", "Study", "Grade", "Age (years at diagnosis)", "Gender", "IDH status",
                "1p/19q codeletion", "IDH/codel subtype"]  # fmt: skip
#: Identifiers written into DICOM headers; none may reach a workflow output.
PATIENT_NAME = "ZZFAKEPATIENT^QQHIDDEN"
PATIENT_ID = "PID-7319-SECRET"
SECRETS = (b"ZZFAKEPATIENT", b"QQHIDDEN", PATIENT_ID.encode())


def tiny_nifti(path: Path, dtype: type = np.int16) -> None:
    """Write an 8x8x8 volume of ones (1 mm) to ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((8, 8, 8), dtype)), str(path))


def write_ucsf_metadata(path: Path, rows: Iterable[Sequence[str]]) -> Path:
    """Write a UCSF-PDGM metadata CSV with the real header (quoted diagnosis with commas).

    Args:
        path: the CSV to write.
        rows: (ID, Sex, Age at MRI, WHO CNS Grade, diagnosis, 1p/19q, IDH) per patient.
    """
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(UCSF_HEADER)
        for pid, sex, age, grade, diagnosis, codel, idh in rows:
            writer.writerow(
                [pid, sex, age, grade, diagnosis, "positive", "12", codel, idh, "0", "600",
                 "GTR", "No", "BraTS2021_00097", "Training", "Training"]
            )  # fmt: skip
    return path


def egd_metadata_json(idh: int, codel: int, grade: int, age: float, sex: str) -> dict:
    """An EGD subject's metadata.json content, with the sections EGD ships (-1 = unknown)."""
    return {
        "Clinical_data": {"Age": age, "Sex": sex},
        "Genetic_and_Histological_labels": {
            "IDH": idh, "1p19q": codel, "Grade": grade, "WHO_2016_Subtype": -1,
        },
        "Scan_characteristics": {"Manufacturer": "Philips Medical Systems", "Field": 3.0},
        "Segmentation_source": {"Observer": "Observer 1", "Original scan": "FLAIR"},
    }  # fmt: skip


def write_pan_glioma(
    path: Path, header: list[str], rows: Iterable[Sequence[str]], title: bool = False
) -> Path:
    """Write a pan-glioma table (Ceccarelli 2016), optionally under a title row as published.

    Args:
        path: the CSV to write.
        header: ``R_HEADER`` or ``PAPER_HEADER``.
        rows: (Case, Study, Grade, Age, Gender, IDH status, 1p/19q, IDH/codel subtype).
        title: put a one-field title row above the header, as the supplement's export has.
    """
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        if title:
            writer.writerow(["Table S1A. TCGA discovery dataset"])
        writer.writerow(header)
        writer.writerows(rows)
    return path


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix (determinant +1) about x, then y, then z, angles in degrees."""
    x, y, z = np.deg2rad([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _ds(values: Iterable[float]) -> str:
    """Format numbers as a DICOM decimal-string list (each at most 16 characters)."""
    return "\\".join(f"{v:.6f}".rstrip("0").rstrip(".") for v in values)


def write_dicom_series(
    image: sitk.Image, folder: Path, *, series: int = 1, description: str = "fake oblique T1"
) -> None:
    """Write an integer ``image`` as one MR DICOM file per slice, carrying ``PATIENT_NAME``.

    Slice files are named in reverse order of position, so a reader must sort by position.
    ``series`` numbers the series UID, so several series of one patient stay distinct.
    """
    folder.mkdir(parents=True)
    d = image.GetDirection()
    orientation = _ds([d[0], d[3], d[6], d[1], d[4], d[7]])  # row and column cosines
    uid = f"1.2.826.0.1.3680043.2.1125.9.{series}"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    depth = image.GetSize()[2]
    for k in range(depth):
        plane = image[:, :, k]
        tags = {
            "0010|0010": PATIENT_NAME,
            "0010|0020": PATIENT_ID,
            "0008|0060": "MR",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
            "0008|0018": f"{uid}.{k + 1}",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.9",
            "0020|000e": uid,
            "0020|0013": str(k + 1),
            "0020|0032": _ds(image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0037": orientation,
            "0018|0050": _ds([image.GetSpacing()[2]]),
            "0008|103e": description,
        }
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{depth - k:03d}.dcm"))
        writer.Execute(plane)


# --- Demo patients written in each cohort's layout, for a real workflow run -----------------

#: Voxel size of the rendered patients (mm): tiny volumes, real anatomy.
SPACING = 4.0
#: UCSF-PDGM's grid (240x240x155 at 1 mm, RAS as NIfTI stores it) at ``SPACING``.
UCSF_SIZE = (60, 60, 39)
_RAS = np.diag([-1.0, -1.0, 1.0])
UCSF_FILES = {"t1w": "T1", "t1c": "T1c", "t2w": "T2", "flair": "FLAIR", "roi": "tumor_segmentation"}
EGD_FILES = {"t1w": "T1", "t1c": "T1GD", "t2w": "T2", "flair": "FLAIR", "roi": "MASK"}
TCGA_FILES = {"t1w": "t1", "t1c": "t1Gd", "t2w": "t2", "flair": "flair",
              "roi": "GlistrBoost_ManuallyCorrected"}  # fmt: skip
_DIAGNOSES = {
    "IDHwt": "Glioblastoma, IDH-wildtype",
    "IDHmut-codel": "Oligodendroglioma, IDH-mutant, 1p/19q-codeleted",
    "IDHmut-intact": "Astrocytoma, IDH-mutant",
}
_SUBTYPES = {"IDHwt": "IDHwt", "IDHmut-codel": "IDHmut-codel", "IDHmut-intact": "IDHmut-non-codel"}
_STUDIES = {"LGG": "Brain Lower Grade Glioma", "GBM": "Glioblastoma multiforme"}


@dataclass(frozen=True)
class DemoCase:
    """One rendered demo patient and the labels its cohort's tables give it.

    Attributes:
        patient: the ID in the target cohort's naming (``UCSF-PDGM-0004``, ``EGD-0001``, ...).
        cls: the class the patient was rendered as.
        labels: idh, codeletion, grade, age, sex as a sheet holds them ("" = unknown).
        rendered: images on their native scanner grids, poses and true masks.
    """

    patient: str
    cls: str
    labels: dict[str, str]
    rendered: Patient


def render_case(
    patient: str, cls: str, *, site: int, seed: int, unknown: tuple[str, ...] = ()
) -> DemoCase:
    """Render a demo patient of class ``cls`` as demo site ``site`` scans it (see glioma.demo).

    ``unknown`` names labels (e.g. ``codeletion``) that the cohort's tables leave unknown.
    """
    rng = np.random.default_rng([seed, site, *patient.encode()])
    info = demographics(rng, cls)
    rendered = make_patient(rng, load_atlas(SPACING), cohort_scanner(seed, site), cls, SPACING)
    labels = {k: "" if k in unknown else str(info[k]) for k in ("idh", "codeletion", "grade")}
    labels |= {"age": f"{info['age']:g}", "sex": str(info["sex"])}
    return DemoCase(patient, cls, labels, rendered)


def native(case: DemoCase, column: str) -> sitk.Image:
    """A raw sequence on its scanner grid, or (``roi``) the lesion mask on the FLAIR grid."""
    p = case.rendered
    if column == "roi":
        return acq.to_image(p.roi, p.grids["flair"])
    return acq.to_image(p.images[column], p.grids[column])


def registered(
    case: DemoCase, grid: sitk.Image, world_from_grid: np.ndarray, brain: sitk.Image
) -> dict[str, sitk.Image]:
    """Every sequence (masked by ``brain``) and the ROI, resampled onto ``grid`` by true poses.

    This is what an archive that co-registers and skull-strips its scans ships.
    """
    out = {}
    for column in (*SEQUENCES, "roi"):
        pose = case.rendered.world_from_scanner["flair" if column == "roi" else column]
        move = acq.to_sitk_transform(np.linalg.inv(pose) @ world_from_grid)
        if column == "roi":
            kind, voxel = sitk.sitkNearestNeighbor, sitk.sitkUInt8
        else:
            kind, voxel = sitk.sitkLinear, sitk.sitkFloat32
        out[column] = sitk.Resample(native(case, column), grid, move, kind, 0, voxel)
        if column != "roi":
            out[column] = sitk.Mask(out[column], brain)
    return out


def _ucsf_grid(case: DemoCase) -> sitk.Image:
    """UCSF-PDGM's axis-aligned grid, centred on the T1c's field of view (T1c scanner space)."""
    t1c = case.rendered.grids["t1c"]
    centre = np.add(
        t1c.origin, t1c.direction @ (np.multiply(t1c.spacing, np.subtract(t1c.size, 1)) / 2)
    )
    grid = sitk.Image(list(UCSF_SIZE), sitk.sitkUInt8)
    grid.SetSpacing([SPACING] * 3)
    grid.SetDirection(_RAS.ravel().tolist())
    grid.SetOrigin((centre - _RAS @ (SPACING * (np.array(UCSF_SIZE) - 1) / 2)).tolist())
    return grid


def write_ucsf_pdgm(root: Path, cases: Sequence[DemoCase]) -> Path:
    """A UCSF-PDGM download: co-registered, skull-stripped volumes and the v5 metadata CSV.

    Returns:
        The download's top folder (the metadata CSV lies in it).
    """
    package = root / "PKG - UCSF-PDGM-v3" / "UCSF-PDGM-v3"
    rows = []
    for case in cases:
        grid = _ucsf_grid(case)
        brain = acq.to_image(case.rendered.brain_mask_t1c, case.rendered.grids["t1c"])
        brain = sitk.Resample(brain, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        images = registered(case, grid, case.rendered.world_from_scanner["t1c"], brain)
        for column, image in images.items():
            name = f"{case.patient}_{UCSF_FILES[column]}.nii.gz"
            write_image(image, package / f"{case.patient}_nifti" / name)
        labels = case.labels
        idh = {"wildtype": "wildtype", "mutant": "IDH1 p.R132H"}.get(labels["idh"], "unknown")
        codel = {"codeleted": "co-deletion", "intact": "intact"}.get(labels["codeletion"], "")
        short_id = re.sub(r"-0(\d{3})$", r"-\1", case.patient)  # the CSV has 3 digits
        diagnosis = _DIAGNOSES[case.cls]
        rows.append(
            (short_id, labels["sex"], labels["age"], labels["grade"], diagnosis, codel, idh)
        )
    write_ucsf_metadata(package.parent / "UCSF-PDGM-metadata_v5.csv", rows)
    return package.parent


def _code(value: str, codes: dict[str, int]) -> int:
    """EGD's coding of a label: its code, or -1 when unknown."""
    return codes.get(value, -1)


def write_egd(root: Path, cases: Sequence[DemoCase]) -> Path:
    """An EGD download: volumes in MNI152 space masked by the shared atlas brain mask.

    ``METADATA/Brain_mask.nii.gz`` is that mask; each subject has its ``metadata.json``.

    Returns:
        The download folder (holding ``SUBJECTS/`` and ``METADATA/``).
    """
    atlas = load_atlas(SPACING)
    brain = sitk.GetImageFromArray((atlas.brain >= 0.5).astype(np.uint8))
    brain.CopyInformation(atlas.reference)
    write_image(brain, root / "METADATA" / "Brain_mask.nii.gz")
    for case in cases:
        world_from_atlas = np.linalg.inv(case.rendered.atlas_from_world)
        folder = root / "SUBJECTS" / case.patient
        for column, image in registered(case, atlas.reference, world_from_atlas, brain).items():
            write_image(image, folder / f"{EGD_FILES[column]}.nii.gz")
        labels = case.labels
        metadata = egd_metadata_json(
            _code(labels["idh"], {"wildtype": 0, "mutant": 1}),
            _code(labels["codeletion"], {"intact": 0, "codeleted": 1}),
            int(labels["grade"] or -1),
            float(labels["age"] or -1),
            labels["sex"],
        )
        (folder / "metadata.json").write_text(json.dumps(metadata, indent=1))
    return root


def _pan_glioma_row(case: DemoCase, collection: str) -> tuple[str, ...]:
    """A case's row of the pan-glioma table, in ``R_HEADER`` order ("NA" = unknown)."""
    labels = case.labels
    known = labels["idh"] == "wildtype" or (labels["idh"] and labels["codeletion"])
    return (
        case.patient,
        _STUDIES[collection],
        f"G{labels['grade']}" if labels["grade"] else "NA",
        labels["age"] or "NA",
        {"M": "male", "F": "female"}.get(labels["sex"], "NA"),
        {"wildtype": "WT", "mutant": "Mutant"}.get(labels["idh"], "NA"),
        {"codeleted": "codel", "intact": "non-codel"}.get(labels["codeletion"], "NA"),
        _SUBTYPES[case.cls] if known else "NA",
    )


def write_brats_tcga(root: Path, cases: dict[str, Sequence[DemoCase]]) -> tuple[Path, Path]:
    """Raw scans (native grids, skull on) under BraTS-TCGA's names, and the pan-glioma table.

    Args:
        root: folder to write the LGG and GBM collection folders into.
        cases: collection (``LGG`` or ``GBM``) -> its cases.

    Returns:
        The download folder and the pan-glioma table (R's column names).
    """
    rows = []
    for collection, group in cases.items():
        top = root / f"Pre-operative_TCGA_{collection}_NIfTI_and_Segmentations"
        for case in group:
            for column, tag in TCGA_FILES.items():
                name = f"{case.patient}_1997.03.04_{tag}.nii.gz"
                write_image(native(case, column), top / case.patient / name)
            rows.append(_pan_glioma_row(case, collection))
    return root, write_pan_glioma(root / "pan_glioma.csv", R_HEADER, rows)


def write_dicom_cohort(root: Path, cohort: str, cases: Sequence[DemoCase]) -> Path:
    """Each sequence as a DICOM series folder carrying ``PATIENT_NAME``, the ROI as NIfTI.

    The ROI is written on the FLAIR series' grid as read back from DICOM, as a reader drawing
    it on that series would save it. Returns the hand-written sheet (paths relative to it).
    """
    rows = []
    for number, case in enumerate(cases):
        folder = root / case.patient
        for k, seq in enumerate(SEQUENCES):
            image = sitk.Cast(native(case, seq), sitk.sitkInt16)  # DICOM stores integers
            write_dicom_series(image, folder / seq, series=10 * number + k, description=seq)
        roi = sitk.GetImageFromArray(case.rendered.roi)
        roi.CopyInformation(read_image(folder / "flair"))
        write_image(roi, folder / "roi.nii.gz")
        paths = {seq: f"{case.patient}/{seq}" for seq in SEQUENCES}
        paths["roi"] = f"{case.patient}/roi.nii.gz"
        rows.append({"patient": case.patient, "cohort": cohort, **paths, "roi_on": "flair"})
        rows[-1].update(case.labels)
    sheet = root / "samples.tsv"
    pd.DataFrame(rows).to_csv(sheet, sep="\t", index=False)
    return sheet
