"""The report and `make demo`'s summary of a cross-validated run: folds, calibration, review."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
from test_report import fake_metrics, make_run, png

from glioma.constants import CLASSES
from glioma.model.summary import summary_lines
from glioma.report import html


def _fold(fold: str, n: int, macro: float) -> dict:
    return {
        "fold": fold, "held_out": None, "n": n, "accuracy": 0.8, "macro_auc": macro,
        **{f"auc_{name}": macro for name in CLASSES},
    }  # fmt: skip


def cv_metrics(scheme: str = "k-fold") -> dict:
    """metrics.json of a cross-validated run: cv and test splits and every new section."""
    base = fake_metrics()
    folds = ["SITE-A", "SITE-B"] if scheme == "leave-one-cohort-out" else ["0", "1", "2"]
    rows = [_fold(f, 4 + k, 0.7 + 0.1 * k) for k, f in enumerate(folds)]
    summary = {
        m: {"mean": 0.8, "sd": 0.1, "n_folds": len(folds)}
        for m in ("accuracy", "macro_auc", *(f"auc_{c}" for c in CLASSES))
    }
    ece = {**dict.fromkeys(CLASSES, 0.2), "top_label": 0.25, "nll": 0.9}
    scaled = {**dict.fromkeys(CLASSES, 0.1), "top_label": 0.05, "nll": 0.7}
    splits = ["cv", "test"]
    return {
        "splits": splits,
        "patient": {"cv": base["train"], "test": base["test"]},
        "slice": {"cv": base["train"], "test": base["test"]},
        "cv": {"scheme": scheme, "n_folds": len(folds), "folds": rows, "summary": summary},
        "calibration": {
            "fitted_on": "cv",
            "temperature": 0.61,
            "bins": 5,
            "splits": {
                s: {"n": 4, "in_sample": s == "cv", "raw": ece, "scaled": scaled} for s in splits
            },
        },
        "uncertainty": {
            "measure": "normalised_entropy",
            "threshold": 0.6,
            "splits": {
                s: {
                    "n": 4,
                    "n_flagged": 1,
                    "n_unflagged": 3,
                    "accuracy_flagged": 0.0,
                    "accuracy_unflagged": 1.0,
                    "aurc": 0.123,
                }
                for s in splits
            },
        },
    }


def _cv_run(root: Path, scheme: str = "k-fold") -> str:
    inputs = make_run(root)
    metrics_dir = root / "results/metrics"
    (metrics_dir / "metrics.json").write_text(json.dumps(cv_metrics(scheme)), encoding="utf-8")
    figures = {}
    for kind in ("roc", "confusion", "calibration", "uncertainty"):
        figures[kind] = []
        for split in ("cv", "test"):
            path = metrics_dir / f"{kind}_{split}.png"
            path.write_bytes(png("#dddddd", f"{kind} {split}"))
            figures[kind].append(path)
    (metrics_dir / "folds.png").write_bytes(png("#cccccc", "folds"))
    histories = []
    for fold in ("0", "1"):
        folder = root / "results/model/folds" / fold
        folder.mkdir(parents=True)
        history = pd.read_csv(root / "results/model/history.csv")
        history.to_csv(folder / "history.csv", index=False)
        histories.append(folder / "history.csv")
    predictions = pd.read_csv(root / "results/predictions/predictions.csv")
    predictions["model"] = "ensemble"
    predictions["normalised_entropy"] = 0.7
    predictions["review"] = [True] + [False] * (len(predictions) - 1)
    predictions.to_csv(root / "results/predictions/predictions.csv", index=False)
    inputs = html.ReportInputs(
        **{
            **inputs.__dict__,
            **figures,
            "history": histories,
            "folds_figure": metrics_dir / "folds.png",
        }
    )
    html.write_report(inputs, root / "results/report.html", root / "results/curves.png")
    return (root / "results/report.html").read_text(encoding="utf-8")


def _section(page: str, anchor: str) -> str:
    start = page.index(f'id="{anchor}"')
    return page[start : page.index("</section>", start)]


def test_cross_validated_report(tmp_path: Path) -> None:
    page = _cv_run(tmp_path)
    cv = _section(page, "cross-validation")
    rows = re.findall(r"<tr>(.*?)</tr>", cv, re.S)
    assert len(rows) == 1 + 3 + 2  # header, three folds, then mean and SD
    assert "<td>mean</td>" in cv and "<td>SD</td>" in cv and "k-fold, 3 folds" in cv
    assert "data:image/png" in cv
    assert "cv (out-of-fold)" in _section(page, "table2")
    calibration = _section(page, "calibration")
    assert "T = 0.610" in calibration and "in-sample" in calibration
    assert "<td>0.250</td><td>0.050</td>" in calibration  # top-label ECE raw -> scaled
    assert "out-of-fold patients: each predicted by the fold model" in calibration
    assert "predicted by the mean of the 3 fold models" in calibration
    review = _section(page, "uncertainty")
    assert "0.6" in review and "<td>0.123</td>" in review
    assert 'class="flag">REVIEW</td>' in _section(page, "predictions")
    assert "results/model/folds/0/history.csv" in _section(page, "training")


def test_leave_one_cohort_out_rows_are_held_out_cohorts(tmp_path: Path) -> None:
    cv = _section(_cv_run(tmp_path, "leave-one-cohort-out"), "cross-validation")
    assert "held-out cohort" in cv and "<td>SITE-A</td>" in cv and "<td>SITE-B</td>" in cv
    assert "a hospital the model never saw" in cv


def test_an_old_metrics_file_still_renders(tmp_path: Path) -> None:
    inputs = make_run(tmp_path)  # metrics.json without splits, cv, calibration, uncertainty
    html.write_report(inputs, tmp_path / "r.html", tmp_path / "c.png")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert 'id="cross-validation"' not in page
    assert "holds no calibration section" in page


def test_summary_lines_of_a_cross_validated_run() -> None:
    lines = summary_lines(cv_metrics())
    assert any(line.startswith("patient cv    (out-of-fold)") for line in lines)
    assert any(line.startswith("patient test") for line in lines)
    assert not any(" train" in line for line in lines)
    fold_line = next(line for line in lines if line.startswith("k-fold"))
    assert "mean 0.800 ± SD 0.100 over 3 folds (range 0.700-0.900)" in fold_line
    assert any("top-label ECE 0.250 raw, 0.050 scaled" in line for line in lines)
    assert any(line.startswith("review (test") and "1 of 4 flagged" in line for line in lines)
    loco = summary_lines(cv_metrics("leave-one-cohort-out"))
    assert any("held-out cohort SITE-B" in line for line in loco)
