"""Metrics of the predictions at slice and patient level, per split: metrics.json and Table 2.

The splits scored are those of the run: train, val and test for a single split; ``cv`` (every
development patient predicted out-of-fold) and test (predicted by the fold ensemble) under
cross-validation. Beside discrimination, metrics.json holds the per-fold figures (``cv``),
calibration before and after temperature scaling (``calibration``) and the accuracy of the
patients flagged for review (``uncertainty``): see :mod:`glioma.model.assessment`.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from glioma.constants import CLASSES, CV_SPLIT, EVAL_SPLITS, EXTERNAL_SPLIT, SPLITS
from glioma.dataset.splits import read_splits
from glioma.errors import InputError
from glioma.io import atomic_path
from glioma.model.assessment import (
    FOLD_METRICS,
    KFOLD,
    LOCO,
    calibration_section,
    fold_section,
    uncertainty_section,
)
from glioma.model.data import is_slice_level
from glioma.model.metrics import CLASS_KEYS, classification_metrics
from glioma.model.patterns import missing_patterns, pattern_metrics, write_pattern_table
from glioma.model.predict import PROB_COLUMNS

log = logging.getLogger(__name__)

LEVELS = ("patient", "slice")
LEAKY_WARNING = (
    "split.level is 'slice' (the study's protocol): slices of one patient are in train, val and "
    "test, so these scores are inflated by patient leakage and do not measure performance on "
    "new patients."
)
NOTES = {
    "train": "training data (optimistic)",
    "val": "validation (used for early stopping)",
    "test": "held-out test",
    CV_SPLIT: "out-of-fold (each patient by the fold model that never saw it)",
    EXTERNAL_SPLIT: "external (a frozen model bundle that never saw them)",
}
TABLE_COLUMNS = ("split", "note", "class", "n", *CLASS_KEYS, "auc_95ci", "accuracy")


def labelled_slices(slices: pd.DataFrame, splits: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Slices of labelled patients in train/val/test, with ``label`` and a ``key`` per patient.

    Classes come from the split manifest; a slice-table class that disagrees is an error.

    Raises:
        InputError: a column is missing or a class disagrees with the manifest.
    """
    for column in ("cohort", "patient", "split", "class", *PROB_COLUMNS):
        if column not in slices.columns:
            raise InputError("column is missing", column=column, path=path)
    labels = splits.loc[splits["class"] != "", ["cohort", "patient", "class"]]
    merged = slices.merge(labels, on=["cohort", "patient"], how="inner", suffixes=("", "_manifest"))
    bad = merged[merged["class"] != merged["class_manifest"]]
    if len(bad):
        first = bad.iloc[0]
        raise InputError(
            f"class {first['class']!r} differs from {first['class_manifest']!r} in the manifest",
            patient=first["patient"],
            column="class",
            path=path,
        )
    merged = merged[merged["split"].isin(EVAL_SPLITS)].copy()
    merged["label"] = merged["class"].map({name: k for k, name in enumerate(CLASSES)})
    merged["key"] = merged["cohort"].astype(str) + "/" + merged["patient"].astype(str)
    return merged


def patient_level(slices: pd.DataFrame) -> pd.DataFrame:
    """Mean slice probability per patient and split (a leaky split may put a patient in several)."""
    grouped = slices.groupby(["split", "key"], sort=True)
    means = grouped[list(PROB_COLUMNS)].mean()
    means["label"] = grouped["label"].first()
    return means.reset_index()


def splits_of(splits: pd.DataFrame) -> tuple[str, ...]:
    """The splits a run is scored on: ``cv`` and test under cross-validation, else train/val/test.

    Leave-one-cohort-out has no test split (every cohort is held out in turn); a
    prediction-only run scores its ``external`` patients only.
    """
    if (splits["split"] == EXTERNAL_SPLIT).any():
        return (EXTERNAL_SPLIT,)
    if not (splits["split"] == CV_SPLIT).any():
        return SPLITS
    return (CV_SPLIT, "test") if (splits["split"] == "test").any() else (CV_SPLIT,)


def level_metrics(
    frame: pd.DataFrame, *, n_boot: int, seed: int, shown: tuple[str, ...] = SPLITS
) -> dict[str, Any]:
    """Metrics of every split in ``shown`` (rows of one level of ``frame``)."""
    out = {}
    for split in shown:
        part = frame[frame["split"] == split]
        out[split] = classification_metrics(
            part["label"].to_numpy(),
            part[list(PROB_COLUMNS)].to_numpy(),
            part["key"].to_numpy(),
            n_boot=n_boot,
            # train, val, test keep the seeds they had before cross-validation existed.
            seed=seed + (*SPLITS, CV_SPLIT, EXTERNAL_SPLIT).index(split),
        )
    return out


def compute_metrics(
    slices: pd.DataFrame,
    *,
    leaky: bool,
    n_boot: int,
    seed: int,
    shown: tuple[str, ...] = SPLITS,
) -> dict[str, Any]:
    """Discrimination of metrics.json from labelled slices (see :func:`labelled_slices`)."""
    document: dict[str, Any] = {
        "splits": list(shown),
        "patient": level_metrics(patient_level(slices), n_boot=n_boot, seed=seed, shown=shown),
        "slice": level_metrics(slices, n_boot=n_boot, seed=seed, shown=shown),
    }
    if leaky:
        document["leaky_split"] = True
        document["warning"] = LEAKY_WARNING
    return document


def _format_ci(auc: float | None, low: float | None, high: float | None) -> str:
    """``0.912 (0.851-0.960)``, or what is available."""
    if auc is None:
        return ""
    if low is None or high is None:
        return f"{auc:.3f}"
    return f"{auc:.3f} ({low:.3f}-{high:.3f})"


def table2(level: dict[str, Any], *, leaky: bool) -> pd.DataFrame:
    """The study's Table 2 layout for one level: a row per split and class, then a macro row."""
    rows = []
    for split in [s for s in EVAL_SPLITS if s in level]:
        metrics = level[split]
        note = NOTES[split] + ("; LEAKY slice-level split" if leaky else "")
        for name in CLASSES:
            values = metrics["classes"][name]
            ci = _format_ci(values["auc"], values["auc_ci_low"], values["auc_ci_high"])
            rows.append(
                {
                    "split": split,
                    "note": note,
                    "class": name,
                    "n": metrics["n"],
                    **values,
                    "auc_95ci": ci,
                }
            )
        rows.append(
            {
                "split": split,
                "note": note,
                "class": "macro",
                "n": metrics["n"],
                "auc": metrics["macro_auc"],
                "accuracy": metrics["accuracy"],
            }
        )
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def _json_safe(value: Any) -> Any:
    """Replace NaN and infinities by None so the JSON is standard."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def write_figures(
    slices: pd.DataFrame,
    document: dict[str, Any],
    plot_outs: dict[str, dict[str, str | Path]],
    *,
    leaky: bool,
) -> None:
    """ROC curves and confusion matrices of every split (patient and slice level side by side)."""
    from glioma.model.plots import plot_confusion, plot_roc

    patients = patient_level(slices)
    for split in document["splits"]:
        frames = {
            "patient": patients[patients["split"] == split],
            "slice": slices[slices["split"] == split],
        }
        title = f"{split}: {NOTES[split]}" + (" (LEAKY slice split)" if leaky else "")
        plot_roc(frames, plot_outs["roc"][split], title=title)
        plot_confusion(document, split, plot_outs["confusion"][split], title=title)


def write_trust_figures(
    patients: pd.DataFrame,
    document: dict[str, Any],
    uncertainty: dict[str, float],
    plot_outs: dict[str, dict[str, str | Path]],
) -> None:
    """Reliability diagrams (raw and temperature-scaled) and risk-coverage curves per split."""
    from glioma.model.calibration import apply_temperature
    from glioma.model.calibration_plots import plot_reliability, plot_risk_coverage

    calibration, review = document["calibration"], document["uncertainty"]
    temperature = calibration["temperature"]
    for split in document["splits"]:
        part = patients[patients["split"] == split]
        labels = part["label"].to_numpy(np.int64)
        probs = part[list(PROB_COLUMNS)].to_numpy(np.float64)
        scaled = apply_temperature(probs, temperature) if len(probs) else probs
        fitted = (
            "fitted on these patients"
            if split == calibration["fitted_on"]
            else (f"fitted on {calibration['fitted_on']}")
        )
        plot_reliability(
            labels, probs, scaled, plot_outs["calibration"][split],
            title=f"{split} ({len(part)} patients): {NOTES[split]}; T={temperature:.2f} {fitted}",
            n_bins=calibration["bins"], temperature=temperature,
        )  # fmt: skip
        correct = probs.argmax(axis=1) == labels if len(probs) else np.zeros(0, bool)
        plot_risk_coverage(
            correct, part["key"].map(uncertainty).to_numpy(np.float64),
            plot_outs["uncertainty"][split],
            title=f"{split} ({len(part)} patients): {NOTES[split]}",
            threshold=review["threshold"], label="normalised predictive entropy",
        )  # fmt: skip


def baseline_metrics(
    path: str | Path,
    splits: pd.DataFrame,
    *,
    n_boot: int,
    seed: int,
    shown: tuple[str, ...] = SPLITS,
) -> dict[str, Any]:
    """The ``baseline`` section of metrics.json: the baseline's slices scored like the network's.

    The same seed draws the same bootstrap resamples of patients as for the network.
    """
    path = Path(path)
    slices = labelled_slices(pd.read_parquet(path), splits, path)
    document = compute_metrics(slices, leaky=False, n_boot=n_boot, seed=seed, shown=shown)
    return _json_safe(document)


def read_uncertainty(path: str | Path) -> dict[str, float]:
    """Patient key (``cohort/patient``) -> normalised entropy, from predictions.csv.

    Raises:
        InputError: the column is missing.
    """
    table = pd.read_csv(path, dtype={"cohort": str, "patient": str})
    if "normalised_entropy" not in table.columns:
        raise InputError("column is missing", column="normalised_entropy", path=path)
    keys = table["cohort"] + "/" + table["patient"]
    return dict(zip(keys, table["normalised_entropy"].astype(float), strict=True))


def fold_table(section: dict[str, Any] | None) -> pd.DataFrame:
    """One row per fold (held-out cohort under leave-one-cohort-out), then mean and SD rows."""
    columns = ["fold", "held_out", *FOLD_METRICS]
    if section is None:
        return pd.DataFrame(columns=columns)
    rows = [{column: row.get(column) for column in columns} for row in section["folds"]]
    for statistic in ("mean", "sd"):
        row = {"fold": statistic, "held_out": None}
        row.update({m: section["summary"][m][statistic] for m in FOLD_METRICS[1:]})
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def evaluate_predictions(
    slices_path: str | Path,
    splits_path: str | Path,
    metrics_out: str | Path,
    table_outs: dict[str, str | Path],
    plot_outs: dict[str, Any] | None = None,
    *,
    n_boot: int,
    seed: int,
    baseline_path: str | Path | None = None,
    predictions_path: str | Path | None = None,
    review_threshold: float = 0.6,
    calibration_bins: int = 10,
    temperature: float | None = None,
    sheet_path: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate slices.parquet against the manifest and write metrics, tables and figures.

    Args:
        slices_path: ``results/predictions/slices.parquet``.
        splits_path: ``results/splits.tsv``.
        metrics_out: ``results/metrics/metrics.json``.
        table_outs: ``{"patient": table2_patient.tsv, "slice": table2_slice.tsv}``, and
            optionally ``"baseline"`` (the baseline's patient-level Table 2, with
            ``baseline_path``) and ``"folds"`` (the per-fold table).
        plot_outs: ``{"roc": {split: png}, "confusion": {split: png}}``, and with
            ``predictions_path`` ``"calibration"`` and ``"uncertainty"`` (``{split: png}``), and
            under cross-validation ``"folds"`` (a png); None for no figures.
        n_boot: bootstrap resamples of patients for the AUC CIs (``evaluate.bootstrap``).
        seed: bootstrap seed.
        baseline_path: ``results/baseline/slices.parquet``, scored by the same code into the
            document's ``baseline`` section (``{"patient": ..., "slice": ...}``); None for none.
        predictions_path: ``results/predictions/predictions.csv`` (its uncertainty columns),
            for the ``calibration`` and ``uncertainty`` sections; None for neither.
        review_threshold: ``evaluate.review_entropy``.
        calibration_bins: ``evaluate.calibration_bins``.
        temperature: a model bundle's temperature (prediction-only runs), used as it is
            instead of one fitted on this run's val or out-of-fold patients.
        sheet_path: ``results/cohort/samples.tsv``, for the ``availability`` section (metrics
            per pattern of sequences present, :mod:`glioma.model.patterns`) and, with
            ``table_outs["availability"]``, its table; None for neither.

    Returns:
        The metrics document written.
    """
    slices_path = Path(slices_path)
    splits = read_splits(splits_path)
    leaky = is_slice_level(splits)
    if leaky:
        log.warning(LEAKY_WARNING)
    shown = splits_of(splits)
    slices = labelled_slices(pd.read_parquet(slices_path), splits, slices_path)
    document = compute_metrics(slices, leaky=leaky, n_boot=n_boot, seed=seed, shown=shown)
    patients = patient_level(slices)
    scheme = LOCO if CV_SPLIT in shown and "test" not in shown else KFOLD
    cv = fold_section(patients, splits, scheme=scheme)
    if cv is not None:
        document["cv"] = cv
    uncertainty = {}
    if predictions_path is not None:
        uncertainty = read_uncertainty(predictions_path)
        fit_on = "bundle" if temperature is not None else CV_SPLIT if CV_SPLIT in shown else "val"
        document["calibration"] = calibration_section(
            patients, shown, fit_on=fit_on, n_bins=calibration_bins, temperature=temperature
        )
        document["uncertainty"] = uncertainty_section(
            patients, uncertainty, shown, threshold=review_threshold
        )
    if sheet_path is not None:
        document["availability"] = pattern_metrics(patients, missing_patterns(sheet_path), shown)
    document = _json_safe(document)
    if baseline_path is not None:
        document["baseline"] = baseline_metrics(
            baseline_path, splits, n_boot=n_boot, seed=seed, shown=shown
        )
    with atomic_path(metrics_out) as tmp:
        tmp.write_text(json.dumps(document, indent=2) + "\n")
    _write_tables(document, table_outs, leaky=leaky)
    if plot_outs is not None:
        write_figures(slices, document, plot_outs, leaky=leaky)
        if predictions_path is not None:
            write_trust_figures(patients, document, uncertainty, plot_outs)
        if cv is not None and plot_outs.get("folds"):
            from glioma.model.plots import plot_folds

            plot_folds(document["cv"], plot_outs["folds"])
    _log_summary(document)
    return document


def _write_tables(document: dict[str, Any], outs: dict[str, str | Path], *, leaky: bool) -> None:
    """Table 2 of each level (and of the baseline), and the per-fold table, as TSV."""
    tables = [(document[level], outs[level]) for level in LEVELS]
    if "baseline" in document and outs.get("baseline"):
        tables.append((document["baseline"]["patient"], outs["baseline"]))
    elif outs.get("baseline"):
        # No baseline (a prediction-only run): the table has its header only.
        with atomic_path(outs["baseline"]) as tmp:
            pd.DataFrame(columns=list(TABLE_COLUMNS)).to_csv(tmp, sep="\t", index=False)
    for values, out in tables:
        with atomic_path(out) as tmp:
            table2(values, leaky=leaky).to_csv(tmp, sep="\t", index=False, na_rep="")
    if outs.get("folds"):
        with atomic_path(outs["folds"]) as tmp:
            fold_table(document.get("cv")).to_csv(tmp, sep="\t", index=False, na_rep="")
    if outs.get("availability"):
        write_pattern_table(document.get("availability", {}), outs["availability"])


def _log_summary(document: dict[str, Any]) -> None:
    """Log the macro AUC of every level and split, and the per-fold mean and SD."""
    for level in LEVELS:
        summary = {s: document[level][s]["macro_auc"] for s in document["splits"]}
        log.info("%s-level macro AUC: %s", level, summary)
    if "baseline" in document:
        summary = {s: document["baseline"]["patient"][s]["macro_auc"] for s in document["splits"]}
        log.info("baseline patient-level macro AUC: %s", summary)
    if "cv" in document:
        macro = document["cv"]["summary"]["macro_auc"]
        log.info("per-fold held-out macro AUC: mean %s, SD %s", macro["mean"], macro["sd"])
