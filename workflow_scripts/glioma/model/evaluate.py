"""Metrics of the predictions at slice and patient level, per split: metrics.json and Table 2."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from glioma.constants import CLASSES, SPLITS
from glioma.dataset.splits import read_splits
from glioma.errors import InputError
from glioma.io import atomic_path
from glioma.model.data import is_slice_level
from glioma.model.metrics import CLASS_KEYS, classification_metrics
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
    merged = merged[merged["split"].isin(SPLITS)].copy()
    merged["label"] = merged["class"].map({name: k for k, name in enumerate(CLASSES)})
    merged["key"] = merged["cohort"].astype(str) + "/" + merged["patient"].astype(str)
    return merged


def patient_level(slices: pd.DataFrame) -> pd.DataFrame:
    """Mean slice probability per patient and split (a leaky split may put a patient in several)."""
    grouped = slices.groupby(["split", "key"], sort=True)
    means = grouped[list(PROB_COLUMNS)].mean()
    means["label"] = grouped["label"].first()
    return means.reset_index()


def level_metrics(frame: pd.DataFrame, *, n_boot: int, seed: int) -> dict[str, Any]:
    """Metrics of every split in ``frame`` (rows of one level)."""
    out = {}
    for index, split in enumerate(SPLITS):
        part = frame[frame["split"] == split]
        out[split] = classification_metrics(
            part["label"].to_numpy(),
            part[list(PROB_COLUMNS)].to_numpy(),
            part["key"].to_numpy(),
            n_boot=n_boot,
            seed=seed + index,
        )
    return out


def compute_metrics(slices: pd.DataFrame, *, leaky: bool, n_boot: int, seed: int) -> dict[str, Any]:
    """The whole metrics.json document from labelled slices (see :func:`labelled_slices`)."""
    document: dict[str, Any] = {
        "patient": level_metrics(patient_level(slices), n_boot=n_boot, seed=seed),
        "slice": level_metrics(slices, n_boot=n_boot, seed=seed),
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
    for split in SPLITS:
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
    for split in SPLITS:
        frames = {
            "patient": patients[patients["split"] == split],
            "slice": slices[slices["split"] == split],
        }
        title = f"{split}: {NOTES[split]}" + (" (LEAKY slice split)" if leaky else "")
        plot_roc(frames, plot_outs["roc"][split], title=title)
        plot_confusion(document, split, plot_outs["confusion"][split], title=title)


def baseline_metrics(
    path: str | Path, splits: pd.DataFrame, *, n_boot: int, seed: int
) -> dict[str, Any]:
    """The ``baseline`` section of metrics.json: the baseline's slices scored like the network's.

    The same seed draws the same bootstrap resamples of patients as for the network.
    """
    path = Path(path)
    slices = labelled_slices(pd.read_parquet(path), splits, path)
    document = compute_metrics(slices, leaky=False, n_boot=n_boot, seed=seed)
    return _json_safe(document)


def evaluate_predictions(
    slices_path: str | Path,
    splits_path: str | Path,
    metrics_out: str | Path,
    table_outs: dict[str, str | Path],
    plot_outs: dict[str, dict[str, str | Path]] | None = None,
    *,
    n_boot: int,
    seed: int,
    aggregate: str = "mean",
    baseline_path: str | Path | None = None,
    baseline_table_out: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate slices.parquet against the manifest and write metrics, tables and figures.

    Args:
        slices_path: ``results/predictions/slices.parquet``.
        splits_path: ``results/splits.tsv``.
        metrics_out: ``results/metrics/metrics.json``.
        table_outs: ``{"patient": table2_patient.tsv, "slice": table2_slice.tsv}``.
        plot_outs: ``{"roc": {split: png}, "confusion": {split: png}}``, or None for no figures.
        n_boot: bootstrap resamples of patients for the AUC CIs (``evaluate.bootstrap``).
        seed: bootstrap seed.
        aggregate: how slice probabilities become a patient's (``evaluate.aggregate``).
        baseline_path: ``results/baseline/slices.parquet``, scored by the same code into the
            document's ``baseline`` section (``{"patient": ..., "slice": ...}``); None for none.
        baseline_table_out: ``table2_baseline_patient.tsv``, the baseline's patient-level Table
            2 (with ``baseline_path`` only).

    Returns:
        The metrics document written.

    Raises:
        ValueError: an unknown ``aggregate``.
    """
    if aggregate != "mean":
        raise ValueError(f"evaluate.aggregate must be 'mean'; got {aggregate!r}")
    slices_path = Path(slices_path)
    splits = read_splits(splits_path)
    leaky = is_slice_level(splits)
    if leaky:
        log.warning(LEAKY_WARNING)
    slices = labelled_slices(pd.read_parquet(slices_path), splits, slices_path)
    document = _json_safe(compute_metrics(slices, leaky=leaky, n_boot=n_boot, seed=seed))
    if baseline_path is not None:
        document["baseline"] = baseline_metrics(baseline_path, splits, n_boot=n_boot, seed=seed)
    with atomic_path(metrics_out) as tmp:
        tmp.write_text(json.dumps(document, indent=2) + "\n")
    tables = [(document[level], table_outs[level]) for level in LEVELS]
    if baseline_path is not None and baseline_table_out is not None:
        tables.append((document["baseline"]["patient"], baseline_table_out))
    for values, out in tables:
        with atomic_path(out) as tmp:
            table2(values, leaky=leaky).to_csv(tmp, sep="\t", index=False, na_rep="")
    if plot_outs is not None:
        write_figures(slices, document, plot_outs, leaky=leaky)
    for level in LEVELS:
        summary = {s: document[level][s]["macro_auc"] for s in SPLITS}
        log.info("%s-level macro AUC: %s", level, summary)
    if baseline_path is not None:
        summary = {s: document["baseline"]["patient"][s]["macro_auc"] for s in SPLITS}
        log.info("baseline patient-level macro AUC: %s", summary)
    return document
