"""Writing and merging built sheets, and the command line over all four cohorts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from cohort_fixtures import R_HEADER, write_pan_glioma
from test_cohorts_brats_tcga import PAN_GLIOMA, make_tcga_download
from test_cohorts_egd import make_egd_download
from test_cohorts_ucsf import make_ucsf_download

from glioma.cohorts import SHEET_COLUMNS, build_egd, merge_sheets, write_sheet
from glioma.cohorts.__main__ import main
from glioma.errors import InputError
from glioma.samples import validate_sheet


def test_write_sheet_relative_below_absolute_elsewhere(tmp_path: Path) -> None:
    sheet, _ = build_egd(make_egd_download(tmp_path / "data" / "EGD"))
    below = tmp_path / "data" / "samples.tsv"
    write_sheet(sheet, below)
    written = pd.read_csv(below, sep="\t", dtype=str, keep_default_na=False)
    assert list(written.columns) == list(SHEET_COLUMNS)
    assert written.loc[0, "t1w"] == "EGD/SUBJECTS/EGD-0001/T1.nii.gz"
    beside = tmp_path / "sheets" / "samples.tsv"
    write_sheet(sheet, beside)
    written = pd.read_csv(beside, sep="\t", dtype=str, keep_default_na=False)
    assert written.loc[0, "t1w"] == str(tmp_path / "data/EGD/SUBJECTS/EGD-0001/T1.nii.gz")
    assert sorted(p.name for p in beside.parent.iterdir()) == ["samples.tsv"]  # no temp left
    assert validate_sheet(below).included.equals(validate_sheet(beside).included)


def test_cli_builds_and_merges_all_four_cohorts(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    ucsf = make_ucsf_download(data / "UCSF-PDGM")
    egd = make_egd_download(data / "EGD")
    tcga = make_tcga_download(data / "TCGA")
    table = write_pan_glioma(data / "TCGA" / "pan_glioma.csv", R_HEADER, PAN_GLIOMA)
    sheets = tmp_path / "sheets"
    assert main(["ucsf-pdgm", str(ucsf), "-o", str(sheets / "ucsf.tsv")]) == 0
    assert main(["egd", str(egd), "-o", str(sheets / "egd.tsv")]) == 0
    tcga_args = ["brats-tcga", str(tcga), "--labels", str(table), "-o", str(sheets / "tcga.tsv")]
    assert main(tcga_args) == 0
    out = data / "samples.tsv"
    merged = [str(sheets / n) for n in ("ucsf.tsv", "egd.tsv", "tcga.tsv")]
    capsys.readouterr()
    assert main(["merge", *merged, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    for cohort in ("UCSF-PDGM", "EGD", "TCGA-LGG", "TCGA-GBM"):
        assert f"of {cohort}:" in printed
    result = validate_sheet(out)
    counts = result.included.groupby("cohort").size().to_dict()
    assert counts == {"UCSF-PDGM": 8, "EGD": 7, "TCGA-LGG": 4, "TCGA-GBM": 3}
    assert "\t/" not in out.read_text()  # everything lies below data/: relative paths


def test_merge_rejects_a_patient_twice(tmp_path: Path) -> None:
    sheet, _ = build_egd(make_egd_download(tmp_path / "EGD"))
    write_sheet(sheet, tmp_path / "a.tsv")
    write_sheet(sheet.iloc[:2], tmp_path / "b.tsv")
    with pytest.raises(InputError, match="EGD-0001"):
        merge_sheets([tmp_path / "a.tsv", tmp_path / "b.tsv"])


def test_module_runs_as_a_program(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "workflow_scripts")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "glioma.cohorts",
            "egd",
            str(tmp_path / "nowhere"),
            "-o",
            str(tmp_path / "x.tsv"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert "download folder does not exist" in done.stderr
    assert not (tmp_path / "x.tsv").exists()
