"""Metrics by availability pattern: how the model does on patients lacking each set of sequences.

A patient's pattern is the sequences its sheet row leaves empty (``"none"`` when it has all
four, else e.g. ``"t1w"`` or ``"t1c, flair"``); under ``inclusion.missing_sequences: allow``
such patients are trained on and predicted. metrics.json's ``availability`` section holds, per
scored split and pattern, the patients, accuracy and macro AUC (None where fewer than the three
classes make it undefined), and ``results/metrics/table_availability.tsv`` the same as a table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from glioma.constants import COMPLETE_PATTERN, SEQUENCES
from glioma.io import atomic_path
from glioma.model.metrics import macro_auc
from glioma.model.predict import PROB_COLUMNS

#: The pattern of a patient with every sequence.
COMPLETE = COMPLETE_PATTERN
TABLE_COLUMNS = ("split", "missing", "n_patients", "accuracy", "macro_auc")


def missing_patterns(sheet_path: str | Path) -> dict[str, str]:
    """Patient key (``cohort/patient``) -> its pattern, from the validated sample sheet."""
    sheet = pd.read_csv(sheet_path, sep="\t", dtype=str, keep_default_na=False)
    lacking = [s for s in SEQUENCES if s in sheet.columns]
    keys = sheet["cohort"] + "/" + sheet["patient"]
    return {
        key: ", ".join(s for s in lacking if row[s] == "") or COMPLETE
        for key, (_, row) in zip(keys, sheet.iterrows(), strict=True)
    }


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def pattern_metrics(
    patients: pd.DataFrame, patterns: Mapping[str, str], shown: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """Metrics of every pattern of every scored split.

    Args:
        patients: patient-level rows (``split``, ``key``, ``label``, the probability columns).
        patterns: key -> pattern (:func:`missing_patterns`); a key not in it counts as
            complete.
        shown: the scored splits, in report order.

    Returns:
        ``{split: [{"missing", "n_patients", "accuracy", "macro_auc"}, ...]}``, the complete
        pattern first, then the others by name.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for split in shown:
        part = patients[patients["split"] == split]
        pattern = part["key"].map(lambda key: patterns.get(key, COMPLETE))
        rows = []
        for name in sorted(set(pattern), key=lambda p: (p != COMPLETE, p)):
            group = part[pattern == name]
            labels = group["label"].to_numpy(int)
            probs = group[list(PROB_COLUMNS)].to_numpy(np.float64)
            rows.append(
                {
                    "missing": name,
                    "n_patients": len(group),
                    "accuracy": float((probs.argmax(axis=1) == labels).mean()),
                    "macro_auc": _finite(macro_auc(labels, probs)),
                }
            )
        out[split] = rows
    return out


def pattern_table(section: Mapping[str, list[dict[str, Any]]]) -> pd.DataFrame:
    """The ``availability`` section as a table of :data:`TABLE_COLUMNS`."""
    rows = [{"split": split, **row} for split, group in section.items() for row in group]
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def write_pattern_table(section: Mapping[str, list[dict[str, Any]]], out: str | Path) -> None:
    """Write :func:`pattern_table` as TSV atomically (empty cells where undefined)."""
    with atomic_path(out) as tmp:
        pattern_table(section).to_csv(tmp, sep="\t", index=False, na_rep="")
