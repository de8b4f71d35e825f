"""A mixed run: UCSF-PDGM, EGD, BraTS-TCGA and a DICOM cohort, from their downloads to the shards.

Demo patients at 4 mm are written in each cohort's layout (``cohort_fixtures``): UCSF-PDGM and
EGD co-registered and skull-stripped, BraTS-TCGA raw (native grids, skull on) under its file
names, and a cohort of DICOM series folders (oblique, a fake patient name in every header) with
a hand-written sheet. ``python -m glioma.cohorts`` builds each sheet and merges them; one
workflow run with per-cohort settings (UCSF-PDGM and EGD skip registration and brain
extraction, the others take the full chain) goes as far as every cohort's shards.
"""

from __future__ import annotations

import gzip
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import SimpleITK as sitk
from cohort_fixtures import (
    SECRETS,
    DemoCase,
    render_case,
    write_brats_tcga,
    write_dicom_cohort,
    write_egd,
    write_ucsf_pdgm,
)
from conftest import run_snakemake, write_config

from glioma.cohorts.__main__ import main
from glioma.constants import CLASSES
from glioma.demo import acquisition as acq
from glioma.io import read_image
from glioma.preprocess.register import same_grid

pytestmark = pytest.mark.slow

SEED = 11
DICOM = "TCIA-DICOM"
#: cohort -> (demo site, [(patient, rendered class, labels its tables leave unknown, class)])
PLAN: dict[str, tuple[int, list[tuple[str, str, tuple[str, ...], str]]]] = {
    "UCSF-PDGM": (2, [("UCSF-PDGM-0004", "IDHwt", (), "IDHwt"),
                      ("UCSF-PDGM-0010", "IDHmut-codel", (), "IDHmut-codel")]),
    "EGD": (3, [("EGD-0001", "IDHmut-intact", (), "IDHmut-intact"),
                ("EGD-0002", "IDHmut-codel", ("codeletion",), "")]),  # 1p19q -1: unlabelled
    "TCGA-LGG": (0, [("TCGA-CS-4941", "IDHmut-codel", (), "IDHmut-codel")]),
    "TCGA-GBM": (0, [("TCGA-02-0006", "IDHwt", (), "IDHwt")]),
    DICOM: (1, [("DCM-001", "IDHmut-intact", (), "IDHmut-intact")]),
}  # fmt: skip
SKIP = {"registration": "none", "brain_extraction": "none"}
FULL = {"registration": "Rigid", "brain_extraction": "deepbet"}
PER_COHORT = {"UCSF-PDGM": SKIP, "EGD": SKIP, "TCGA-LGG": FULL, "TCGA-GBM": FULL, DICOM: FULL}
MOVING = ("t1w", "t2w", "flair")


@dataclass(frozen=True)
class MixedRun:
    """The finished run: its folder, the merged sheet and the cases per cohort."""

    workdir: Path
    sheet: Path
    cases: dict[str, list[DemoCase]]


def _build_sheets(data: Path, cases: dict[str, list[DemoCase]]) -> Path:
    """Write every download, build its sheet with the CLI and merge them; return the sheet."""
    ucsf = write_ucsf_pdgm(data / "UCSF-PDGM", cases["UCSF-PDGM"])
    egd = write_egd(data / "EGD", cases["EGD"])
    tcga, table = write_brats_tcga(
        data / "TCGA", {"LGG": cases["TCGA-LGG"], "GBM": cases["TCGA-GBM"]}
    )
    dicom_sheet = write_dicom_cohort(data / "DICOM", DICOM, cases[DICOM])
    sheets = data / "sheets"
    assert main(["ucsf-pdgm", str(ucsf), "-o", str(sheets / "ucsf.tsv")]) == 0
    assert main(["egd", str(egd), "-o", str(sheets / "egd.tsv")]) == 0
    tcga_args = ["brats-tcga", str(tcga), "--labels", str(table), "-o", str(sheets / "tcga.tsv")]
    assert main(tcga_args) == 0
    parts = [str(sheets / name) for name in ("ucsf.tsv", "egd.tsv", "tcga.tsv")]
    assert main(["merge", *parts, str(dicom_sheet), "-o", str(data / "samples.tsv")]) == 0
    return data / "samples.tsv"


@pytest.fixture(scope="session")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> MixedRun:
    """Fixtures of all four kinds, built, merged and run up to the shards once."""
    cases = {
        cohort: [render_case(p, c, site=site, seed=SEED, unknown=u) for p, c, u, _ in rows]
        for cohort, (site, rows) in PLAN.items()
    }
    sheet = _build_sheets(tmp_path_factory.mktemp("mixed_data"), cases)
    workdir = tmp_path_factory.mktemp("mixed_run")
    write_config(workdir, sheet, preprocess={"per_cohort": PER_COHORT})
    run = run_snakemake(workdir, *(f"results/shards/{cohort}" for cohort in PLAN))
    assert run.returncode == 0, (run.stdout + run.stderr)[-8000:]
    return MixedRun(workdir, sheet, cases)


def test_merged_sheet_holds_every_cohort(mixed_run: MixedRun) -> None:
    sheet = pd.read_csv(mixed_run.sheet, sep="\t", dtype=str, keep_default_na=False)
    expected = {(cohort, row[0]) for cohort, (_, rows) in PLAN.items() for row in rows}
    assert set(zip(sheet["cohort"], sheet["patient"], strict=True)) == expected
    assert "\t/" not in mixed_run.sheet.read_text()  # all images below it: relative paths
    dicom = sheet[sheet["cohort"] == DICOM]
    assert all((mixed_run.sheet.parent / p).is_dir() for p in dicom["t1c"])  # series folders
    # every label survived its cohort's own table format (CSV text, JSON codes, TCGA terms)
    rows = sheet.set_index("patient")
    for case in (case for cases in mixed_run.cases.values() for case in cases):
        assert rows.loc[case.patient, list(case.labels)].to_dict() == case.labels, case.patient


def test_every_cohort_reaches_its_shards_with_patients_and_classes(mixed_run: MixedRun) -> None:
    for cohort, (_, rows) in PLAN.items():
        folder = mixed_run.workdir / "results" / "shards" / cohort
        assert sorted(folder.glob("part-*.parquet")), f"no shard for {cohort}"
        table = pq.read_table(folder, columns=["patient", "cohort", "class", "label"])
        frame = table.to_pandas()
        assert set(frame["cohort"]) == {cohort}
        got = frame.groupby("patient")["class"].agg(lambda c: "|".join(sorted(set(c))))
        assert got.to_dict() == {patient: cls for patient, _, _, cls in rows}, cohort
        labels = [CLASSES.index(c) if c else -1 for c in frame["class"]]
        assert frame["label"].tolist() == labels


def _patient_logs(workdir: Path, cohort: str, patient: str) -> str:
    """Every rule log of one patient, joined."""
    paths = sorted((workdir / "logs").glob(f"*/{cohort}/{patient}.log"))
    return "\n".join(p.read_text() for p in paths)


def _largest_shift_mm(mat: Path, grid: sitk.Image) -> float:
    """Largest displacement (mm) a transform file gives the corners of ``grid``."""
    transform = sitk.ReadTransform(str(mat))
    shifts = []
    for corner in np.ndindex(2, 2, 2):
        index = [c * (n - 1) for c, n in zip(corner, grid.GetSize(), strict=True)]
        point = np.array(grid.TransformIndexToPhysicalPoint(index))
        shifts.append(np.linalg.norm(np.array(transform.TransformPoint(point)) - point))
    return float(max(shifts))


def _nonzero(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(read_image(path)) != 0


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def _true_brain(case: DemoCase, grid: sitk.Image) -> np.ndarray:
    """The demo's true brain (on its native T1c grid) on ``grid``."""
    brain = acq.to_image(case.rendered.brain_mask_t1c, case.rendered.grids["t1c"])
    brain = sitk.Resample(brain, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(brain) != 0


def test_per_cohort_settings_choose_each_cohorts_path(mixed_run: MixedRun) -> None:
    sheet = pd.read_csv(mixed_run.sheet, sep="\t", dtype=str, keep_default_na=False)
    shipped_t1w = dict(zip(sheet["patient"], sheet["t1w"], strict=True))
    for cohort, cases in mixed_run.cases.items():
        skip = PER_COHORT[cohort] == SKIP
        for case in cases:
            where = f"{cohort}/{case.patient}"
            logs = _patient_logs(mixed_run.workdir, cohort, case.patient)
            assert f"registering t1w to t1c ({'none' if skip else 'Rigid'})" in logs, where
            assert f"{'none' if skip else 'deepbet'} brain mask" in logs, where
            registered = mixed_run.workdir / "results" / "registered" / where
            t1c = read_image(registered / "t1c.nii.gz")
            shift = max(
                _largest_shift_mm(registered / "transforms" / f"{s}_to_t1c.mat", t1c)
                for s in MOVING
            )
            mask = _nonzero(mixed_run.workdir / "results" / "brain" / where / "brain_mask.nii.gz")
            if skip:
                assert shift < 1e-6, where  # the identity of record: no fit
                # the mask is the archive's own skull strip: the non-zero voxels it shipped
                shipped = _nonzero(mixed_run.sheet.parent / shipped_t1w[case.patient])
                assert _dice(mask, shipped) > 0.95, where
            else:
                assert shift > 1.0, where  # a fit that undid the demo's head motion
                assert _dice(mask, _nonzero(registered / "t1w.nii.gz")) < 0.6, where
                assert _dice(mask, _true_brain(case, t1c)) > 0.9, where  # deepbet found it


def test_dicom_geometry_survives_preprocessing(mixed_run: MixedRun) -> None:
    data = mixed_run.sheet.parent
    for case in mixed_run.cases[DICOM]:
        series = read_image(data / "DICOM" / case.patient / "t1c")
        direction = np.reshape(series.GetDirection(), (3, 3))
        assert not np.allclose(np.abs(direction), np.eye(3), atol=0.05)  # oblique
        out = read_image(
            mixed_run.workdir / "results/preprocessed" / DICOM / case.patient / "t1c.nii.gz"
        )
        assert same_grid(out, series)


def _readable_bytes(path: Path) -> list[bytes]:
    """A file's bytes, and what it holds decompressed (gzip, zip/npz members, Parquet text)."""
    data = path.read_bytes()
    parts = [data]
    if data[:2] == b"\x1f\x8b":
        parts.append(gzip.decompress(data))
    elif zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            parts += [archive.read(name) for name in archive.namelist()]
    elif path.suffix == ".parquet":
        table = pq.read_table(path)
        parts.append(str(table.schema.metadata).encode())
        for column in table.column_names:
            kind = table.schema.field(column).type
            if pa.types.is_string(kind) or pa.types.is_large_string(kind):
                parts.append("\n".join(map(str, table[column].to_pylist())).encode())
    return parts


def test_no_dicom_identifier_reaches_any_output(mixed_run: MixedRun) -> None:
    series = mixed_run.sheet.parent / "DICOM" / "DCM-001" / "flair"
    assert all(SECRETS[0] in f.read_bytes() for f in series.iterdir())  # else nothing is shown
    checked = 0
    for top in ("results", "logs", ".snakemake"):
        for path in sorted((mixed_run.workdir / top).rglob("*")):
            if not path.is_file():
                continue
            checked += 1
            for part in _readable_bytes(path):
                for secret in SECRETS:
                    assert secret not in part, f"{secret!r} found in {path}"
    assert checked > 50
