"""What `make demo` prints: `python -m glioma.model.summary METRICS_JSON`, per scheme."""

from __future__ import annotations

import json
from pathlib import Path

from glioma.constants import CLASSES
from glioma.model import summary
from glioma.model.summary import summary_lines


def entry(n: int, macro: float | None) -> dict:
    classes = {c: {"auc": 0.9, "auc_ci_low": 0.8, "auc_ci_high": 1.0} for c in CLASSES}
    return {"n": n, "accuracy": 0.75, "macro_auc": macro, "classes": classes}


def fold(name: str, macro: float | None) -> dict:
    return {"fold": name, "held_out": None, "n": 5, "accuracy": 0.6, "macro_auc": macro}


def cv_metrics(scheme: str = "k-fold") -> dict:
    loco = scheme == "leave-one-cohort-out"
    names = ["SITE-A", "SITE-B", "SITE-C"] if loco else ["0", "1", "2"]
    splits = ["cv"] if loco else ["cv", "test"]
    calibration = {
        s: {
            "n": 9,
            "in_sample": s == "cv",
            "raw": {"top_label": 0.25, "nll": 0.9},
            "scaled": {"top_label": 0.05, "nll": 0.7},
        }
        for s in splits
    }
    review = {
        "n": 9,
        "n_flagged": 2,
        "n_unflagged": 7,
        "accuracy_flagged": 0.5,
        "accuracy_unflagged": None,
        "aurc": 0.1,
    }
    return {
        "splits": splits,
        "patient": {s: entry(15 if s == "cv" else 9, 0.85) for s in splits},
        "slice": {s: entry(300, 0.8) for s in splits},
        "cv": {
            "scheme": scheme,
            "n_folds": 3,
            "folds": [fold(names[0], 0.7), fold(names[1], float("nan")), fold(names[2], 0.9)],
            "summary": {"macro_auc": {"mean": 0.8, "sd": 0.1414, "n_folds": 2}},
        },
        "calibration": {"fitted_on": "cv", "temperature": 0.61, "bins": 5, "splits": calibration},
        "uncertainty": {"measure": "normalised_entropy", "threshold": 0.6, "splits": {
            s: review for s in splits
        }},
        "baseline": {"patient": {s: entry(15, 0.5) for s in splits}},
    }  # fmt: skip


def test_old_single_split_metrics_print_train_val_test_only():
    lines = summary_lines({"patient": {s: entry(3, 0.8) for s in ("train", "val", "test")}})
    assert [line.split(":")[0] for line in lines] == [
        "patient train (training data)",
        "patient val  ",
        "patient test ",
    ]
    assert "IDHwt 0.900 [0.800-1.000]" in lines[2]


def test_k_fold_lines_for_cv_and_test_then_folds_calibration_review_baseline():
    lines = summary_lines(cv_metrics())
    heads = [line.split(":")[0] for line in lines]
    assert heads[:4] == [
        "patient cv    (out-of-fold)",
        "patient test ",
        "slice   cv    (out-of-fold)",
        "slice   test ",
    ]
    assert "n=15, accuracy 0.750, macro AUC 0.850" in lines[0]
    # The undefined fold is left out of the range and counted out of the mean.
    assert lines[4] == (
        "k-fold: per-fold held-out macro AUC: mean 0.800 ± SD 0.141 over 2 of 3 folds "
        "(range 0.700-0.900)"
    )
    assert lines[5] == (
        "calibration (test, T=0.610, fitted on cv): top-label ECE 0.250 raw, 0.050 scaled; "
        "NLL 0.900 raw, 0.700 scaled"
    )
    assert lines[6].startswith("review (cv, normalised entropy > 0.6): 2 of 9 flagged")
    assert lines[7] == (
        "review (test, normalised entropy > 0.6): 2 of 9 flagged, accuracy flagged 0.500 vs "
        "not flagged n/a, AURC 0.100"
    )
    # Baseline comparisons stay last, so dropping the baseline drops exactly them.
    assert [line.split(":")[0] for line in lines[8:]] == ["patient cv   ", "patient test "]
    without = {k: v for k, v in cv_metrics().items() if k != "baseline"}
    assert summary_lines(without) == lines[:8]


def test_leave_one_cohort_out_prints_one_line_per_held_out_cohort():
    lines = summary_lines(cv_metrics("leave-one-cohort-out"))
    assert not any(line.startswith(("patient test", "patient train")) for line in lines)
    cohorts = [line for line in lines if line.startswith("  held-out cohort")]
    assert cohorts == [
        "  held-out cohort SITE-A: n=5, macro AUC 0.700, accuracy 0.600",
        "  held-out cohort SITE-B: n=5, macro AUC n/a, accuracy 0.600",
        "  held-out cohort SITE-C: n=5, macro AUC 0.900, accuracy 0.600",
    ]
    assert any(
        line.startswith("leave-one-cohort-out: per-fold held-out macro AUC") for line in lines
    )
    # Without a test split, calibration is shown out-of-fold, where T was fitted: in-sample.
    assert any(line.startswith("calibration (cv, in-sample, T=0.610") for line in lines)


def test_main_prints_the_summary(tmp_path: Path, capsys):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(cv_metrics()), encoding="utf-8")
    assert summary.main([str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == summary_lines(cv_metrics())


def test_availability_and_ablation_lines(tmp_path) -> None:
    from glioma.model.summary import ablation_lines, availability_lines

    metrics = {
        "splits": ["train", "val", "test"],
        "availability": {
            "train": [{"missing": "none", "n_patients": 9}, {"missing": "t1w", "n_patients": 1}],
            "val": [{"missing": "none", "n_patients": 3, "accuracy": 1.0, "macro_auc": None}],
            "test": [
                {"missing": "none", "n_patients": 4, "accuracy": 0.75, "macro_auc": 0.9},
                {"missing": "t1c, flair", "n_patients": 1, "accuracy": 0.0, "macro_auc": None},
            ],
        },
    }
    assert availability_lines(metrics) == [
        "by sequences present (test): all four: n=4, accuracy 0.750, macro AUC 0.900; "
        "no t1c, flair: n=1, accuracy 0.000, macro AUC n/a"
    ]
    assert availability_lines({"splits": ["test"]}) == []
    path = tmp_path / "ablation.tsv"
    path.write_text(
        "sequence\tn_patients\tn_lacking\tmacro_auc_all\tmacro_auc_without\tdelta_auc\tci_low\t"
        "ci_high\tbootstrap\nt1w\t5\t0\t0.9\t0.8\t-0.1\t-0.3\t0.05\t100\n"
        "flair\t5\t1\t0.9\t\t\t\t\t0\n"
    )
    assert ablation_lines(path) == [
        "without t1w   (n=5): macro AUC 0.900 -> 0.800, change -0.100 [-0.300 to 0.050]",
        "without flair (n=5): macro AUC 0.900 -> n/a, change n/a [n/a to n/a]",
    ]
    assert ablation_lines(tmp_path / "none.tsv") == []
