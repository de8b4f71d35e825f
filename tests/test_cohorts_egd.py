"""EGD sheet builder on a fixture copying the XNAT download: SUBJECTS/, METADATA/, metadata.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cohort_fixtures import egd_metadata_json, tiny_nifti

from glioma.cohorts import build_egd, write_sheet
from glioma.cohorts.__main__ import main
from glioma.errors import InputError
from glioma.samples import validate_sheet

FILES = ("T1", "T1GD", "T2", "FLAIR", "MASK")
#: subject -> metadata.json labels (IDH, 1p19q, Grade, Age, Sex); None = no metadata.json
JSON = {
    "EGD-0001": (0, -1, 4, 63.5, "M"),
    "EGD-0002": (1, 1, 2, 41, "F"),
    "EGD-0003": (1, 0, 3, 35, "M"),
    "EGD-0004": (-1, -1, -1, -1, ""),
    "EGD-0005": (1, -1, 2, 30, "F"),
    "EGD-0006": None,
    "EGD-0007": (0, 0, 4, 70, "M"),
    "EGD-0008": (1, 0, 3, 44, "F"),
}
#: METADATA tables (one row per subject): IDH, 1p19q, Grade and Age, Sex
TABLE = {
    "EGD-0001": ("0", "-1", "4", "63.5", "M"),
    "EGD-0002": ("1", "1", "2", "41", "F"),
    "EGD-0003": ("1", "0", "3", "35", "M"),
    "EGD-0004": ("-1", "-1", "-1", "-1", ""),
    "EGD-0005": ("1", "-1", "2", "30", "F"),
    "EGD-0006": ("1", "1", "3", "52", "F"),
    "EGD-0007": ("0", "0", "4", "70", "M"),
    "EGD-0008": ("0", "0", "3", "44", "F"),  # disagrees with its metadata.json (IDH 1)
}
EXPECTED = {
    "EGD-0001": ("wildtype", "", "4", "63.5", "M"),
    "EGD-0002": ("mutant", "codeleted", "2", "41", "F"),
    "EGD-0003": ("mutant", "intact", "3", "35", "M"),
    "EGD-0004": ("", "", "", "", ""),
    "EGD-0005": ("mutant", "", "2", "30", "F"),
    "EGD-0006": ("mutant", "codeleted", "3", "52", "F"),
    "EGD-0008": ("mutant", "intact", "3", "44", "F"),
}


def make_egd_download(root: Path) -> Path:
    """Build an EGD download with every hazard; return its folder."""
    for subject, values in JSON.items():
        folder = root / "SUBJECTS" / subject
        for name in FILES:
            if not (subject == "EGD-0007" and name == "T2"):  # EGD-0007 lacks T2
                tiny_nifti(folder / f"{name}.nii.gz", np.float32)
        if values is not None:
            (folder / "metadata.json").write_text(json.dumps(egd_metadata_json(*values)))
    metadata = root / "METADATA"
    tiny_nifti(metadata / "Brain_mask.nii.gz", np.float32)
    genetic = ["Subject,IDH,1p19q,Grade"] + [f"{s},{v[0]},{v[1]},{v[2]}" for s, v in TABLE.items()]
    (metadata / "Genetic_and_Histological_labels.csv").write_text("\n".join(genetic) + "\n")
    clinical = ["Subject,Age,Sex"] + [f"{s},{v[3]},{v[4]}" for s, v in TABLE.items()]
    (metadata / "Clinical_data.csv").write_text("\n".join(clinical) + "\n")
    return root


def _labels(sheet) -> dict[str, tuple[str, ...]]:
    return {r.patient: (r.idh, r.codeletion, r.grade, r.age, r.sex) for r in sheet.itertuples()}


def test_sheet_has_right_patients_labels_and_skips(tmp_path: Path) -> None:
    sheet, skipped = build_egd(make_egd_download(tmp_path / "EGD"))
    assert _labels(sheet) == EXPECTED  # EGD-0006 from the tables, EGD-0008 from its json
    assert set(sheet["cohort"]) == {"EGD"} and set(sheet["roi_on"]) == {"t1c"}
    row = sheet.set_index("patient").loc["EGD-0002"]
    assert (Path(row["t1w"]).name, Path(row["t1c"]).name) == ("T1.nii.gz", "T1GD.nii.gz")
    assert Path(row["roi"]).name == "MASK.nii.gz"
    assert list(skipped["patient"]) == ["EGD-0007"]
    assert "t2w" in skipped.loc[0, "reason"]


def test_written_sheet_passes_validation(tmp_path: Path) -> None:
    sheet, _ = build_egd(make_egd_download(tmp_path / "EGD"))
    write_sheet(sheet, tmp_path / "samples.tsv")
    result = validate_sheet(tmp_path / "samples.tsv")
    classes = dict(zip(result.included["patient"], result.included["class"], strict=True))
    assert classes == {
        "EGD-0001": "IDHwt",
        "EGD-0002": "IDHmut-codel",
        "EGD-0003": "IDHmut-intact",
        "EGD-0004": "",
        "EGD-0005": "",
        "EGD-0006": "IDHmut-codel",
        "EGD-0008": "IDHmut-intact",
    }


def test_labels_option_overrides_and_subjects_folder_works(tmp_path: Path) -> None:
    folder = make_egd_download(tmp_path / "EGD")
    override = tmp_path / "fixed.tsv"
    override.write_text("Subject\tIDH\t1p19q\nEGD-0008\t0\t-1\nEGD-0005\t1\t1\n")
    sheet, _ = build_egd(folder / "SUBJECTS", labels=override, cohort="Erasmus")
    labels = _labels(sheet)
    assert labels["EGD-0008"][:2] == ("wildtype", "intact")  # -1 does not erase a known value
    assert labels["EGD-0005"][:2] == ("mutant", "codeleted")
    assert labels["EGD-0006"] == EXPECTED["EGD-0006"]  # METADATA/ found beside SUBJECTS/
    assert set(sheet["cohort"]) == {"Erasmus"}


def test_bad_code_names_patient_column_and_file(tmp_path: Path) -> None:
    folder = make_egd_download(tmp_path / "EGD")
    path = folder / "SUBJECTS" / "EGD-0003" / "metadata.json"
    path.write_text(json.dumps(egd_metadata_json(2, 0, 3, 35, "M")))
    with pytest.raises(InputError) as err:
        build_egd(folder)
    message = str(err.value)
    assert "EGD-0003" in message and "'IDH'" in message and str(path) in message
    path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        build_egd(folder)


def test_cli(tmp_path: Path, capsys) -> None:
    folder = make_egd_download(tmp_path / "EGD")
    assert main(["egd", str(folder), "-o", str(tmp_path / "egd.tsv")]) == 0
    printed = capsys.readouterr().out
    assert "included 7 patients of EGD" in printed and "unlabelled 2" in printed
    assert "EGD-0007: missing t2w" in printed
