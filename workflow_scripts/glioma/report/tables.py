"""Tables of the HTML report, read from the stages' files and checked against their contracts.

Each ``read_*`` function raises :class:`glioma.errors.InputError` naming the file, the column and,
where there is one, the patient; each builder returns a DataFrame of display strings.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from glioma.constants import (
    ABLATION_COLUMNS,
    CLASSES,
    COMPLETE_PATTERN,
    CV_SPLIT,
    EVAL_SPLITS,
    SEQUENCES,
    SPLITS,
    UNLABELLED_SPLIT,
)
from glioma.errors import InputError

SLICE_SPLIT = "slice"
LEVELS = ("patient", "slice")
PROB_COLUMNS = tuple(f"p_{c}" for c in CLASSES)
PREDICTION_COLUMNS = ("patient", "cohort", *PROB_COLUMNS, "predicted_class", "n_slices", "split")
SPLIT_COLUMNS = ("patient", "cohort", "class", "split")
EXCLUSION_COLUMNS = ("patient", "cohort", "scope", "reason")
#: Display names of the sequences (sheet columns and metrics name them in lower case).
SEQUENCE_LABELS: dict[str, str] = {"t1w": "T1w", "t1c": "T1c", "t2w": "T2w", "flair": "FLAIR"}
ALL_PRESENT = COMPLETE_PATTERN
SPLIT_ORDER = (*EVAL_SPLITS, SLICE_SPLIT, UNLABELLED_SPLIT)
#: Optional predictions.csv columns: which model(s) made a row and its uncertainty; a file from
#: before cross-validation lacks them, and the page shows them blank.
UNCERTAINTY_COLUMNS = ("model", "normalised_entropy", "sd", "mutual_information", "review")
#: Of those, the ones a one-model row leaves empty: shown only when some row has a value.
ENSEMBLE_COLUMNS = ("sd", "mutual_information")
REVIEW_FLAG = "REVIEW"
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
#: Features per slice of the baseline: glioma.model.baseline.FEATURE_NAMES, which lives in the
#: model environment (scikit-learn, torch) that the report's lacks.
BASELINE_FEATURES = 6 * len(SEQUENCES)
BASELINE_CAPTION = (
    f"Baseline: logistic regression on {BASELINE_FEATURES} first-order intensity features per "
    "slice (mean, SD, 10th and 90th percentiles, central mean and fraction above 2 of each "
    "sequence), fitted on the training slices, slice probabilities averaged per patient; same "
    "split, same labelled patients (n) and bootstrap as the network."
)


def read_table(path: str | Path, columns: tuple[str, ...], *, sep: str = "\t") -> pd.DataFrame:
    """Read a TSV or CSV as strings (empty cells stay ""), checking ``columns`` are present.

    Raises:
        InputError: the file is missing or a column is.
    """
    if not Path(path).is_file():
        raise InputError("file does not exist", path=path)
    table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    for column in columns:
        if column not in table.columns:
            raise InputError("required column is missing", column=column, path=path)
    return table


def _check_values(table: pd.DataFrame, column: str, allowed: tuple[str, ...], path: Path) -> None:
    """Raise an InputError naming the first patient whose ``column`` is not in ``allowed``."""
    bad = ~table[column].isin(allowed)
    if bad.any():
        row = table[bad].iloc[0]
        raise InputError(
            f"value {row[column]!r} is not one of {', '.join(a or 'empty' for a in allowed)}",
            patient=row["patient"],
            column=column,
            path=path,
        )


def cohort_flow(sheet: pd.DataFrame, exclusions: pd.DataFrame) -> dict[str, int]:
    """Count patients at each step: in the sheet, excluded, processed, unlabelled, labelled."""
    not_processed = int((exclusions["scope"] == "all").sum())
    unlabelled = int((sheet["class"] == "").sum())
    return {
        "in_sheet": len(sheet) + not_processed,
        "excluded": not_processed,
        "processed": len(sheet),
        "unlabelled": unlabelled,
        "labelled": len(sheet) - unlabelled,
    }


def sequence_names(names: Any) -> str:
    """Display form of a comma-separated list of sequences: ``t1w, flair`` -> ``T1w, FLAIR``
    (names that are not sequences are kept as they are)."""
    parts = [p.strip() for p in str(names).split(",") if p.strip()]
    return ", ".join(SEQUENCE_LABELS.get(p.lower(), p) for p in parts)


def not_acquired(row: Mapping[str, Any]) -> list[str]:
    """The sequences a row of the validated sheet leaves empty (not acquired), in channel order.

    A sheet without a sequence's column (one from before missing sequences were allowed) has
    every sequence.
    """
    return [s for s in SEQUENCES if s in row and str(row[s]).strip() in ("", "nan")]


_MISSING_REASON = re.compile(r"missing (?P<names>.+)")
_ONLY_REASON = re.compile(r"only (?P<names>.+?): needs\b.*")


def excluded_lacking(reason: str) -> list[str]:
    """The sequences an exclusion reason says the patient lacks, in channel order.

    ``missing t1c, flair`` (``inclusion.missing_sequences: exclude``) names them; ``only flair:
    needs the ROI's sequence ...`` (``allow``) names those present, so the others are lacking.
    Other reasons (``missing roi``, age, unknown label) name none.
    """
    lacking: set[str] = set()
    for part in str(reason).split(";"):
        if found := _MISSING_REASON.fullmatch(part.strip()):
            lacking |= {n.strip() for n in found["names"].split(",")} & set(SEQUENCES)
        elif found := _ONLY_REASON.fullmatch(part.strip()):
            lacking |= set(SEQUENCES) - {n.strip() for n in found["names"].split(",")}
    return [s for s in SEQUENCES if s in lacking]


def _count(n: int, total: int) -> str:
    """A count with its percentage of ``total`` (just the count when ``total`` is 0)."""
    return f"{n} ({100 * n / total:.1f}%)" if total else str(n)


def sequence_availability(sheet: pd.DataFrame, exclusions: pd.DataFrame) -> pd.DataFrame:
    """Patients lacking each sequence, then any sequence: included ones (processed; the validated
    sheet's empty cells) and excluded ones (not processed; their exclusion reasons).

    Returns:
        Columns ``sequence`` (one row per sequence, then ``any sequence``), ``included
        patients lacking it`` (n (%) of the processed) and ``excluded patients lacking it``
        (n (%) of those not processed); zeros included.
    """
    included = [not_acquired(row) for row in sheet.to_dict("records")]
    dropped = exclusions[exclusions["scope"] == "all"]
    excluded = [excluded_lacking(reason) for reason in dropped["reason"]]
    rows = []
    for name in (*SEQUENCES, ""):
        label = SEQUENCE_LABELS[name] if name else "any sequence"
        counts = [
            sum(1 for m in group if (name in m if name else m)) for group in (included, excluded)
        ]
        rows.append((label, _count(counts[0], len(included)), _count(counts[1], len(excluded))))
    columns = ["sequence", "included patients lacking it", "excluded patients lacking it"]
    return pd.DataFrame(rows, columns=columns)


def any_lacking(sheet: pd.DataFrame, exclusions: pd.DataFrame) -> bool:
    """True when some patient, included or excluded, lacks a sequence."""
    dropped = exclusions.loc[exclusions["scope"] == "all", "reason"]
    return any(not_acquired(r) for r in sheet.to_dict("records")) or any(
        excluded_lacking(r) for r in dropped
    )


def read_splits(path: str | Path) -> pd.DataFrame:
    """Read ``results/splits.tsv``, checking its split names, classes and folds.

    The ``fold`` column is optional (files from before cross-validation lack it: every fold is
    then ""); a ``cv`` patient must name its fold.
    """
    splits = read_table(path, SPLIT_COLUMNS)
    _check_values(splits, "split", SPLIT_ORDER, Path(path))
    _check_values(splits, "class", ("", *CLASSES), Path(path))
    if "fold" not in splits.columns:
        splits["fold"] = ""
    unassigned = splits[(splits["split"] == CV_SPLIT) & (splits["fold"] == "")]
    if len(unassigned):
        raise InputError(
            "a cv (cross-validated) patient names no fold",
            patient=unassigned["patient"].iloc[0],
            column="fold",
            path=path,
        )
    return splits


def is_leaky(splits: pd.DataFrame, metrics: dict[str, Any]) -> bool:
    """True when slices of one patient may sit in several splits (``split.level: slice``)."""
    return bool((splits["split"] == SLICE_SPLIT).any() or metrics.get("leaky_split"))


def split_sizes(splits: pd.DataFrame) -> pd.DataFrame:
    """Patients per cohort and class (rows) and split (columns), with totals."""
    table = splits.assign(**{"class": splits["class"].replace("", "unlabelled")})
    counts = pd.crosstab(
        [table["cohort"], table["class"]], table["split"], margins=True, margins_name="Total"
    )
    order = [s for s in SPLIT_ORDER if s in counts.columns] + ["Total"]
    counts = counts[order].rename_axis(index=["cohort", "class"], columns=None).reset_index()
    rank = {name: i for i, name in enumerate([*CLASSES, "unlabelled"])}
    # Classes in model order within each cohort, and the margin row last.
    key = pd.DataFrame(
        {"margin": counts.index == len(counts) - 1, "cohort": counts["cohort"]}
    ).assign(rank=counts["class"].map(rank).fillna(len(rank)))
    return counts.loc[key.sort_values(["margin", "cohort", "rank"]).index].reset_index(drop=True)


def read_metrics(path: str | Path) -> dict[str, Any]:
    """Read ``metrics.json``, checking it holds a patient or slice level of splits."""
    try:
        metrics = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"cannot be read as JSON ({err})", path=path) from err
    if not isinstance(metrics, dict) or not any(isinstance(metrics.get(x), dict) for x in LEVELS):
        raise InputError("holds no 'patient' or 'slice' level of metrics", path=path)
    named = metrics.get("splits", list(SPLITS))
    if not isinstance(named, list) or not set(named) <= set(EVAL_SPLITS):
        raise InputError(f"'splits' should be a list of {', '.join(EVAL_SPLITS)}", path=path)
    for level in LEVELS:
        for split, values in (metrics.get(level) or {}).items():
            if not isinstance(values, dict):
                raise InputError(f"{level}.{split} is not an object", column=split, path=path)
    for section in ("cv", "calibration", "uncertainty", "availability"):
        if section in metrics and not isinstance(metrics[section], dict | None):
            raise InputError(f"{section} is not an object", column=section, path=path)
    for split, rows in (metrics.get("availability") or {}).items():
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise InputError(
                f"availability.{split} is not a list of objects", column=split, path=path
            )
    return metrics


def num(value: Any, digits: int = 3) -> str:
    """Format a metric, ``n/a`` when it is null or not finite."""
    if value is None or isinstance(value, bool):
        return "n/a"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return f"{number:.{digits}f}" if math.isfinite(number) else "n/a"


def _auc_ci(values: dict[str, Any]) -> str:
    """AUC with its 95% CI, e.g. ``0.912 (0.850-0.960)``."""
    auc = num(values.get("auc"))
    low, high = num(values.get("auc_ci_low")), num(values.get("auc_ci_high"))
    return auc if "n/a" in (auc, low, high) else f"{auc} ({low}-{high})"


def split_label(split: str) -> str:
    """Display name of a split: the training split says its figures are on training data, the
    cross-validated one that each patient is predicted out-of-fold."""
    if split == CV_SPLIT:
        return "cv (out-of-fold)"
    return "train (training data: optimistic)" if split == "train" else split


def scored_splits(metrics: dict[str, Any]) -> list[str]:
    """The splits metrics.json scores, in report order (train, val, test in files without)."""
    named = metrics.get("splits")
    if not isinstance(named, list):
        return list(SPLITS)
    return [s for s in EVAL_SPLITS if s in named]


def table2(metrics: dict[str, Any], level: str) -> pd.DataFrame:
    """Table 2 at one level: a row per split and class (n, accuracy, macro AUC, class metrics)."""
    rows = []
    for split in scored_splits(metrics):
        values = (metrics.get(level) or {}).get(split)
        if not values:
            continue
        classes = values.get("classes") or {}
        for name in CLASSES:
            per_class = classes.get(name) or {}
            rows.append(
                {
                    "split": split_label(split),
                    "n": str(values.get("n", "n/a")),
                    "accuracy": num(values.get("accuracy")),
                    "macro AUC": num(values.get("macro_auc")),
                    "class": name,
                    "AUC (95% CI)": _auc_ci(per_class),
                    "precision": num(per_class.get("precision")),
                    "recall": num(per_class.get("recall")),
                    "F1": num(per_class.get("f1")),
                    "average precision": num(per_class.get("average_precision")),
                }
            )
    return pd.DataFrame(rows)


def baseline_comparison(metrics: dict[str, Any]) -> pd.DataFrame:
    """Network vs baseline at patient level: AUC (95% CI) per split and class, then macro AUC.

    Empty when ``metrics`` holds no ``baseline`` section.
    """
    baseline = (metrics.get("baseline") or {}).get("patient") or {}
    columns = ("split", "n", "class", "network AUC (95% CI)", "baseline AUC (95% CI)")
    rows = []
    for split in scored_splits(metrics):
        pair = ((metrics.get("patient") or {}).get(split), baseline.get(split))
        if not all(pair):
            continue
        sizes = [str(part.get("n", "n/a")) for part in pair]
        n = sizes[0] if sizes[0] == sizes[1] else " / ".join(sizes)
        for name in CLASSES:
            aucs = [_auc_ci((part.get("classes") or {}).get(name) or {}) for part in pair]
            rows.append((split_label(split), n, name, *aucs))
        rows.append((split_label(split), n, "macro", *(num(p.get("macro_auc")) for p in pair)))
    return pd.DataFrame(rows, columns=list(columns))


def read_predictions(path: str | Path, sheet: pd.DataFrame) -> pd.DataFrame:
    """Read ``predictions.csv`` and add each patient's true class from the sheet, sorted.

    Raises:
        InputError: a column is missing, a predicted class is unknown, or a probability is not a
            number in [0, 1]; names the patient, the column and the file.
    """
    path = Path(path)
    table = read_table(path, PREDICTION_COLUMNS, sep=",")
    _check_values(table, "predicted_class", CLASSES, path)
    for column in PROB_COLUMNS:
        values = pd.to_numeric(table[column], errors="coerce")
        bad = ~values.between(0, 1)
        if bad.any():
            row = table[bad].iloc[0]
            raise InputError(
                f"value {row[column]!r} is not a probability",
                patient=row["patient"],
                column=column,
                path=path,
            )
        table[column] = values.map(lambda v: f"{v:.3f}")
    truth = sheet.set_index(["cohort", "patient"])["class"]
    keys = pd.MultiIndex.from_frame(table[["cohort", "patient"]])
    table["class"] = truth.reindex(keys).fillna("").to_numpy()
    table["correct"] = [
        "" if not c else ("yes" if c == p else "no")
        for c, p in zip(table["class"], table["predicted_class"], strict=True)
    ]
    _uncertainty_columns(table, path)
    ensemble = [c for c in ENSEMBLE_COLUMNS if (table[c] != "").any()]
    columns = ["cohort", "patient", "split", "model", "class", "predicted_class", "correct"]
    columns += ["review", *PROB_COLUMNS, "normalised_entropy", *ensemble, "n_slices"]
    return table[columns].sort_values(["cohort", "patient"]).reset_index(drop=True)


def _uncertainty_columns(table: pd.DataFrame, path: Path) -> None:
    """Format the optional uncertainty columns in place ("" where missing or NaN).

    Raises:
        InputError: a value is neither empty nor a number, or a review flag is not a boolean.
    """
    for column in UNCERTAINTY_COLUMNS:
        if column not in table.columns:
            table[column] = ""
    for column in ("normalised_entropy", *ENSEMBLE_COLUMNS):
        values = pd.to_numeric(table[column], errors="coerce")
        bad = values.isna() & ~table[column].str.lower().isin(("", "nan"))
        if bad.any():
            row = table[bad].iloc[0]
            raise InputError(
                f"value {row[column]!r} is not a number", patient=row["patient"],
                column=column, path=path,
            )  # fmt: skip
        table[column] = values.map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    flags = table["review"].str.strip().str.lower()
    bad = ~flags.isin(("", *_BOOLEANS))
    if bad.any():
        row = table[bad].iloc[0]
        raise InputError(
            f"value {row['review']!r} is not True or False", patient=row["patient"],
            column="review", path=path,
        )  # fmt: skip
    table["review"] = [REVIEW_FLAG if _BOOLEANS.get(f) else "" for f in flags]


def _whole(value: Any) -> str:
    """A count, ``n/a`` when it is null or not finite."""
    text = num(value, 0)
    return text if text == "n/a" else str(int(float(value)))


def _pattern(missing: Any) -> str:
    """Display form of an availability row's ``missing`` (``none``: every sequence given)."""
    text = "" if missing is None else str(missing).strip()
    if not text:
        return "n/a"
    return "none (all given)" if text == ALL_PRESENT else sequence_names(text)


def availability_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Patient-level metrics per pattern of sequences not acquired, per scored split, from
    metrics.json's ``availability`` section (empty when the section is absent)."""
    section = metrics.get("availability") or {}
    order = [s for s in scored_splits(metrics) if s in section]
    order += sorted(s for s in section if s not in order)
    columns = ["split", "sequences not acquired", "patients", "accuracy", "macro AUC"]
    rows = [
        (
            split_label(split),
            _pattern(entry.get("missing")),
            _whole(entry.get("n_patients")),
            num(entry.get("accuracy")),
            num(entry.get("macro_auc")),
        )
        for split in order
        for entry in section[split]
    ]
    return pd.DataFrame(rows, columns=columns)


def read_ablation(path: str | Path) -> pd.DataFrame:
    """Read ``results/metrics/ablation.tsv``, its numbers as floats (NaN where empty or NaN;
    the count columns and ``bootstrap`` become floats too).

    Raises:
        InputError: a column is missing, a sequence is not one of the workflow's, or a value is
            neither empty nor a number; names the column and the file.
    """
    path = Path(path)
    table = read_table(path, ABLATION_COLUMNS)
    bad = ~table["sequence"].str.lower().isin(SEQUENCES)
    if bad.any():
        raise InputError(
            f"value {table.loc[bad, 'sequence'].iloc[0]!r} is not one of {', '.join(SEQUENCES)}",
            column="sequence",
            path=path,
        )
    for column in ABLATION_COLUMNS[1:]:
        values = pd.to_numeric(table[column], errors="coerce")
        bad = values.isna() & ~table[column].str.strip().str.lower().isin(("", "nan", "na"))
        if bad.any():
            row = table[bad].iloc[0]
            raise InputError(
                f"value {row[column]!r} (sequence {row['sequence']}) is not a number",
                column=column,
                path=path,
            )
        table[column] = values.astype(float)
    return table


def _signed(value: Any) -> str:
    """A difference with its sign (none for a rounded 0), ``n/a`` when null or not finite."""
    text = num(value)
    if text == "n/a":
        return text
    if float(text) == 0:
        return text.lstrip("-")
    return text if text.startswith("-") else f"+{text}"


def _delta_ci(row: pd.Series) -> str:
    """Delta macro AUC with its 95% CI, e.g. ``-0.120 (-0.250 to -0.010)``."""
    delta, low, high = (_signed(row[c]) for c in ("delta_auc", "ci_low", "ci_high"))
    return delta if "n/a" in (delta, low, high) else f"{delta} ({low} to {high})"


def ablation_table(ablation: pd.DataFrame) -> pd.DataFrame:
    """The sequence ablation as the page shows it, one row per sequence in channel order."""
    order = {s: i for i, s in enumerate(SEQUENCES)}
    ablation = ablation.assign(sequence=ablation["sequence"].str.lower())
    ablation = ablation.sort_values("sequence", key=lambda c: c.map(order), kind="stable")
    columns = ["sequence hidden", "patients", "of them lacking it already",
               "Δ macro AUC (95% CI)", "macro AUC, all given", "macro AUC, without it"]  # fmt: skip
    rows = [
        (
            SEQUENCE_LABELS[row["sequence"]],
            _whole(row["n_patients"]),
            _whole(row["n_lacking"]),
            _delta_ci(row),
            num(row["macro_auc_all"]),
            num(row["macro_auc_without"]),
        )
        for _, row in ablation.iterrows()
    ]
    return pd.DataFrame(rows, columns=columns)


def bootstrap_resamples(ablation: pd.DataFrame) -> int | None:
    """The number of paired bootstrap resamples ablation.tsv names (its first finite one)."""
    if "bootstrap" not in ablation.columns:
        return None
    values = [v for v in pd.to_numeric(ablation["bootstrap"], errors="coerce") if math.isfinite(v)]
    return int(values[0]) if values else None
