"""UCSF-PDGM sheet builder on a fixture copying the TCIA layout, names and metadata header."""

from __future__ import annotations

from pathlib import Path

import pytest
from cohort_fixtures import tiny_nifti, write_ucsf_metadata

from glioma.cohorts import build_ucsf_pdgm, write_sheet
from glioma.cohorts.__main__ import main
from glioma.cohorts.ucsf_pdgm import normalise_id, parse_codeletion, parse_idh
from glioma.errors import InputError
from glioma.samples import validate_sheet

SEQUENCES = ("T1", "T1c", "T2", "FLAIR", "tumor_segmentation")
EXTRAS = ("T1_bias", "T1c_bias", "FLAIR_bias", "SWI", "ADC", "brain_segmentation")
GBM, ASTRO = "Glioblastoma, IDH-wildtype", "Astrocytoma, IDH-mutant"
OLIGO = "Oligodendroglioma, IDH-mutant, 1p/19q-codeleted"
# ID (3 digits, as in the CSV), Sex, Age, Grade, diagnosis, 1p/19q, IDH
METADATA = [
    ("UCSF-PDGM-004", "M", "66", "4", GBM, "", "wildtype"),
    ("UCSF-PDGM-010", "F", "40", "2", OLIGO, "co-deletion", "IDH1 p.R132H"),
    ("UCSF-PDGM-017", "F", "35", "3", ASTRO, "intact", "mutated (NOS)"),
    ("UCSF-PDGM-022", "M", "52", "3", ASTRO, "relative co-deletion", "IDH2 p.R172K"),
    ("UCSF-PDGM-030", "M", "29", "2", ASTRO, "unknown", "IDH1 p.Arg132His"),
    ("UCSF-PDGM-041", "F", "47", "2", ASTRO, "", "IDH1 p.R132C"),
    ("UCSF-PDGM-050", "M", "71", "4", GBM, "", "wildtype"),
    ("UCSF-PDGM-060", "F", "58", "4", GBM, "", "wildtype"),
    ("UCSF-PDGM-099", "M", "60", "4", GBM, "", "wildtype"),
    ("UCSF-PDGM-391", "M", "63", "4", GBM, "", "wildtype"),
    ("UCSF-PDGM-0391_FU016d", "M", "63", "4", GBM, "", "wildtype"),
]
#: patient -> (idh, codeletion, grade, age, sex) expected in the sheet
EXPECTED = {
    "UCSF-PDGM-0004": ("wildtype", "", "4", "66", "M"),
    "UCSF-PDGM-0010": ("mutant", "codeleted", "2", "40", "F"),
    "UCSF-PDGM-0017": ("mutant", "intact", "3", "35", "F"),
    "UCSF-PDGM-0022": ("mutant", "", "3", "52", "M"),
    "UCSF-PDGM-0030": ("mutant", "", "2", "29", "M"),
    "UCSF-PDGM-0041": ("mutant", "", "2", "47", "F"),
    "UCSF-PDGM-0060": ("wildtype", "", "4", "58", "F"),
    "UCSF-PDGM-0391": ("wildtype", "", "4", "63", "M"),
}
CLASSES = {
    "UCSF-PDGM-0004": "IDHwt",
    "UCSF-PDGM-0010": "IDHmut-codel",
    "UCSF-PDGM-0017": "IDHmut-intact",
    "UCSF-PDGM-0060": "IDHwt",
    "UCSF-PDGM-0391": "IDHwt",
}


def make_ucsf_download(root: Path) -> Path:
    """Build a UCSF-PDGM download with every hazard; return its top folder."""
    package = root / "PKG - UCSF-PDGM-v3" / "UCSF-PDGM-v3"
    folders = ["0004", "0010", "0017", "0022", "0030", "0041", "0391", "0391_FU016d"]
    for number in folders:
        for tag in SEQUENCES + EXTRAS:
            tiny_nifti(package / f"UCSF-PDGM-{number}_nifti" / f"UCSF-PDGM-{number}_{tag}.nii.gz")
    for tag in ("T1", "T1c", "T2", "tumor_segmentation", "FLAIR_bias"):  # no FLAIR
        tiny_nifti(package / "UCSF-PDGM-0050_nifti" / f"UCSF-PDGM-0050_{tag}.nii.gz")
    for tag in SEQUENCES:  # files with 3 digits inside a 4-digit folder
        tiny_nifti(package / "UCSF-PDGM-0060_nifti" / f"UCSF-PDGM-060_{tag}.nii.gz")
    write_ucsf_metadata(package.parent / "UCSF-PDGM-metadata_v5.csv", METADATA)
    stale = [("UCSF-PDGM-004", "F", "99", "2", GBM, "", "wildtype")]
    write_ucsf_metadata(package.parent / "UCSF-PDGM-metadata_v2.csv", stale)
    return package.parent


def test_sheet_has_right_patients_labels_and_skips(tmp_path: Path) -> None:
    folder = make_ucsf_download(tmp_path / "download")
    sheet, skipped = build_ucsf_pdgm(folder)
    assert list(sheet["patient"]) == sorted(EXPECTED)
    got = {r.patient: (r.idh, r.codeletion, r.grade, r.age, r.sex) for r in sheet.itertuples()}
    assert got == EXPECTED  # v5 is read, not the stale v2
    assert set(sheet["cohort"]) == {"UCSF-PDGM"} and set(sheet["roi_on"]) == {"t1c"}
    row = sheet.set_index("patient").loc["UCSF-PDGM-0060"]
    assert Path(row["t1c"]).name == "UCSF-PDGM-060_T1c.nii.gz"
    assert Path(row["t1w"]).name == "UCSF-PDGM-060_T1.nii.gz"  # not T1_bias or T1c
    assert Path(row["roi"]).name == "UCSF-PDGM-060_tumor_segmentation.nii.gz"
    reasons = dict(zip(skipped["patient"], skipped["reason"], strict=True))
    assert set(reasons) == {"UCSF-PDGM-0050", "UCSF-PDGM-0391_FU016d", "UCSF-PDGM-0099"}
    assert "flair" in reasons["UCSF-PDGM-0050"]
    follow_up = reasons["UCSF-PDGM-0391_FU016d"]
    assert "follow-up" in follow_up and "UCSF-PDGM-0391" in follow_up and "kept" in follow_up
    assert "no image folder" in reasons["UCSF-PDGM-0099"]


def test_written_sheet_passes_validation_with_classes(tmp_path: Path) -> None:
    folder = make_ucsf_download(tmp_path)
    sheet, _ = build_ucsf_pdgm(folder)
    out = tmp_path / "samples.tsv"
    write_sheet(sheet, out)
    assert "\t/" not in out.read_text()  # images below the sheet's folder are relative
    result = validate_sheet(out)
    classes = dict(zip(result.included["patient"], result.included["class"], strict=True))
    assert {p: c for p, c in classes.items() if c} == CLASSES
    unlabelled = set(result.exclusions.loc[result.exclusions["scope"] == "training", "patient"])
    assert unlabelled == {"UCSF-PDGM-0022", "UCSF-PDGM-0030", "UCSF-PDGM-0041"}


def test_legacy_follow_up_id_is_skipped(tmp_path: Path) -> None:
    for number in ("0433", "0315"):
        for tag in SEQUENCES:
            tiny_nifti(tmp_path / f"UCSF-PDGM-{number}_nifti" / f"UCSF-PDGM-{number}_{tag}.nii.gz")
    write_ucsf_metadata(
        tmp_path / "UCSF-PDGM-metadata_v2.csv",
        [
            ("UCSF-PDGM-433", "F", "50", "4", GBM, "", "wildtype"),
            ("UCSF-PDGM-315", "F", "50", "4", GBM, "", "wildtype"),
        ],
    )
    sheet, skipped = build_ucsf_pdgm(tmp_path)
    assert list(sheet["patient"]) == ["UCSF-PDGM-0433"]
    assert list(skipped["patient"]) == ["UCSF-PDGM-0315"]
    assert "UCSF-PDGM-0433" in skipped.loc[0, "reason"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("wildtype", "wildtype"), ("mutated (NOS)", "mutant"), ("IDH1 p.R132H", "mutant"),
     ("IDH2 p.Arg172Trp", "mutant"), ("unknown", ""), ("", "")],
)  # fmt: skip
def test_parse_idh(value: str, expected: str) -> None:
    assert parse_idh(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("intact", "intact"), ("co-deletion", "codeleted"), ("relative co-deletion", ""),
     ("unknown", ""), ("", "")],
)  # fmt: skip
def test_parse_codeletion_unknown_is_never_codeleted(value: str, expected: str) -> None:
    assert parse_codeletion(value) == expected


def test_normalise_id() -> None:
    assert normalise_id("UCSF-PDGM-004") == "UCSF-PDGM-0004"
    assert normalise_id("UCSF-PDGM-0391_FU016d") == "UCSF-PDGM-0391_FU016d"
    assert normalise_id("BraTS2021_00097") is None


def test_unmappable_value_names_patient_column_and_file(tmp_path: Path) -> None:
    folder = make_ucsf_download(tmp_path)
    metadata = folder / "UCSF-PDGM-metadata_v5.csv"
    metadata.write_text(metadata.read_text().replace("IDH1 p.R132C", "not mutated"))
    with pytest.raises(InputError) as err:
        build_ucsf_pdgm(folder)
    message = str(err.value)
    assert "UCSF-PDGM-0041" in message and "'idh'" in message and str(metadata) in message


def test_missing_metadata_is_an_error(tmp_path: Path) -> None:
    for tag in SEQUENCES:
        tiny_nifti(tmp_path / "UCSF-PDGM-0004_nifti" / f"UCSF-PDGM-0004_{tag}.nii.gz")
    with pytest.raises(InputError, match="--labels"):
        build_ucsf_pdgm(tmp_path)


def test_cli_writes_sheet_and_prints_summary(tmp_path: Path, capsys) -> None:
    folder = make_ucsf_download(tmp_path / "download")
    labels = folder / "UCSF-PDGM-metadata_v5.csv"
    out = tmp_path / "sheets" / "ucsf.tsv"
    assert main(["ucsf-pdgm", str(folder), "--labels", str(labels), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "included 8 patients of UCSF-PDGM" in printed and "IDHmut-codel 1" in printed
    assert "skipped 3 patients" in printed and "UCSF-PDGM-0391_FU016d: follow-up" in printed
    assert len(validate_sheet(out).included) == 8
    assert main(["ucsf-pdgm", str(tmp_path / "nowhere"), "-o", str(out)]) == 2
