"""The HTML report on a tiny fake run: sections, self-containment, leak banner, a real browser,
and its size per patient on synthetic runs of real-size QC pictures (benchmarks/bench_report.py
builds its 1,000-patient run with :func:`make_run` too)."""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from glioma.constants import CLASSES, SPLITS
from glioma.errors import InputError
from glioma.report import figures, html, table1, tables

ROOT = Path(__file__).resolve().parents[1]
MAGENTA = "#ff00ff"  # only the fake ROC figures use it: the screenshot test looks for it
SECTIONS = {
    "summary": "At a glance",
    "cohort-flow": "Cohort flow",
    "table1": "Table 1",
    "splits": "Split sizes",
    "training": "Training curves",
    "table2": "Table 2",
    "ablation": "Sequence ablation",
    "roc": "ROC curves",
    "confusion": "Confusion matrices",
    "calibration": "Calibration",
    "uncertainty": "Uncertainty and review",
    "saliency": "Saliency",
    "predictions": "Predictions",
    "qc": "Quality control",
    "bundle": "Model bundle",
    "config": "Configuration",
    "versions": "Package versions",
}
PATIENTS = [  # cohort, patient, class, split
    ("SITE-A", "A01", "IDHwt", "train"),
    ("SITE-A", "A02", "IDHmut-codel", "train"),
    ("SITE-A", "A03", "IDHmut-intact", "val"),
    ("SITE-A", "A04", "", "unlabelled"),
    ("SITE-B", "B01", "IDHwt", "test"),
    ("SITE-B", "B02", "IDHmut-codel", "test"),
    ("SITE-B", "B03", "IDHmut-intact", "test"),
]


def synthetic_patients(n: int, cohorts: int = 3) -> list[tuple[str, str, str, str]]:
    """``n`` patients (cohort, patient, class, split) over ``cohorts`` cohorts: classes in turn,
    every tenth unlabelled, 60/20/20 train/val/test."""
    patients = []
    for k in range(n):
        cohort = f"SITE-{chr(ord('A') + k % cohorts)}"
        label = "" if k % 10 == 9 else CLASSES[k % len(CLASSES)]
        split = "unlabelled" if not label else ("train", "train", "train", "val", "test")[k % 5]
        patients.append((cohort, f"P{k:04d}", label, split))
    return patients


@functools.cache
def qc_mosaic_png(seed: int, size: tuple[int, int] = (900, 1200)) -> bytes:
    """A stand-in QC picture of the real size (900x1200 RGBA, as plot_qc writes): 4 sequences by
    3 planes of blocky noise 'brains' on black with a cyan and a red outline. Noise is harder to
    compress than anatomy, so its thumbnail is a little larger than a real one (about 7 KB
    against 5-6.5 KB for the demo's pictures): the size budget is measured on the safe side."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = Image.new("RGBA", size, "black")
    draw = ImageDraw.Draw(image)
    top = height // 20
    cell_w, cell_h = width // 3, (height - top) // 4
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    for row in range(4):
        for column in range(3):
            x0, y0 = column * cell_w, top + row * cell_h
            noise = rng.normal(0.5, 0.2, (cell_h // 6, cell_w // 6)).clip(0, 1)
            texture = Image.fromarray((noise * 255).astype(np.uint8)).resize(
                (cell_w, cell_h), Image.Resampling.NEAREST
            )
            mask = Image.new("L", (cell_w, cell_h), 0)
            ImageDraw.Draw(mask).ellipse(
                (cell_w // 8, cell_h // 10, cell_w - cell_w // 8, cell_h - cell_h // 10), fill=255
            )
            image.paste(texture.convert("RGBA"), (x0, y0), mask)
            draw.ellipse(
                (x0 + cell_w // 6, y0 + cell_h // 7, x0 + cell_w - cell_w // 6,
                 y0 + cell_h - cell_h // 7), outline=(0, 200, 220)
            )  # fmt: skip
            cx = x0 + cell_w // 2 + int(rng.integers(-20, 20))
            cy = y0 + cell_h // 2 + int(rng.integers(-20, 20))
            radii = rng.uniform(20, 45, angles.size)
            points = zip(cx + radii * np.cos(angles), cy + radii * np.sin(angles), strict=True)
            draw.polygon(list(points), outline=(230, 40, 40))
    draw.text((width // 3, top // 3), f"synthetic QC mosaic {seed}", fill="white")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@functools.cache  # drawing is the slow part of building a fake run: draw each figure once
def png(facecolor: str, text: str, size: tuple[float, float] = (4, 3)) -> bytes:
    figure = Figure(figsize=size, dpi=60)
    axes = figure.subplots()
    axes.set_facecolor(facecolor)
    axes.plot([0, 0.2, 1], [0, 0.8, 1], color="black")
    axes.set_title(text)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def fake_metrics() -> dict:
    out = {}
    for i, split in enumerate(SPLITS):
        classes = {
            c: {
                "auc": 0.81 + 0.01 * i + 0.001 * k,
                "auc_ci_low": 0.61 + 0.01 * i,
                "auc_ci_high": 0.93,
                "precision": None if c == "IDHmut-intact" else 0.5,
                "recall": 0.75,
                "f1": 0.6,
                "average_precision": 0.7,
            }
            for k, c in enumerate(CLASSES)
        }
        out[split] = {
            "n": 3 + i,
            "accuracy": 0.667,
            "macro_auc": 0.842 + i / 100,
            "classes": classes,
        }
    return out


def write_cohort(root: Path, split_of: dict[str, str], patients=PATIENTS) -> Path:
    """Write samples.tsv, exclusions.tsv, table1.tsv and splits.tsv; return the cohort folder."""
    rows = [
        {"patient": p, "cohort": co, "t1w": f"/d/{p}/t1w.nii.gz", "t1c": "x", "t2w": "x",
         "flair": "x", "roi": "x", "roi_on": "flair", "idh": "", "codeletion": "",
         "grade": "4" if c == "IDHwt" else "2", "age": str(40 + i), "sex": "MF"[i % 2],
         "class": c}
        for i, (co, p, c, _) in enumerate(patients)
    ]  # fmt: skip
    cohort_dir = root / "results/cohort"
    cohort_dir.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(cohort_dir / "samples.tsv", sep="\t", index=False)
    exclusions = [
        ("A09", "SITE-A", "all", "missing t2w"),
        ("A04", "SITE-A", "training", "label unknown (idh=empty): predicted, never trained"),
    ]
    pd.DataFrame(exclusions, columns=["patient", "cohort", "scope", "reason"]).to_csv(
        cohort_dir / "exclusions.tsv", sep="\t", index=False
    )
    table1.write_table1(cohort_dir / "samples.tsv", cohort_dir / "table1.tsv", root / "t1.md")
    splits = [(p, co, c, split_of[p]) for co, p, c, _ in patients]
    pd.DataFrame(splits, columns=["patient", "cohort", "class", "split"]).to_csv(
        root / "results/splits.tsv", sep="\t", index=False
    )
    return cohort_dir


def write_model(root: Path) -> Path:
    """Write history.csv and config.yaml; return the model folder."""
    model = root / "results/model"
    model.mkdir()
    history = {
        "epoch": [1, 2, 3],
        "train_loss": [1.1, 0.9, 0.7],
        "val_loss": [1.0, 0.95, 0.9],
        "val_slice_macro_auc": [0.6, 0.65, None],
        "val_patient_macro_auc": [0.62, 0.7, 0.74],
        "lr": [1e-3, 8e-4, 5e-4],
        "seconds": [2.0, 2.1, 2.0],
    }
    pd.DataFrame(history).to_csv(model / "history.csv", index=False)
    (model / "config.yaml").write_text("model:\n  name: tiny_swin <script>\n", encoding="utf-8")
    return model


ABLATION = pd.DataFrame(
    [
        ("flair", 3, 0, 0.842, None, None, None, None, 2000),
        ("t1w", 3, 0, 0.842, 0.721, -0.121, -0.25, -0.01, 2000),
        ("t1c", 3, 1, 0.842, 0.842, 0.0, 0.0, 0.0, 2000),
        ("t2w", 3, 0, 0.842, 0.9, 0.058, -0.02, 0.14, 2000),
    ],
    columns=list(tables.ABLATION_COLUMNS),
)


def write_evaluation(
    root: Path, split_of: dict[str, str], leaky_flag: bool, patients=PATIENTS
) -> Path:
    """Write metrics.json, the ROC, confusion and other figures, table_folds.tsv, ablation.tsv
    and predictions.csv."""
    metrics = {"patient": fake_metrics(), "slice": fake_metrics()}
    if leaky_flag:
        metrics |= {"leaky_split": True, "warning": "slices of one patient in several splits"}
    mdir = root / "results/metrics"
    mdir.mkdir()
    (mdir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    for split in SPLITS:
        (mdir / f"roc_{split}.png").write_bytes(png(MAGENTA, f"ROC {split}"))
        (mdir / f"confusion_{split}.png").write_bytes(png("#e0f0ff", f"confusion {split}"))
        (mdir / f"calibration_{split}.png").write_bytes(png("#f0e0ff", f"calibration {split}"))
        (mdir / f"uncertainty_{split}.png").write_bytes(png("#fff0e0", f"uncertainty {split}"))
    header = ["fold", "held_out", "n", "accuracy", "macro_auc", *(f"auc_{c}" for c in CLASSES)]
    (mdir / "table_folds.tsv").write_text("\t".join(header) + "\n", encoding="utf-8")  # no CV
    # Out of channel order, with the NaN row of a sequence the test patients cannot score.
    ABLATION.to_csv(mdir / "ablation.tsv", sep="\t", index=False, na_rep="NaN")
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=len(patients))
    predictions = pd.DataFrame(
        {
            "patient": [p for _, p, _, _ in patients],
            "cohort": [co for co, _, _, _ in patients],
            **{f"p_{c}": probs[:, k] for k, c in enumerate(CLASSES)},
            "predicted_class": [CLASSES[k] for k in probs.argmax(1)],
            "n_slices": 5,
            "split": [split_of[p] for _, p, _, _ in patients],
        }
    )
    (root / "results/predictions").mkdir()
    predictions.to_csv(root / "results/predictions/predictions.csv", index=False)
    return mdir


def write_qc(root: Path, patients=PATIENTS, real_size: bool = False) -> list[Path]:
    """Write one plain-coloured 600x400 'mosaic' per patient, each its own colour, or with
    ``real_size`` a noisy 900x1200 one (:func:`qc_mosaic_png`, 16 different ones in turn)."""
    qc = []
    for k, (co, p, _, _) in enumerate(patients):
        path = root / f"results/qc/{co}/{p}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if real_size:
            path.write_bytes(qc_mosaic_png(k % 16))
        else:
            Image.new("RGB", (600, 400), (20 * k % 256, 120, 200)).save(path)
        qc.append(path)
    return qc


def write_explained(root: Path, patients=PATIENTS) -> tuple[Path, list[Path]]:
    """A model bundle's bundle.json and manifest, and each cohort's saliency pictures and index."""
    bundle = root / "results/bundle"
    bundle.mkdir(parents=True, exist_ok=True)
    document = {
        "created": "2026-12-03T00:00:00+00:00",
        "models": ["single"],
        "settings": {"model.name": "resnet10t"},
        "temperature": 1.5,
        "training_cohort": {"train": {"SITE-A": {"IDHwt": 1, "IDHmut-codel": 1}}},
    }
    (bundle / "bundle.json").write_text(json.dumps(document))
    (bundle / "manifest.json").write_text(json.dumps({"files": {}}))
    folders = []
    for cohort in sorted({co for co, _, _, _ in patients}):
        folder = root / f"results/saliency/{cohort}"
        folder.mkdir(parents=True, exist_ok=True)
        entries = {}
        for k, (co, p, _, _) in enumerate(patients):
            if co == cohort:
                Image.new("RGB", (300, 200), (200, 30 * k % 256, 40)).save(folder / f"{p}.png")
                entries[p] = {
                    "method": "grad-cam",
                    "class": "IDHwt",
                    "models": ["single"],
                    "slices": [3, 4],
                    "shown": [4],
                }
        sanity = [{"patient": next(iter(entries)), "rank_correlation": 0.12}]
        index = {"bundle": "0" * 64, "patients": entries, "sanity": sanity}
        (folder / "index.json").write_text(json.dumps(index))
        folders.append(folder)
    return bundle, folders


def make_run(
    root: Path,
    *,
    level: str = "patient",
    leaky_flag: bool = False,
    patients=PATIENTS,
    real_size_qc: bool = False,
) -> html.ReportInputs:
    """Write every input of the report in the formats of docs/architecture.md.

    Args:
        root: the run's folder (``results/`` goes under it).
        level: ``split.level``.
        leaky_flag: metrics.json flags a leaky split.
        patients: (cohort, patient, class, split) of each patient: :data:`PATIENTS`, or
            :func:`synthetic_patients` for a cohort of any size.
        real_size_qc: QC pictures of the real size and texture (:func:`qc_mosaic_png`).
    """
    split_of = {p: ("slice" if level == "slice" and c else s) for _, p, c, s in patients}
    cohort_dir = write_cohort(root, split_of, patients)
    model = write_model(root)
    mdir = write_evaluation(root, split_of, leaky_flag, patients)
    bundle, saliency = write_explained(root, patients)
    return html.ReportInputs(
        sheet=cohort_dir / "samples.tsv",
        exclusions=cohort_dir / "exclusions.tsv",
        table1=cohort_dir / "table1.tsv",
        splits=root / "results/splits.tsv",
        history=model / "history.csv",
        model_config=model / "config.yaml",
        metrics=mdir / "metrics.json",
        predictions=root / "results/predictions/predictions.csv",
        roc=[mdir / f"roc_{s}.png" for s in SPLITS],
        confusion=[mdir / f"confusion_{s}.png" for s in SPLITS],
        calibration=[mdir / f"calibration_{s}.png" for s in SPLITS],
        uncertainty=[mdir / f"uncertainty_{s}.png" for s in SPLITS],
        qc=write_qc(root, patients, real_size_qc),
        config={"samples": "x.tsv", "split": {"level": level}},
        bundle=bundle,
        saliency=saliency,
        ablation=mdir / "ablation.tsv",
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    inputs = make_run(root)
    html.write_report(inputs, root / "results/report.html", root / "results/report/curves.png")
    return root, inputs, (root / "results/report.html").read_text(encoding="utf-8")


def test_every_section_is_there(report):
    _, _, page = report
    for anchor, heading in SECTIONS.items():
        match = re.search(rf'<section id="{anchor}">\s*<h2>([^<]*)</h2>', page)
        assert match, anchor
        assert match.group(1).startswith(heading), (anchor, match.group(1))
    assert 'id="table2-patient"' in page and 'id="table2-slice"' in page


def test_page_is_self_contained(report):
    _, _, page = report
    links = re.findall(r'\b(?:src|href)\s*=\s*["\']?([^"\'\s>]+)', page)
    assert links
    assert not [x for x in links if re.match(r"(?i)(https?:)?//", x)]
    # in-page anchors, and the patients' own pages beside the report (files, never a network)
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert all(x.startswith("#") or re.fullmatch(r"patients/[\w-]+/[\w-]+\.html", x) for x in hrefs)
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert sources and all(re.match(r"data:image/(png|jpeg);base64,", s) for s in sources)
    assert "@import" not in page and "url(" not in page
    assert "default-src 'none'" in page  # the browser is told to fetch nothing
    # One inline script (filter and sort), no src, allowed by its hash and nothing else.
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert len(scripts) == 1 and scripts[0][0] == "" and page.lower().count("<script") == 1
    script = scripts[0][1]
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page).group(1)
    assert f"script-src 'sha256-{digest}';" in csp and "'unsafe-inline'; style-src" not in csp
    for call in ("fetch(", "XMLHttpRequest", "://", "import(", "eval(", "localStorage", "cookie"):
        assert call not in script, call
    assert not re.search(r"<[^>]*\son\w+\s*=", page)  # no inline handler (the CSP blocks them)


def test_no_leak_banner_at_patient_level(report):
    assert 'id="leak-warning"' not in report[2]


@pytest.mark.parametrize(("level", "flag"), [("slice", False), ("patient", True)])
def test_leak_banner_under_slice_split(tmp_path, level, flag):
    inputs = make_run(tmp_path, level=level, leaky_flag=flag)
    page = html.render_html(html.build_context(inputs, b"\x89PNG\r\n\x1a\n"))
    banner = page.index('id="leak-warning"')
    assert banner < page.index("<h1>")
    assert "leaks patients" in page and "inflated" in page
    assert ("slices of one patient in several splits" in page) == flag


def test_tables_show_inputs(report):
    root, _, page = report
    assert ">missing t2w<" in page  # exclusion reason
    assert "0.810 (0.610-0.930)" in page  # AUC with its CI, train split
    assert "train (training data: optimistic)" in page
    assert page.count('class="training"') >= 2 * len(CLASSES)  # patient and slice tables
    assert "n/a" in page  # the null precision
    for cohort, patient, _, _ in PATIENTS:
        assert f'<td><a href="patients/{cohort}/{patient}.html">{patient}</a></td>' in page
    # text from inputs is escaped, never markup
    assert "tiny_swin &lt;script&gt;" in page
    t1 = pd.read_csv(root / "results/cohort/table1.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert f"<td>{t1.loc[1, 'Total']}</td>" in page
    assert page.count("<td>Age, years</td>") == 1  # a variable's later rows leave it blank
    assert "Bonferroni" in page
    assert "<td>scipy</td>" in page and "<td>python</td>" in page


def test_split_sizes_count_patients_per_cohort_class_and_split(tmp_path):
    inputs = make_run(tmp_path)
    sizes = tables.split_sizes(tables.read_splits(inputs.splits))
    expected = [
        ("SITE-A", "IDHwt", 1, 0, 0, 0),
        ("SITE-A", "IDHmut-codel", 1, 0, 0, 0),
        ("SITE-A", "IDHmut-intact", 0, 1, 0, 0),
        ("SITE-A", "unlabelled", 0, 0, 0, 1),
        ("SITE-B", "IDHwt", 0, 0, 1, 0),
        ("SITE-B", "IDHmut-codel", 0, 0, 1, 0),
        ("SITE-B", "IDHmut-intact", 0, 0, 1, 0),
        ("Total", "", 2, 1, 3, 1),
    ]
    columns = ["cohort", "class", "train", "val", "test", "unlabelled"]
    assert [tuple(row) for row in sizes[columns].to_numpy()] == expected
    assert sizes["Total"].tolist() == [1] * 7 + [7]


def test_figures_are_embedded_whole(report):
    root, inputs, page = report
    for path in [*inputs.roc, *inputs.confusion]:
        assert base64.b64encode(path.read_bytes()).decode() in page, path
    for path in inputs.qc:  # thumbnails only: the full mosaic is on the patient's page
        assert base64.b64encode(path.read_bytes()).decode() not in page, path
    curves = (root / "results/report/curves.png").read_bytes()
    assert base64.b64encode(curves).decode() in page
    assert Image.open(io.BytesIO(curves)).size[0] >= 800


def test_qc_thumbnails_and_patients_link_to_their_pages(report):
    _, inputs, page = report
    qc = section(page, "qc")
    thumbs = re.findall(
        r'<figure><a href="([^"]*)"><img src="data:image/jpeg;base64,([^"]*)" width="(\d+)" '
        r'height="(\d+)" alt="QC thumbnail ([^"]*)"></a>',
        qc,
    )
    expected = sorted((p.parent.name, p.stem) for p in inputs.qc)
    assert [t[4] for t in thumbs] == [f"{c}/{p}" for c, p in expected]
    assert [t[0] for t in thumbs] == [f"patients/{c}/{p}.html" for c, p in expected]
    for _, data, width, height, _ in thumbs:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        assert image.size == (int(width), int(height)) and max(image.size) <= figures.THUMB_PX
        assert len(base64.b64decode(data)) <= figures.THUMB_MAX_BYTES
    assert "lightbox" not in page and 'href="#qc-' not in page
    assert (
        "<figcaption>SITE-B / B01 &middot; test</figcaption>" in qc
    )  # its split, from predictions
    part = section(page, "predictions")
    for cohort, patient, _, _ in PATIENTS:
        assert f'<td><a href="patients/{cohort}/{patient}.html">{patient}</a></td>' in part
    assert '<table id="predictions-table" class="sortable">' in part
    assert 'data-filter="predictions-table"' in part and 'data-filter="qc-grid"' in qc


def test_patient_page_links_are_quoted_and_lead_back():
    assert html.patient_page("SITE-A", "P_01") == "patients/SITE-A/P_01.html"
    assert html.patient_page("a b", "c/d") == "patients/a%20b/c%2Fd.html"
    # results/report.html -> results/patients/<cohort>/<patient>.html -> back to the report
    template = (html.TEMPLATES / "patient.html.j2").read_text(encoding="utf-8")
    back = re.search(r'id="run-report" href="([^"]*)"', template).group(1)
    there = Path("results") / html.patient_page("SITE-A", "P_01")
    assert os.path.normpath(there.parent / back) == os.path.normpath("results/report.html")


def test_thumbnail_of_a_busy_picture_is_reencoded_to_fit(tmp_path):
    path = tmp_path / "noise.png"
    noise = np.random.default_rng(0).integers(0, 256, (200, 150, 3), dtype=np.uint8)
    Image.fromarray(noise).resize((900, 1200), Image.Resampling.NEAREST).save(path)
    unbounded = figures.thumbnail_jpeg(path, max_bytes=None)
    assert len(unbounded) > figures.THUMB_MAX_BYTES  # too busy at the default quality
    bounded = figures.thumbnail_jpeg(path)
    assert len(bounded) <= figures.THUMB_MAX_BYTES < len(unbounded)
    assert Image.open(io.BytesIO(bounded)).size == (150, 200)
    Image.fromarray(noise).convert("P").save(path)  # a palette picture is shrunk in colour
    assert Image.open(io.BytesIO(figures.thumbnail_jpeg(path))).mode == "RGB"


def test_page_grows_by_less_than_the_budget_per_patient(tmp_path):
    """Report size at two cohort sizes with QC pictures of the real size: the growth per patient
    (a predictions row, a QC thumbnail and their links) stays under html.PATIENT_BUDGET."""
    sizes = {}
    for n in (16, 48):  # both above the 12 saliency pictures shown, so those are fixed
        inputs = make_run(tmp_path / str(n), patients=synthetic_patients(n), real_size_qc=True)
        page = html.render_html(html.build_context(inputs, png("#ffffff", "curves"), workers=2))
        sizes[n] = len(page.encode("utf-8"))
        assert page.count('alt="QC thumbnail') == n and page.count('href="patients/') >= 2 * n
    per_patient = (sizes[48] - sizes[16]) / (48 - 16)
    print(f"report: {sizes} bytes, {per_patient:.0f} bytes per patient")
    assert per_patient <= html.PATIENT_BUDGET, per_patient
    assert sizes[16] - 16 * per_patient < 1_000_000  # what does not grow with patients


def test_bad_predicted_class_names_patient_column_file(tmp_path):
    inputs = make_run(tmp_path)
    table = pd.read_csv(inputs.predictions)
    table.loc[2, "predicted_class"] = "GBM"
    table.to_csv(inputs.predictions, index=False)
    with pytest.raises(InputError) as err:
        html.build_context(inputs, b"")
    assert "'A03'" in str(err.value) and "'predicted_class'" in str(err.value)
    assert str(inputs.predictions) in str(err.value)


def test_history_missing_column_is_named(tmp_path):
    inputs = make_run(tmp_path)
    pd.read_csv(inputs.history).drop(columns="val_loss").to_csv(inputs.history, index=False)
    with pytest.raises(InputError, match="'val_loss'"):
        html.write_report(inputs, tmp_path / "r.html", tmp_path / "c.png")
    assert not (tmp_path / "r.html").exists()


def test_figure_that_is_not_an_image_is_named(tmp_path):
    inputs = make_run(tmp_path)
    inputs.roc[1].write_text("not a png")
    with pytest.raises(InputError, match=r"roc_val\.png"):
        html.build_context(inputs, b"")


# --- the rules, run by Snakemake --------------------------------------------------------------

SNAKEFILE = """
import sys
sys.path.insert(0, {scripts!r})


configfile: "config.yaml"


report: {workflow_rst!r}


SHEET = "results/cohort/samples.tsv"
EXCLUSIONS = "results/cohort/exclusions.tsv"


def per_patient(pattern):
    return [pattern.format(cohort=c, patient=p) for c, p in {patients!r}]


# Defined by rules/common.smk and rules/model.smk in the workflow: a one-split run.
FOLDS = []
EVAL_SPLITS = ["train", "val", "test"]
BUNDLE_DIR = "results/bundle"


def cohorts():
    return sorted({{c for c, _ in {patients!r}}})


def qc_of_cohort(wildcards):
    return [f"results/qc/{{c}}/{{p}}.png" for c, p in {patients!r} if c == wildcards.cohort]


def trained_models():
    return {{"history": ["results/model/history.csv"], "config": "results/model/config.yaml"}}


include: {rules!r}


rule all:
    input:
        "results/report.html",
        "results/cohort/table1.md",
"""


def test_rules_run_and_snakemake_report_works(tmp_path):
    make_run(tmp_path)
    (tmp_path / "results/cohort/table1.tsv").unlink()  # made by the rule this time
    (tmp_path / "config.yaml").write_text(
        "samples: x.tsv\nsplit:\n  level: patient\npredict:\n  bundle: ''\n"
        "evaluate:\n  review_entropy: 0.8\n"
    )
    (tmp_path / "Snakefile").write_text(
        SNAKEFILE.format(
            scripts=str(ROOT / "workflow_scripts"),
            workflow_rst=str(ROOT / "report/workflow.rst"),
            patients=[(c, p) for c, p, _, _ in PATIENTS],
            rules=str(ROOT / "rules/report.smk"),
        )
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    snakemake = [sys.executable, "-m", "snakemake", "--cores", "1", "--nolock"]
    for extra in ([], ["--report", "report.zip"]):
        run = subprocess.run(
            [*snakemake, *extra], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
        )
        assert run.returncode == 0, run.stderr[-3000:]
    page = (tmp_path / "results/report.html").read_text(encoding="utf-8")
    assert 'id="table1"' in page and "Kruskal-Wallis" in page
    assert "-0.121 (-0.250 to -0.010)" in section(page, "ablation")  # the rule's ablation input
    assert 'id="saliency"' in page and 'id="bundle"' in page and "This run wrote the bundle" in page
    assert (tmp_path / "results/report/training_curves.png").stat().st_size > 0
    assert "Table 1" in (tmp_path / "results/cohort/table1.md").read_text(encoding="utf-8")
    assert (tmp_path / "logs/render_report.log").exists()
    with zipfile.ZipFile(tmp_path / "report.zip") as archive:
        names = archive.namelist()
    for name in ("table1.tsv", "report.html", "training_curves.png"):
        assert any(n.endswith(name) for n in names), (name, names[:20])


# --- a real browser --------------------------------------------------------------------------

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
)
# Injected into a copy of the page only: reports on window load whether every image decoded and
# whether any resource failed, in the title that --dump-dom prints.
CHECKER = """<script>
window.__failed = [];
window.addEventListener("error", e => window.__failed.push(e.target.alt || e.message), true);
window.addEventListener("load", () => {
  const bad = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0));
  document.title = "CHECK images=" + document.images.length + " undecoded=" + bad.length +
    " failed=" + window.__failed.length;
});
</script>"""


def chromium() -> str | None:
    return next(
        (shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None
    )


def browse(page: Path, tmp: Path, *extra: str, anchor: str = "") -> tuple[str, list[str]]:
    """Run headless Chromium on ``page``; return stdout and the page's console messages."""
    url = page.as_uri() + anchor
    result = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", *extra, url],
        capture_output=True,
        encoding="utf-8",  # the page's DOM is UTF-8 whatever the locale says
        errors="replace",
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # Every console message (error, warning, CSP refusal) is a CONSOLE line; a page with no
    # script of its own should print none.
    return result.stdout, [x for x in result.stderr.splitlines() if ":CONSOLE" in x]


def checked_copy(page: str, path: Path, script: str = CHECKER) -> Path:
    """Write ``page`` with a test script (the checker) before ``</body>``, allowed through the
    CSP by its hash for this copy only, beside the page's own script."""
    body = re.fullmatch(r"<script>(.*)</script>", script, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode()
    csp = "default-src 'none'; img-src data:; script-src 'sha256-"
    assert csp in page
    page = page.replace(csp, f"{csp}{digest}' 'sha256-", 1)
    path.write_text(page.replace("</body>", script + "</body>"), encoding="utf-8")
    return path


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (.ci/run installs it)")
def test_browser_renders_page_without_console_errors(report, tmp_path):
    root, _, page = report
    n_images = len(re.findall(r"<img\s", page))
    dom, console = browse(checked_copy(page, tmp_path / "checked.html"), tmp_path, "--dump-dom")
    assert console == []
    title = re.search(r"<title>([^<]*)</title>", dom).group(1)
    assert title == f"CHECK images={n_images} undecoded=0 failed=0"

    shot = tmp_path / "shot.png"
    _, console = browse(
        root / "results/report.html",
        tmp_path,
        f"--screenshot={shot}",
        "--window-size=1280,2000",
    )
    assert console == []
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape == (2000, 1280, 3)
    assert pixels.std() > 10  # not blank
    magenta = (pixels[..., 0] > 230) & (pixels[..., 1] < 40) & (pixels[..., 2] > 230)
    assert magenta.sum() > 20_000  # the ROC figure of the summary is drawn on screen


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (.ci/run installs it)")
def test_browser_check_catches_an_external_request(report, tmp_path):
    _, _, page = report
    bad = page.replace("</body>", '<img alt="remote" src="http://192.0.2.1/x.png"></body>')
    dom, console = browse(checked_copy(bad, tmp_path / "bad.html"), tmp_path, "--dump-dom")
    assert console and "192.0.2.1" in "\n".join(console)
    assert "failed=1" in re.search(r"<title>([^<]*)</title>", dom).group(1)


# Injected into a copy of the page: types in the filter boxes and clicks a column header twice,
# then reports what is shown, in the title (URI-encoded JSON).
DRIVER = """<script>
window.addEventListener("load", () => {
  const type = (target, text) => {
    const box = document.querySelector(`input[data-filter="${target}"]`);
    box.value = text;
    box.dispatchEvent(new Event("input"));
  };
  const table = document.getElementById("predictions-table");
  const shown = () =>
    [...table.tBodies[0].rows].filter(r => !r.hidden).map(r => r.cells[1].textContent);
  type("predictions-table", "site-b TRAIN");
  const filtered = shown();
  const count = document.getElementById("predictions-table-count").textContent;
  const header = [...table.tHead.rows[0].cells].find(h => h.textContent === "p_IDHwt");
  header.click();
  const up = shown();
  header.click();
  const down = shown();
  const order = header.getAttribute("aria-sort");
  type("predictions-table", "");
  const grid = document.getElementById("qc-grid");
  type("qc-grid", "site-b TRAIN");  // captions name the split too
  const trained = [...grid.children].filter(f => !f.hidden).length;
  type("qc-grid", "P0003");
  const thumbs = [...grid.children].filter(f => !f.hidden).length;
  const all = shown().length;
  document.title = "DRIVE " + encodeURIComponent(
    JSON.stringify({filtered, count, up, down, order, trained, thumbs, all}));
});
</script>"""


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (.ci/run installs it)")
def test_browser_filters_and_sorts_the_patients_offline(tmp_path):
    patients = synthetic_patients(30)
    inputs = make_run(tmp_path, patients=patients)
    page = tmp_path / "results/report.html"
    html.write_report(inputs, page, tmp_path / "results/report/curves.png")
    dom, console = browse(page, tmp_path, "--dump-dom")  # the page's own script, as it is
    assert console == []
    assert '<output id="predictions-table-count">30 of 30 shown</output>' in dom
    assert '<output id="qc-grid-count">30 of 30 shown</output>' in dom
    assert 'aria-sort="none"' in dom and '<p class="filter needs-script" hidden' not in dom

    text = page.read_text(encoding="utf-8")
    dom, console = browse(checked_copy(text, tmp_path / "driven.html", DRIVER), tmp_path,
                          "--dump-dom")  # fmt: skip
    assert console == []
    title = re.search(r"<title>DRIVE ([^<]*)</title>", dom)
    assert title, dom[:500]
    seen = json.loads(urllib.parse.unquote(title.group(1)))
    table = pd.read_csv(inputs.predictions).sort_values(["cohort", "patient"])
    chosen = table[(table["cohort"] == "SITE-B") & (table["split"] == "train")]
    assert seen["filtered"] == list(chosen["patient"]) and len(chosen) >= 2
    assert seen["count"] == f"{len(chosen)} of 30 shown"
    shown = chosen.assign(p=chosen["p_IDHwt"].round(3))  # sorted as the page shows them
    assert seen["up"] == list(shown.sort_values("p", kind="stable")["patient"])
    assert seen["down"] == list(shown.sort_values("p", ascending=False, kind="stable")["patient"])
    assert seen["order"] == "descending" and seen["thumbs"] == 1 and seen["all"] == 30
    assert seen["trained"] == len(chosen)


def test_summary_falls_back_to_last_split_with_patients():
    metrics = {"patient": fake_metrics()}
    metrics["patient"]["test"]["n"] = 0
    roc = [{"split": s, "label": s, "uri": f"data:image/png;base64,{s}"} for s in SPLITS]
    headline = html.summary(metrics, roc)
    assert headline["split"] == "val" and headline["roc"]["split"] == "val"
    assert {row[0] for row in headline["table"]["rows"]} == {"val"}
    metrics["patient"] = {s: {"n": 0} for s in SPLITS}
    assert html.summary(metrics, roc) == {}


def test_network_vs_baseline_table_only_with_a_baseline(report, tmp_path):
    assert 'id="baseline"' not in report[2]  # the fixture's metrics.json has no baseline
    inputs = make_run(tmp_path)
    metrics = json.loads(inputs.metrics.read_text(encoding="utf-8"))
    baseline = fake_metrics()
    baseline["test"]["classes"]["IDHwt"].update(auc=0.555, auc_ci_low=0.444, auc_ci_high=0.666)
    baseline["test"]["macro_auc"] = 0.501
    baseline["val"]["n"] = 7
    metrics["baseline"] = {"patient": baseline, "slice": fake_metrics()}
    inputs.metrics.write_text(json.dumps(metrics), encoding="utf-8")
    page = html.render_html(html.build_context(inputs, b"\x89PNG\r\n\x1a\n"))
    section = page[page.index('<h3 id="baseline">Network vs baseline</h3>') :]
    section = section[: section.index("</section>")]
    assert "logistic regression on 24 first-order intensity features" in section
    assert "same labelled patients" in section
    assert "<td>0.830 (0.630-0.930)</td><td>0.555 (0.444-0.666)</td>" in section  # test, IDHwt
    assert "<td>macro</td><td>0.862</td><td>0.501</td>" in section
    assert "<td>4 / 7</td>" in section  # patient counts that differ are both shown
    assert section.count("<tr") == 1 + len(SPLITS) * (len(CLASSES) + 1)
    assert 'href="#baseline"' in page


# --- cross-validation, calibration and review ------------------------------------------------

FOLD_OF = {"A01": "0", "A02": "1", "A03": "0", "B01": "1"}  # the rest: test or unlabelled


def _trust_sections(fitted_on: str, splits: list[str]) -> dict:
    """calibration and uncertainty sections of metrics.json for ``splits``."""
    ece = {**dict.fromkeys(CLASSES, 0.21), "top_label": 0.314, "nll": 0.95}
    scaled = {**dict.fromkeys(CLASSES, 0.11), "top_label": 0.159, "nll": 0.75}
    review = {"n": 3, "n_flagged": 1, "n_unflagged": 2, "accuracy_flagged": 0.0}
    return {
        "calibration": {
            "fitted_on": fitted_on,
            "temperature": 1.234,
            "bins": 7,
            "splits": {
                s: {"n": 3, "in_sample": s == fitted_on, "raw": ece, "scaled": scaled}
                for s in splits
            },
        },
        "uncertainty": {
            "measure": "normalised_entropy",
            "threshold": 0.45,
            "splits": {s: {**review, "accuracy_unflagged": 0.987, "aurc": 0.0421} for s in splits},
        },
    }


def make_cv_run(root: Path, scheme: str = "k-fold") -> html.ReportInputs:
    """A cross-validated run: splits.tsv with cv patients and folds, two fold models, the
    metrics.json cv section, table_folds.tsv, ensemble columns in predictions.csv."""
    inputs = make_run(root)
    loco = scheme == "leave-one-cohort-out"
    fold_of = {
        p: (("SITE-A" if p[0] == "A" else "SITE-B") if loco else f) for p, f in FOLD_OF.items()
    }
    splits = pd.read_csv(inputs.splits, sep="\t", dtype=str, keep_default_na=False)
    splits["split"] = [
        "cv" if p in fold_of else s for p, s in zip(splits["patient"], splits["split"], strict=True)
    ]
    splits["fold"] = splits["patient"].map(fold_of).fillna("")
    splits.to_csv(inputs.splits, sep="\t", index=False)
    base = fake_metrics()
    folds = sorted(set(fold_of.values()))
    rows = [
        {"fold": f, "held_out": f if loco else None, "n": 2, "accuracy": 0.5,
         "macro_auc": 0.61 + 0.2 * k, **{f"auc_{c}": None if k else 0.7 for c in CLASSES}}
        for k, f in enumerate(folds)
    ]  # fmt: skip
    summary = {m: {"mean": 0.71, "sd": 0.141, "n_folds": 2} for m in ("accuracy", "macro_auc")}
    summary |= {f"auc_{c}": {"mean": 0.7, "sd": None, "n_folds": 1} for c in CLASSES}
    shown = ["cv"] if loco else ["cv", "test"]
    metrics = {
        "splits": shown,
        "patient": {s: base["train" if s == "cv" else s] for s in shown},
        "slice": {s: base["train" if s == "cv" else s] for s in shown},
        "cv": {"scheme": scheme, "n_folds": len(folds), "folds": rows, "summary": summary},
        **_trust_sections("cv", shown),
    }
    inputs.metrics.write_text(json.dumps(metrics), encoding="utf-8")
    table = pd.DataFrame([*rows, {"fold": "mean"}, {"fold": "sd"}])
    table.to_csv(inputs.metrics.parent / "table_folds.tsv", sep="\t", index=False)
    histories = []
    for fold in folds:
        folder = root / "results/model/folds" / fold
        folder.mkdir(parents=True)
        pd.read_csv(inputs.history).to_csv(folder / "history.csv", index=False)
        histories.append(folder / "history.csv")
        (folder / "config.yaml").write_text(f"model:\n  name: fold {fold}\n", encoding="utf-8")
    predictions = pd.read_csv(inputs.predictions)
    cv = predictions["patient"].isin(fold_of)
    predictions["model"] = [
        "fold-" + fold_of[p] if p in fold_of else "ensemble" for p in predictions["patient"]
    ]
    predictions["n_models"] = np.where(cv, 1, len(folds))
    predictions["sd"] = np.where(cv, np.nan, 0.0456)
    predictions["mutual_information"] = np.where(cv, np.nan, 0.0123)
    predictions["normalised_entropy"] = 0.5
    predictions["review"] = predictions["patient"].isin(["A02", "B03"])
    predictions.to_csv(inputs.predictions, index=False)
    mdir = inputs.metrics.parent
    figures = {}
    for kind, colour in (("roc", MAGENTA), ("confusion", "#e0f0ff"), ("calibration", "#f0e0ff"),
                         ("uncertainty", "#fff0e0")):  # fmt: skip
        figures[kind] = [mdir / f"{kind}_{s}.png" for s in shown]
        for split, path in zip(shown, figures[kind], strict=True):
            path.write_bytes(png(colour, f"{kind} {split}"))
    (mdir / "folds.png").write_bytes(png("#cccccc", "folds"))
    return dataclasses.replace(
        inputs,
        **figures,
        history=histories,
        model_config=histories[0].parent / "config.yaml",
        folds_table=mdir / "table_folds.tsv",
        folds_figure=mdir / "folds.png",
    )


def section(page: str, anchor: str) -> str:
    start = page.index(f'<section id="{anchor}">')
    return page[start : page.index("</section>", start)]


def rows_of(part: str) -> list[list[str]]:
    """Cells of every body row of the tables in ``part``."""
    body = "".join(re.findall(r"<tbody>(.*?)</tbody>", part, re.S))
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr.*?</tr>", body)]
    return [[re.sub(r"<[^>]*>", "", cell) for cell in row] for row in rows]  # links: their text


@pytest.fixture(scope="module")
def cv_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("cv")
    inputs = make_cv_run(root)
    html.write_report(inputs, root / "results/report.html", root / "results/report/curves.png")
    return root, inputs, (root / "results/report.html").read_text(encoding="utf-8")


def test_cv_report_has_per_fold_table_mean_sd_and_figure(cv_report):
    _, inputs, page = cv_report
    assert 'href="#cross-validation"' in page
    cv = section(page, "cross-validation")
    assert "k-fold, 2 folds" in cv and "own held-out patients" in cv
    assert '<th scope="col">fold</th>' in cv and "held-out cohort" not in cv
    assert rows_of(cv) == [
        ["0", "2", "0.500", "0.610", "0.700", "0.700", "0.700"],
        ["1", "2", "0.500", "0.810", "n/a", "n/a", "n/a"],
        ["mean", "", "0.710", "0.710", *["0.700 (1 of 2 folds)"] * 3],
        ["SD", "", "0.141", "0.141", "n/a", "n/a", "n/a"],
    ]
    assert base64.b64encode(inputs.folds_figure.read_bytes()).decode() in cv
    assert re.search(r"<figcaption>Held-out patient-level AUC of each fold model", cv)


def test_cv_report_headline_splits_and_folds(cv_report):
    _, _, page = cv_report
    glance = section(page, "summary")
    assert "<b>test</b>" in glance and "predicted by the mean of the 2 fold models" in glance
    assert "labelled (split into cv / test)" in page
    table2 = section(page, "table2")
    assert [r[0] for r in rows_of(table2)][:: len(CLASSES)] == ["cv (out-of-fold)", "test"] * 2
    splits = section(page, "splits")
    assert '<th scope="col">cv</th>' in splits and "Patients per fold and class" in splits
    fold_rows = rows_of(splits[splits.index('id="fold-sizes"') :])
    assert fold_rows == [
        ["0", "1", "0", "1", "2"],
        ["1", "1", "1", "0", "2"],
        ["Total", "2", "1", "1", "4"],
    ]


def test_cv_report_captions_say_which_patients(cv_report):
    _, inputs, page = cv_report
    for anchor, kind in (("roc", "roc"), ("confusion", "confusion"), ("calibration", "calibration"),
                         ("uncertainty", "uncertainty")):  # fmt: skip
        part = section(page, anchor)
        captions = re.findall(r"<figcaption>(.*?)</figcaption>", part, re.S)
        assert len(captions) == 2, anchor
        assert (
            "cv (out-of-fold): out-of-fold patients: each predicted by the fold model that "
            "never trained or early-stopped on it" in captions[0]
        )
        assert "test: held-out test patients" in captions[1]
        assert "predicted by the mean of the 2 fold models" in captions[1]
        for path in getattr(inputs, kind):
            assert base64.b64encode(path.read_bytes()).decode() in part
    calibration = re.findall(r"<figcaption>(.*?)</figcaption>", section(page, "calibration"))
    assert "(the temperature is fitted here: in-sample)" in calibration[0]
    assert "in-sample" not in calibration[1]


def test_cv_report_calibration_and_uncertainty_tables(cv_report):
    _, _, page = cv_report
    calibration = section(page, "calibration")
    assert "T = 1.234" in calibration and "fitted on the <b>cv (out-of-fold)</b>" in calibration
    assert "never on\ntest" in calibration or "never on test" in calibration
    rows = rows_of(calibration)
    assert len(rows) == 2 * (len(CLASSES) + 2)
    assert rows[0] == ["cv (out-of-fold), in-sample (the temperature is fitted here)", "3",
                       "ECE IDHwt", "0.210", "0.110"]  # fmt: skip
    assert rows[3][2:] == ["ECE top label", "0.314", "0.159"] and rows[4][2:] == [
        "NLL",
        "0.950",
        "0.750",
    ]
    assert rows[5][0] == "test" and rows[1][0] == ""  # the split is named once
    assert calibration.count('<tr class="in-sample">') == len(CLASSES) + 2
    review = section(page, "uncertainty")
    assert "normalised entropy" in review and "above 0.45" in review and "never on" in review
    assert "flagged patients are less often right" in review
    assert rows_of(review) == [
        ["cv (out-of-fold)", "3", "1", "2", "0.000", "0.987", "0.042"],
        ["test", "3", "1", "2", "0.000", "0.987", "0.042"],
    ]


def test_cv_report_predictions_show_model_review_and_ensemble_spread(cv_report):
    _, _, page = cv_report
    part = section(page, "predictions")
    header = re.findall(r'<th scope="col">([^<]*)</th>', part)
    assert header[:8] == ["cohort", "patient", "split", "model", "class", "predicted_class",
                          "correct", "review"]  # fmt: skip
    assert {"normalised_entropy", "sd", "mutual_information"} <= set(header)
    cells = {row[1]: dict(zip(header, row, strict=True)) for row in rows_of(part)}
    assert cells["A02"]["review"] == "REVIEW" and cells["A01"]["review"] == ""
    assert cells["A02"]["model"] == "fold-1" and cells["B02"]["model"] == "ensemble"
    assert cells["A01"]["sd"] == "" and cells["B02"]["sd"] == "0.046"
    assert (
        cells["B02"]["mutual_information"] == "0.012"
        and cells["A01"]["normalised_entropy"] == "0.500"
    )
    assert part.count('<tr class="review">') == 2 and '<td class="flag">REVIEW</td>' in part
    qc = section(page, "qc")  # the flagged patients' thumbnails say so too
    split = cells["A02"]["split"]  # as the predictions table says
    assert f"<figcaption>SITE-A / A02 &middot; {split} &middot; <b>REVIEW</b></figcaption>" in qc
    assert qc.count("<b>REVIEW</b>") == 2
    assert "2 here" in part


def test_cv_report_training_overlays_folds_and_names_the_first_config(cv_report):
    root, _, page = cv_report
    training = section(page, "training")
    assert "results/model/folds/0/history.csv" in training
    assert "results/model/folds/1/history.csv" in training and "one line per fold model" in training
    config = section(page, "config")
    assert "<code>results/model/folds/0/config.yaml</code>, the first fold's" in config
    assert "name: fold 0" in config
    curves = (root / "results/report/curves.png").read_bytes()
    assert base64.b64encode(curves).decode() in training


def test_leave_one_cohort_out_rows_are_cohorts(tmp_path):
    inputs = make_cv_run(tmp_path, "leave-one-cohort-out")
    page = html.render_html(html.build_context(inputs, b"\x89PNG\r\n\x1a\n"))
    cv = section(page, "cross-validation")
    assert '<th scope="col">held-out cohort</th>' in cv and "a hospital the model never saw" in cv
    assert [row[0] for row in rows_of(cv)] == ["SITE-A", "SITE-B", "mean", "SD"]
    assert "(one bar per held-out cohort)" in cv
    glance = section(page, "summary")
    assert "<b>cv (out-of-fold)</b>" in glance  # no test split: the headline is out-of-fold
    assert 'id="fold-sizes"' in page and "a fold is a held-out cohort" in page


def test_single_split_report_with_calibration_fitted_on_val(tmp_path):
    inputs = make_run(tmp_path)
    metrics = json.loads(inputs.metrics.read_text(encoding="utf-8"))
    metrics |= {"splits": list(SPLITS), **_trust_sections("val", list(SPLITS))}
    inputs.metrics.write_text(json.dumps(metrics), encoding="utf-8")
    page = html.render_html(html.build_context(inputs, b"\x89PNG\r\n\x1a\n"))
    assert 'id="cross-validation"' not in page and 'id="fold-sizes"' not in page
    calibration = section(page, "calibration")
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", calibration)
    assert len(captions) == len(SPLITS)
    assert (
        "validation patients (used for early stopping) (the temperature is fitted here: "
        "in-sample)" in captions[1]
    )
    assert "never trained, early-stopped or calibrated on." in captions[2]
    assert "fold models" not in calibration
    assert [r[0] for r in rows_of(calibration)][:: len(CLASSES) + 2] == [
        "train (training data: optimistic)", "val, in-sample (the temperature is fitted here)",
        "test"]  # fmt: skip
    review = section(page, "uncertainty")
    assert len(re.findall(r"<figcaption>", review)) == len(SPLITS)
    assert "<b>test</b>" in section(page, "summary")


def test_old_run_renders_without_new_sections_or_columns(report):
    _, _, page = report  # metrics.json without splits/cv/calibration/uncertainty, old predictions
    assert 'id="cross-validation"' not in page and 'href="#cross-validation"' not in page
    assert "holds no calibration section" in page and "holds no uncertainty section" in page
    assert "labelled (split into train / val / test)" in page
    part = section(page, "predictions")
    header = re.findall(r'<th scope="col">([^<]*)</th>', part)
    assert "review" in header and "model" in header and "sd" not in header
    rows = rows_of(part)
    assert len(rows) == len(PATIENTS)
    assert all(
        row[header.index("review")] == "" and row[header.index("model")] == "" for row in rows
    )
    assert '<tr class="review">' not in part


def test_cv_patient_without_fold_is_named(tmp_path):
    inputs = make_cv_run(tmp_path)
    splits = pd.read_csv(inputs.splits, sep="\t", dtype=str, keep_default_na=False)
    splits.loc[splits["patient"] == "A03", "fold"] = ""
    splits.to_csv(inputs.splits, sep="\t", index=False)
    with pytest.raises(InputError, match=r"patient 'A03', column 'fold'.*names no fold"):
        html.build_context(inputs, b"")


def test_stale_fold_table_is_named(tmp_path):
    inputs = make_cv_run(tmp_path)
    table = pd.read_csv(inputs.folds_table, sep="\t", dtype=str)
    table.drop(index=1).to_csv(inputs.folds_table, sep="\t", index=False)
    with pytest.raises(InputError, match=r"table_folds\.tsv.*differ from metrics\.json"):
        html.build_context(inputs, b"")


def test_bad_review_flag_and_entropy_are_named(tmp_path):
    inputs = make_cv_run(tmp_path)
    table = pd.read_csv(inputs.predictions, dtype=str, keep_default_na=False)
    table.loc[table["patient"] == "B02", "review"] = "maybe"
    table.to_csv(inputs.predictions, index=False)
    with pytest.raises(InputError, match=r"'B02'.*'review'"):
        html.build_context(inputs, b"")
    table.loc[table["patient"] == "B02", ["review", "normalised_entropy"]] = ["False", "high"]
    table.to_csv(inputs.predictions, index=False)
    with pytest.raises(InputError, match=r"'B02'.*'normalised_entropy'"):
        html.build_context(inputs, b"")


def test_scored_splits_order_and_figure_names():
    assert tables.scored_splits({}) == list(SPLITS)
    assert tables.scored_splits({"splits": ["test", "cv"]}) == ["cv", "test"]
    assert tables.split_label("cv") == "cv (out-of-fold)"
    with pytest.raises(InputError, match=r"roc_<train\|val\|cv\|test>"):
        html.split_figures([Path("roc_dev.png")], "roc")


# --- missing sequences: who lacks which, the sequence ablation, metrics per pattern ----------

AVAILABILITY = {
    "train": [{"missing": "none", "n_patients": 2, "accuracy": 1.0, "macro_auc": 1.0}],
    "test": [
        {"missing": "none", "n_patients": 2, "accuracy": 0.5, "macro_auc": 0.75},
        {"missing": "t1w, flair", "n_patients": 1, "accuracy": 1.0, "macro_auc": None},
    ],
}
#: An exclusion reason under ``inclusion.missing_sequences: allow``.
ONLY_FLAIR = "only flair: needs the ROI's sequence (flair) and at least one more"


def test_sequence_ablation_table_and_nan_as_na(report):
    _, _, page = report
    assert 'href="#ablation"' in page
    part = section(page, "ablation")
    header = re.findall(r'<th scope="col">([^<]*)</th>', part)
    assert header == ["sequence hidden", "patients", "of them lacking it already",
                      "Δ macro AUC (95% CI)", "macro AUC, all given",
                      "macro AUC, without it"]  # fmt: skip
    assert rows_of(part) == [  # channel order, whatever the file's
        ["T1w", "3", "0", "-0.121 (-0.250 to -0.010)", "0.842", "0.721"],
        ["T1c", "3", "1", "0.000 (0.000 to 0.000)", "0.842", "0.842"],
        ["T2w", "3", "0", "+0.058 (-0.020 to +0.140)", "0.842", "0.900"],
        ["FLAIR", "3", "0", "n/a", "0.842", "n/a"],  # NaN in ablation.tsv
    ]
    assert "On the held-out test patients:" in part and "hidden from every patient" in part
    assert "paired bootstrap 95% CI" in part and "(2000 resamples)" in part
    assert 'id="ablation-no-test"' not in part
    assert not any("nan" in cell.lower() for row in rows_of(part) for cell in row)


def test_old_run_has_no_ablation_or_availability(report, tmp_path):
    _, _, page = report  # metrics.json without "availability"
    part = section(page, "ablation")
    assert 'id="no-availability"' in part and "not available" in part
    assert 'id="availability"' in part  # the heading stays, saying so
    inputs = dataclasses.replace(make_run(tmp_path), ablation=None)  # a run before ablation.tsv
    part = section(html.render_html(html.build_context(inputs, b"\x89PNG\r\n\x1a\n")), "ablation")
    assert 'id="no-ablation"' in part and "not available" in part and "<tbody>" not in part


def test_availability_table_from_metrics(tmp_path):
    inputs = make_run(tmp_path)
    metrics = json.loads(inputs.metrics.read_text(encoding="utf-8"))
    metrics |= {"splits": list(SPLITS), "availability": AVAILABILITY}
    inputs.metrics.write_text(json.dumps(metrics), encoding="utf-8")
    page = html.render_html(html.build_context(inputs, b"\x89PNG\r\n\x1a\n"))
    part = section(page, "ablation")
    part = part[part.index('<h3 id="availability">By availability pattern</h3>') :]
    assert 'id="no-availability"' not in part
    header = re.findall(r'<th scope="col">([^<]*)</th>', part)
    assert header == ["split", "sequences not acquired", "patients", "accuracy", "macro AUC"]
    assert rows_of(part) == [
        ["train (training data: optimistic)", "none (all given)", "2", "1.000", "1.000"],
        ["test", "none (all given)", "2", "0.500", "0.750"],
        ["test", "T1w, FLAIR", "1", "1.000", "n/a"],  # a null macro AUC
    ]
    assert part.count('<tr class="training">') == 1


def test_bad_availability_and_ablation_are_named(tmp_path):
    inputs = make_run(tmp_path)
    metrics = json.loads(inputs.metrics.read_text(encoding="utf-8"))
    inputs.metrics.write_text(json.dumps(metrics | {"availability": {"test": 3}}))
    with pytest.raises(InputError, match=r"availability\.test is not a list"):
        tables.read_metrics(inputs.metrics)
    table = ABLATION.astype(object)
    table.loc[1, "delta_auc"] = "big"
    table.to_csv(inputs.ablation, sep="\t", index=False)
    with pytest.raises(InputError, match=r"'delta_auc'.*ablation\.tsv.*'big' \(sequence t1w\)"):
        tables.read_ablation(inputs.ablation)
    ABLATION.drop(columns="ci_high").to_csv(inputs.ablation, sep="\t", index=False)
    with pytest.raises(InputError, match="'ci_high'"):
        tables.read_ablation(inputs.ablation)


def test_ablation_split_is_named(tmp_path):
    assert html.ablation_split({}, predicted_only=False) == ("the held-out test patients", False)
    external = html.ablation_split({"splits": ["external"]}, predicted_only=True)
    assert external == ("the external patients of this prediction-only run", False)
    leaky = html.ablation_split({}, predicted_only=False, leaky=True)[0]
    assert leaky.startswith("the test slices") and "not held out" in leaky
    inputs = make_cv_run(tmp_path, "leave-one-cohort-out")  # no test split
    nan = ABLATION.assign(**{c: None for c in tables.ABLATION_COLUMNS[3:]})
    nan.to_csv(inputs.ablation, sep="\t", index=False, na_rep="NaN")
    part = section(html.render_html(html.build_context(inputs, b"\x89PNG\r\n\x1a\n")), "ablation")
    assert 'id="ablation-no-test"' in part and "of which this run has none" in part
    assert all(row[3:] == ["n/a"] * 3 for row in rows_of(part))


@pytest.mark.parametrize(
    ("reason", "lacking"),
    [
        ("missing t1w", ["t1w"]),
        ("missing roi; missing t1c, flair; age 12 <= 18", ["t1c", "flair"]),
        ("missing roi", []),
        (ONLY_FLAIR, ["t1w", "t1c", "t2w"]),
        (ONLY_FLAIR.replace("only flair", "only no sequence"), list(tables.SEQUENCE_LABELS)),
        ("label unknown (idh=empty, codeletion=empty): predicted, never trained", []),
    ],
)
def test_excluded_lacking_reads_the_reasons(reason, lacking):
    assert tables.excluded_lacking(reason) == lacking


def test_cohort_flow_counts_patients_lacking_each_sequence(report, tmp_path):
    _, _, page = report  # every included patient complete; A09 excluded for missing t2w
    part = section(page, "cohort-flow")
    counts = part[part.index('id="sequences-missing"') :]
    assert rows_of(counts) == [
        ["T1w", "0 (0.0%)", "0 (0.0%)"],
        ["T1c", "0 (0.0%)", "0 (0.0%)"],
        ["T2w", "0 (0.0%)", "1 (100.0%)"],
        ["FLAIR", "0 (0.0%)", "0 (0.0%)"],
        ["any sequence", "0 (0.0%)", "1 (100.0%)"],
    ]
    inputs = make_run(tmp_path)
    sheet = pd.read_csv(inputs.sheet, sep="\t", dtype=str, keep_default_na=False)
    sheet.loc[sheet["patient"] == "B01", "t1w"] = ""
    sheet.loc[sheet["patient"] == "A02", ["t1c", "flair"]] = ""
    sheet.to_csv(inputs.sheet, sep="\t", index=False)
    exclusions = [
        ("A09", "SITE-A", "all", "missing t1w, t2w"),
        ("A10", "SITE-A", "all", ONLY_FLAIR),
        ("A11", "SITE-A", "all", "age 12 <= 18"),
        ("A04", "SITE-A", "training", "label unknown (idh=empty): predicted, never trained"),
    ]
    pd.DataFrame(exclusions, columns=list(tables.EXCLUSION_COLUMNS)).to_csv(
        inputs.exclusions, sep="\t", index=False
    )
    part = section(
        html.render_html(html.build_context(inputs, b"\x89PNG\r\n\x1a\n")), "cohort-flow"
    )
    assert "kept under <code>inclusion.missing_sequences: allow</code>" in part
    assert rows_of(part[part.index('id="sequences-missing"') :]) == [
        ["T1w", "1 (14.3%)", "2 (66.7%)"],
        ["T1c", "1 (14.3%)", "1 (33.3%)"],
        ["T2w", "0 (0.0%)", "2 (66.7%)"],
        ["FLAIR", "1 (14.3%)", "0 (0.0%)"],
        ["any sequence", "2 (28.6%)", "2 (66.7%)"],
    ]


def test_every_sequence_present_says_so(tmp_path):
    inputs = make_run(tmp_path)
    pd.DataFrame(columns=list(tables.EXCLUSION_COLUMNS)).to_csv(
        inputs.exclusions, sep="\t", index=False
    )
    part = section(html.render_html(html.build_context(inputs, b"")), "cohort-flow")
    assert 'id="all-sequences"' in part and "Every patient has all four sequences" in part
