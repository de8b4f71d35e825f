"""Per-patient HTML pages: content, escaping, self-containment, errors and atomic writes."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from PIL import Image

from glioma.constants import CLASSES, SEQUENCES
from glioma.errors import InputError
from glioma.report import html
from glioma.report.cohort_pages import write_cohort_pages
from glioma.report.patient_page import (
    DISCLAIMER,
    PatientPage,
    page_context,
    render_patient_page,
    write_patient_page,
)

BUNDLE = {
    "id": "0123456789abcdef" * 4,
    "created": "2024-05-01T12:00:00+00:00",
    "models": ["fold-0", "fold-1"],
    "model_name": "resnet10t",
    "classes": ["IDHwt", "IDHmut-codel", "IDHmut-intact"],
    "workflow_version": "1.2.3",
    "training_cohort": {"cv": {"SITE-A": {"IDHwt": 3, "IDHmut-codel": 2}}},
    "temperature": 1.5,
}


def write_png(path: Path, colour: tuple[int, int, int] = (200, 30, 30)) -> Path:
    """A tiny PNG at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 3), colour).save(path)
    return path


def row(**changes: Any) -> dict[str, Any]:
    """A one-model prediction row of predictions.csv."""
    base = {
        "patient": "P001",
        "cohort": "SITE-A",
        "p_IDHwt": 0.712,
        "p_IDHmut-codel": 0.2,
        "p_IDHmut-intact": 0.088,
        "predicted_class": "IDHwt",
        "n_slices": 24,
        "split": "test",
        "model": "single",
        "n_models": 1,
        "sd": math.nan,
        "entropy": 0.76,
        "normalised_entropy": 0.69,
        "mutual_information": math.nan,
        "review": False,
        "class": "IDHwt",
    }
    return base | changes


@pytest.fixture
def page(tmp_path: Path) -> PatientPage:
    return PatientPage(
        cohort="SITE-A",
        patient="P001",
        prediction=row(),
        qc_png=write_png(tmp_path / "qc" / "SITE-A" / "P001.png"),
        saliency_png=write_png(tmp_path / "saliency" / "SITE-A" / "P001.png", (0, 0, 255)),
        saliency_method="grad-cam",
        slices=[40, 41, 42, 43, 47],
        shown_slices=[41, 47],
        bundle=BUNDLE,
        review_threshold=0.8,
    )


def with_row(page: PatientPage, **changes: Any) -> PatientPage:
    return dataclasses.replace(page, prediction=row(**changes))


def test_disclaimer_prediction_and_probabilities(page: PatientPage) -> None:
    html = render_patient_page(page)
    assert "not a medical device" in DISCLAIMER and "care" in DISCLAIMER
    assert html.index(DISCLAIMER) < html.index("<h1>")  # at the top
    assert "Patient P001 (SITE-A)" in html
    assert re.search(r'id="predicted-class">IDHwt<', html)
    for value in ("0.712", "0.200", "0.088"):
        assert value in html
    assert 'class="predicted"><td>IDHwt (predicted)' in html
    assert "width: 71.2%" in html
    assert "single model" in html
    assert "the prediction matches" in html
    assert "T = 1.500" in html


def test_bundle_identity(page: PatientPage) -> None:
    html = render_patient_page(page)
    assert ">0123456789ab</code>" in html
    assert "resnet10t" in html and "fold-0, fold-1" in html and "1.2.3" in html
    table = page_context(page)["bundle"]["cohort"]
    assert table["columns"] == [
        "split",
        "cohort",
        "IDHwt",
        "IDHmut-codel",
        "IDHmut-intact",
        "total",
    ]
    assert table["rows"] == [["cv", "SITE-A", "3", "2", "0", "5"]]
    flat = dataclasses.replace(page, bundle=BUNDLE | {"training_cohort": {"X": {"IDHwt": 1}}})
    assert page_context(flat)["bundle"]["cohort"]["rows"] == [["X", "1", "0", "0", "1"]]


def test_review_box_only_when_flagged(page: PatientPage) -> None:
    assert 'id="review"' not in render_patient_page(page)
    for flag in (True, "True", "REVIEW"):
        html = render_patient_page(with_row(page, review=flag, normalised_entropy=0.912))
        assert 'id="review"' in html
        assert "normalised entropy 0.912 above threshold 0.800" in html


def test_one_model_measures_are_na(page: PatientPage) -> None:
    html = render_patient_page(page)
    assert html.count("n/a (one model)") == 2  # SD and mutual information
    ensemble = with_row(page, model="ensemble", n_models=5, sd=0.05, mutual_information=0.01)
    html = render_patient_page(ensemble)
    assert "n/a (one model)" not in html
    assert "ensemble of 5 models" in html and "0.050" in html


def test_strings_are_escaped(page: PatientPage) -> None:
    odd = dataclasses.replace(page, cohort="A&B", prediction=row(**{"class": "x&y"}))
    html = render_patient_page(odd)
    assert "A&amp;B" in html and "x&amp;y" in html
    assert "A&B" not in html and "x&y" not in html
    assert "the prediction does not match" in html


def test_self_contained(page: PatientPage) -> None:
    html = render_patient_page(page)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]*", "", html).lower()
    assert "http" not in text.replace('http-equiv="content-security-policy"', "")
    assert "<script" not in text and "url(" not in text and "//" not in text
    assert "grad-cam" in html and "slices 41, 47" in html and "z = 40-43, 47" in html


def test_no_saliency(page: PatientPage) -> None:
    bare = dataclasses.replace(page, saliency_png=None, slices=[], shown_slices=[])
    html = render_patient_page(bare)
    assert "No saliency map for this patient." in html
    assert "Slices used by the model: 24." in html
    assert html.count('src="data:') == 1


@pytest.mark.parametrize("split", ["train", "val"])
def test_training_split_note(page: PatientPage, split: str) -> None:
    html = render_patient_page(with_row(page, split=split))
    assert 'id="training-note"' in html and "not an independent test" in html


@pytest.mark.parametrize("split", ["test", "cv", "external", "unlabelled"])
def test_held_out_split_has_no_training_note(page: PatientPage, split: str) -> None:
    html = render_patient_page(with_row(page, split=split, **{"class": ""}))
    assert 'id="training-note"' not in html and "not an independent test" not in html
    assert "true class</th><td>unknown" in html


def test_missing_pictures_raise(page: PatientPage, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "P001.png"
    for field in ("qc_png", "saliency_png"):
        with pytest.raises(InputError) as caught:
            render_patient_page(dataclasses.replace(page, **{field: missing}))
        assert caught.value.patient == "P001"
        assert str(missing) in str(caught.value) and "P001" in str(caught.value)


def test_missing_probability_raises(page: PatientPage) -> None:
    with pytest.raises(InputError, match="p_IDHmut-codel"):
        page_context(with_row(page, **{"p_IDHmut-codel": ""}))


def _cohort_run(
    tmp_path: Path, rows: list[dict[str, Any]], lacking: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """One cohort's inputs of write_cohort_pages: predictions, splits, the validated sheet
    (``lacking``: the sequences a patient was not acquired with), QC, saliency, bundle."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    predictions = tmp_path / "predictions.csv"
    pd.DataFrame(rows).drop(columns="class").to_csv(predictions, index=False)
    splits = tmp_path / "splits.tsv"
    table = pd.DataFrame(rows)[["patient", "cohort", "class", "split"]]
    table.to_csv(splits, sep="\t", index=False)
    sheet = table[["patient", "cohort"]].assign(**{s: f"/d/{s}.nii.gz" for s in SEQUENCES})
    for patient, sequences in (lacking or {}).items():
        sheet.loc[sheet["patient"] == patient, sequences] = ""
    sheet.to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    qc = [write_png(tmp_path / "qc" / r["cohort"] / f"{r['patient']}.png") for r in rows]
    saliency = tmp_path / "saliency" / "SITE-A"
    write_png(saliency / "P001.png")
    index = {"patients": {"P001": {"method": "occlusion", "slices": [3, 4], "shown": [4]}}}
    (saliency / "index.json").write_text(json.dumps(index))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.json").write_text(
        json.dumps({"classes": list(CLASSES), "models": ["single"]})
    )
    (bundle / "manifest.json").write_text("{}")
    return {
        "predictions_path": predictions,
        "splits_path": splits,
        "qc": qc,
        "saliency_dir": saliency,
        "bundle_dir": bundle,
        "review_threshold": 0.8,
        "sheet_path": tmp_path / "samples.tsv",
    }


def test_write_cohort_pages(tmp_path: Path) -> None:
    rows = [row(), row(patient="P002", review=True), row(cohort="SITE-B", patient="B01")]
    out = tmp_path / "patients" / "SITE-A"
    paths = write_cohort_pages("SITE-A", out_dir=out, **_cohort_run(tmp_path, rows))
    expected = [out / "P001.html", out / "P002.html"]  # SITE-B's patient is not this cohort's
    assert paths == expected
    # Nothing else is left beside the pages: no temporaries.
    assert sorted(out.parent.rglob("*")) == sorted([*expected, out])
    assert "occlusion" in expected[0].read_text()
    assert "No saliency map" in expected[1].read_text() and 'id="review"' in expected[1].read_text()


def test_failed_write_leaves_old_page(page: PatientPage, tmp_path: Path) -> None:
    target = tmp_path / "out" / "P001.html"
    write_patient_page(page, target)
    before = target.read_text()
    with pytest.raises(InputError):
        write_patient_page(dataclasses.replace(page, qc_png=tmp_path / "gone.png"), target)
    assert target.read_text() == before
    assert [p.name for p in target.parent.iterdir()] == ["P001.html"]


def test_unsafe_id_and_missing_qc_are_refused_naming_them(tmp_path: Path) -> None:
    inputs = _cohort_run(tmp_path, [row(), row(patient="../x")])
    out = tmp_path / "patients" / "SITE-A"
    with pytest.raises(InputError, match="safe ID") as error:
        write_cohort_pages("SITE-A", out_dir=out, **inputs)
    assert error.value.column == "patient"
    inputs = _cohort_run(tmp_path / "again", [row(), row(patient="P002")])
    inputs["qc"] = inputs["qc"][:1]
    with pytest.raises(InputError, match="QC picture") as error:
        write_cohort_pages("SITE-A", out_dir=out, **inputs)
    assert error.value.patient == "P002"
    assert not out.exists()  # no page of the cohort is written


def test_module_has_no_external_urls() -> None:
    template = (html.TEMPLATES / "patient.html.j2").read_text()
    assert "http://" not in template and "https://" not in template and "<script" not in template


def test_probabilities_are_not_claimed_to_be_calibrated(page: PatientPage) -> None:
    """predictions.csv holds raw probabilities: the page must not say they were scaled."""
    html = render_patient_page(page)
    assert "not temperature-scaled" in html and "after temperature scaling" not in html


def test_sequences_used_and_not_acquired(page: PatientPage) -> None:
    html = render_patient_page(page)  # the sheet did not say
    assert 'id="sequences-used">not recorded<' in html
    assert "does not say which sequences" in html
    complete = render_patient_page(dataclasses.replace(page, not_acquired=[]))
    assert 'id="sequences-used">T1w, T1c, T2w, FLAIR<' in complete
    assert 'id="sequences-missing">none<' in complete and 'id="missing-note"' not in complete
    lacking = render_patient_page(dataclasses.replace(page, not_acquired=["flair", "t1w"]))
    assert 'id="sequences-used">T1c, T2w<' in lacking
    assert 'id="sequences-missing">T1w, FLAIR<' in lacking
    assert re.search(r'id="missing-note">Not acquired for this patient: T1w, FLAIR\.', lacking)
    assert "The prediction used T1c, T2w only" in lacking
    assert "a sequence that was not acquired shows as a labelled empty row" in lacking


def test_cohort_pages_read_missing_sequences_from_the_sheet(tmp_path: Path) -> None:
    rows = [row(), row(patient="P002"), row(patient="P003")]
    inputs = _cohort_run(tmp_path, rows, lacking={"P002": ["t1c"], "P003": ["t1w", "t2w"]})
    sheet = pd.read_csv(inputs["sheet_path"], sep="\t", dtype=str, keep_default_na=False)
    sheet[sheet["patient"] != "P003"].to_csv(inputs["sheet_path"], sep="\t", index=False)
    out = tmp_path / "patients" / "SITE-A"
    pages = [p.read_text() for p in write_cohort_pages("SITE-A", out_dir=out, **inputs)]
    assert 'id="sequences-missing">none<' in pages[0]
    assert 'id="sequences-used">T1w, T2w, FLAIR<' in pages[1]
    assert 'id="sequences-missing">T1c<' in pages[1]
    assert 'id="sequences-used">not recorded<' in pages[2]  # not in the sheet
    sheet.drop(columns="flair").to_csv(inputs["sheet_path"], sep="\t", index=False)
    with pytest.raises(InputError, match="'flair'"):
        write_cohort_pages("SITE-A", out_dir=tmp_path / "again", **inputs)
