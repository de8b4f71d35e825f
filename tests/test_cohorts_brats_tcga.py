"""BraTS-TCGA sheet builder: TCIA folder layout and the Ceccarelli 2016 pan-glioma table."""

from __future__ import annotations

from pathlib import Path

import pytest
from cohort_fixtures import PAPER_HEADER, R_HEADER, tiny_nifti, write_pan_glioma

from glioma.cohorts import build_brats_tcga, write_sheet
from glioma.cohorts.__main__ import main
from glioma.errors import InputError
from glioma.samples import validate_sheet

SEQUENCES = ("t1", "t1Gd", "t2", "flair")
LGG = "Pre-operative_TCGA_LGG_NIfTI_and_Segmentations"
GBM = "Pre-operative_TCGA_GBM_NIfTI_and_Segmentations"
#: patient -> (collection folder, scan date, segmentation files, missing sequence)
SCANS = {
    "TCGA-CS-4941": (LGG, "1997.03.04", ("GlistrBoost", "GlistrBoost_ManuallyCorrected"), None),
    "TCGA-DU-5870": (LGG, "1995.08.14", ("GlistrBoost",), None),
    "TCGA-HT-7481": (LGG, "1998.05.31", ("GlistrBoost_ManuallyCorrected",), None),
    "TCGA-DU-7008": (LGG, "1996.02.01", ("GlistrBoost_ManuallyCorrected",), None),
    "TCGA-FG-A4MU": (LGG, "2001.10.10", ("GlistrBoost_ManuallyCorrected",), "flair"),
    "TCGA-02-0006": (GBM, "1996.08.23", ("GlistrBoost", "GlistrBoost_ManuallyCorrected"), None),
    "TCGA-08-0350": (GBM, "1998.12.15", ("_GlistrBoost", "GlistrBoost_ManuallyCorrected"), None),
    "TCGA-06-0190": (GBM, "2004.12.10", ("GlistrBoost",), None),
}
# Case, Study, Grade, Age, Gender, IDH.status, X1p.19q.codeletion, IDH.codel.subtype
PAN_GLIOMA = [
    ("TCGA-CS-4941", "Brain Lower Grade Glioma", "G2", "67", "male", "Mutant", "codel",
     "IDHmut-codel"),
    ("TCGA-DU-5870", "Brain Lower Grade Glioma", "G3", "38", "female", "Mutant", "non-codel",
     "IDHmut-non-codel"),
    ("TCGA-HT-7481", "Brain Lower Grade Glioma", "G2", "31", "male", "NA", "NA",
     "IDHmut-non-codel"),
    ("TCGA-DU-7008", "Brain Lower Grade Glioma", "G3", "NA", "NA", "Mutant", "NA", "NA"),
    ("TCGA-FG-A4MU", "Brain Lower Grade Glioma", "G2", "44", "female", "WT", "non-codel", "IDHwt"),
    ("TCGA-02-0006", "Glioblastoma multiforme", "G4", "56", "female", "WT", "non-codel", "IDHwt"),
    ("TCGA-08-0350", "Glioblastoma multiforme", "G4", "62", "male", "WT", "non-codel",
     "IDHmut-codel"),
]  # fmt: skip
EXPECTED = {  # patient -> cohort, idh, codeletion, grade, age, sex
    "TCGA-CS-4941": ("TCGA-LGG", "mutant", "codeleted", "2", "67", "M"),
    "TCGA-DU-5870": ("TCGA-LGG", "mutant", "intact", "3", "38", "F"),
    "TCGA-HT-7481": ("TCGA-LGG", "mutant", "intact", "2", "31", "M"),
    "TCGA-DU-7008": ("TCGA-LGG", "mutant", "", "3", "", ""),
    "TCGA-02-0006": ("TCGA-GBM", "wildtype", "intact", "4", "56", "F"),
    "TCGA-08-0350": ("TCGA-GBM", "", "", "4", "62", "M"),  # status and subtype disagree
    "TCGA-06-0190": ("TCGA-GBM", "", "", "", "", ""),  # not in the table
}


def make_tcga_download(root: Path) -> Path:
    """Build BraTS-TCGA LGG and GBM downloads side by side; return their parent folder."""
    for patient, (collection, date, segmentations, missing) in SCANS.items():
        folder = root / collection / patient
        for tag in SEQUENCES + segmentations:
            if tag != missing:
                tiny_nifti(folder / f"{patient}_{date}_{tag}.nii.gz")
    return root


def _labels(sheet) -> dict[str, tuple[str, ...]]:
    return {
        r.patient: (r.cohort, r.idh, r.codeletion, r.grade, r.age, r.sex)
        for r in sheet.itertuples()
    }


@pytest.mark.parametrize(("header", "title"), [(R_HEADER, False), (PAPER_HEADER, True)])
def test_sheet_has_right_patients_labels_and_skips(
    tmp_path: Path, header: list[str], title: bool
) -> None:
    folder = make_tcga_download(tmp_path / "tcga")
    table = write_pan_glioma(tmp_path / "pan_glioma.csv", header, PAN_GLIOMA, title)
    sheet, skipped = build_brats_tcga(folder, labels=table)
    assert _labels(sheet) == EXPECTED
    assert set(sheet["roi_on"]) == {"flair"}
    roi = {r.patient: Path(r.roi).name for r in sheet.itertuples()}
    assert roi["TCGA-CS-4941"].endswith("_GlistrBoost_ManuallyCorrected.nii.gz")
    assert roi["TCGA-08-0350"].endswith("_GlistrBoost_ManuallyCorrected.nii.gz")
    assert roi["TCGA-DU-5870"] == "TCGA-DU-5870_1995.08.14_GlistrBoost.nii.gz"
    t1 = {r.patient: Path(r.t1w).name for r in sheet.itertuples()}
    assert t1["TCGA-02-0006"] == "TCGA-02-0006_1996.08.23_t1.nii.gz"  # not t1Gd
    assert list(skipped["patient"]) == ["TCGA-FG-A4MU"]
    assert "flair" in skipped.loc[0, "reason"]


def test_written_sheet_passes_validation(tmp_path: Path) -> None:
    folder = make_tcga_download(tmp_path / "tcga")
    table = write_pan_glioma(tmp_path / "pan.csv", R_HEADER, PAN_GLIOMA)
    sheet, _ = build_brats_tcga(folder, labels=table)
    write_sheet(sheet, tmp_path / "samples.tsv")
    result = validate_sheet(tmp_path / "samples.tsv")
    classes = {
        p: c for p, c in zip(result.included["patient"], result.included["class"], strict=True) if c
    }
    assert classes == {
        "TCGA-CS-4941": "IDHmut-codel",
        "TCGA-DU-5870": "IDHmut-intact",
        "TCGA-HT-7481": "IDHmut-intact",
        "TCGA-02-0006": "IDHwt",
    }


def test_collection_from_study_column_or_cohort_option(tmp_path: Path) -> None:
    folder = tmp_path / "downloads"
    for tag in (*SEQUENCES, "GlistrBoost"):
        tiny_nifti(folder / "TCGA-CS-4941" / f"TCGA-CS-4941_1997.03.04_{tag}.nii.gz")
        tiny_nifti(folder / "TCGA-06-0190" / f"TCGA-06-0190_2004.12.10_{tag}.nii.gz")
    table = write_pan_glioma(tmp_path / "pan.csv", R_HEADER, PAN_GLIOMA)
    sheet, skipped = build_brats_tcga(folder, labels=table)
    assert list(sheet["cohort"]) == ["TCGA-LGG"]  # from the Study column
    assert list(skipped["patient"]) == ["TCGA-06-0190"]  # not in the table: LGG or GBM?
    assert "--cohort" in skipped.loc[0, "reason"]
    sheet, skipped = build_brats_tcga(folder, cohort="TCGA")
    assert list(sheet["cohort"]) == ["TCGA", "TCGA"] and skipped.empty
    assert set(sheet["idh"]) == {""}  # no table: unlabelled


def test_two_scan_dates_are_skipped_not_guessed(tmp_path: Path) -> None:
    folder = tmp_path / LGG / "TCGA-CS-4941"
    for date in ("1997.03.04", "1998.01.01"):
        for tag in (*SEQUENCES, "GlistrBoost"):
            tiny_nifti(folder / f"TCGA-CS-4941_{date}_{tag}.nii.gz")
    sheet, skipped = build_brats_tcga(tmp_path)
    assert sheet.empty and "several scan dates" in skipped.loc[0, "reason"]


def test_bad_value_names_patient_column_and_file(tmp_path: Path) -> None:
    folder = make_tcga_download(tmp_path / "tcga")
    table = write_pan_glioma(tmp_path / "pan.csv", R_HEADER, PAN_GLIOMA)
    table.write_text(table.read_text().replace("G3", "G7", 1))
    with pytest.raises(InputError) as err:
        build_brats_tcga(folder, labels=table)
    assert "TCGA-DU-5870" in str(err.value) and "'grade'" in str(err.value)
    assert str(table) in str(err.value)


def test_cli(tmp_path: Path, capsys) -> None:
    folder = make_tcga_download(tmp_path / "tcga")
    table = write_pan_glioma(tmp_path / "pan.csv", R_HEADER, PAN_GLIOMA)
    out = tmp_path / "tcga.tsv"
    assert main(["brats-tcga", str(folder), "--labels", str(table), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "included 4 patients of TCGA-LGG" in printed
    assert "included 3 patients of TCGA-GBM" in printed and "unlabelled 2" in printed
