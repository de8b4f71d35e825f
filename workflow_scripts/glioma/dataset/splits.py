"""The split manifest ``results/splits.tsv``: stable, leakage-free train/val/test assignment.

Two ways to turn ratios into patient splits, both keyed on a SHA-256 of (seed, cohort, patient):

- ``hash``: each patient's hash fraction is compared with the cumulative ratios, so a patient's
  split depends only on its own (cohort, patient) and the seed. Adding patients or cohorts never
  moves anyone; the price is that the realised ratios are binomial around the targets (a
  fraction r of a stratum of n varies by about sqrt(r(1-r)/n)), so a small stratum can miss a
  split entirely.
- ``quota``: within each cohort x class stratum, patients are ranked by their hash fraction and
  cut into consecutive bands whose sizes are the ratios' largest-remainder quotas, after giving
  every split with a non-zero ratio one patient when the stratum has enough of them. The ratios
  hold exactly per stratum and small classes reach val and test. A stratum holds one cohort, so
  adding a cohort still moves nobody; adding patients to an existing cohort can move the few
  patients at the bands' edges of that cohort's strata (``make_splits`` logs which). With
  ``strata: class`` a stratum is one class over every cohort, so a class too rare in each
  cohort still reaches every split; adding a cohort then moves the few patients at the edges.

With ``folds`` (k-fold cross-validation) or ``level: cohort`` without test cohorts
(leave-one-cohort-out), the patients not in test are the development set, split ``cv``, with a
``fold`` each (:mod:`glioma.dataset.folds`).

Either way a patient's slices are never in two splits. Counts per stratum are logged, with a
warning when a class is missing from a split that should hold it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from glioma.constants import CLASSES, CV_SPLIT, EXTERNAL_SPLIT, SPLITS, UNLABELLED_SPLIT
from glioma.dataset.folds import NO_FOLD, check_folds, deal_folds
from glioma.dataset.hashing import stable_fraction
from glioma.errors import InputError
from glioma.io import atomic_path

log = logging.getLogger(__name__)

LEVELS = ("patient", "cohort", "slice")
METHODS = ("hash", "quota")
STRATA = ("cohort_class", "class")
#: Split value of labelled patients under ``level: slice``; their slices are split at load time.
SLICE_SPLIT = "slice"
SHEET_COLUMNS = ("patient", "cohort", "class")
SPLIT_COLUMNS = ("patient", "cohort", "class", "split")
#: Columns of the manifest file: the split columns and the cross-validation fold ("" for none).
MANIFEST_COLUMNS = (*SPLIT_COLUMNS, "fold")
RATIO_TOLERANCE = 1e-6


def _read_tsv(
    path: str | Path, columns: Sequence[str], optional: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Read a TSV as strings (empty cells stay ""), keeping ``columns``, in that order.

    ``optional`` maps further columns to the value they take when the file lacks them.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("file does not exist", path=path)
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    for column in columns:
        if column not in table.columns:
            raise InputError("column is missing", column=column, path=path)
    for column, default in (optional or {}).items():
        if column not in table.columns:
            table[column] = default
    table = table[[*columns, *(optional or {})]].astype(str)
    for row, (cohort, patient) in enumerate(zip(table["cohort"], table["patient"], strict=True)):
        if not patient or not cohort:
            raise InputError("patient and cohort must not be empty", row=row + 2, path=path)
    duplicated = table.duplicated(["cohort", "patient"])
    if duplicated.any():
        first = table[duplicated].iloc[0]
        raise InputError(
            f"appears more than once in cohort {first['cohort']!r}",
            patient=first["patient"],
            path=path,
        )
    return table.reset_index(drop=True)


def _check_classes(table: pd.DataFrame, path: str | Path) -> None:
    """Raise when a class is neither one of ``CLASSES`` nor empty."""
    bad = ~table["class"].isin([*CLASSES, ""])
    if bad.any():
        first = table[bad].iloc[0]
        raise InputError(
            f"{first['class']!r} is not one of {', '.join(CLASSES)} (or empty for unlabelled)",
            patient=first["patient"],
            column="class",
            path=path,
        )


def read_sheet(path: str | Path) -> pd.DataFrame:
    """Read the validated sample sheet's ``patient, cohort, class`` columns (str; "" unlabelled)."""
    table = _read_tsv(path, SHEET_COLUMNS)
    _check_classes(table, path)
    return table


def read_splits(path: str | Path) -> pd.DataFrame:
    """Read ``results/splits.tsv``: patient, cohort, class, split, fold (str; "" when none).

    A manifest without a ``fold`` column (written before cross-validation existed, or by hand)
    reads as having no folds.

    Raises:
        InputError: a column is missing, a (cohort, patient) repeats, or a class or split is
            unknown.
    """
    table = _read_tsv(path, SPLIT_COLUMNS, {"fold": NO_FOLD})
    _check_classes(table, path)
    bad = ~table["split"].isin([*SPLITS, UNLABELLED_SPLIT, SLICE_SPLIT, CV_SPLIT, EXTERNAL_SPLIT])
    if bad.any():
        first = table[bad].iloc[0]
        raise InputError(
            f"{first['split']!r} is not a split name",
            patient=first["patient"],
            column="split",
            path=path,
        )
    return table


def check_ratios(ratios: Mapping[str, float]) -> dict[str, float]:
    """Return ``ratios`` as a dict in ``SPLITS`` order after checking they are usable.

    Raises:
        ValueError: a split is missing or unknown, a ratio is negative, train is 0, or the ratios
            do not sum to 1 (within 1e-6).
    """
    if set(ratios) != set(SPLITS):
        raise ValueError(
            f"split.ratios must name exactly {', '.join(SPLITS)}; got {sorted(ratios)}"
        )
    clean = {name: float(ratios[name]) for name in SPLITS}
    if any(value < 0 for value in clean.values()):
        raise ValueError(f"split.ratios must not be negative; got {clean}")
    if clean["train"] <= 0:
        raise ValueError("split.ratios.train must be above 0")
    if abs(sum(clean.values()) - 1) > RATIO_TOLERANCE:
        raise ValueError(f"split.ratios must sum to 1; got {clean} (sum {sum(clean.values())})")
    return clean


def split_of_fraction(fraction: float, ratios: Mapping[str, float]) -> str:
    """Return the split whose cumulative-ratio interval holds ``fraction``."""
    edge = 0.0
    for name in SPLITS:
        edge += ratios[name]
        if fraction < edge:
            return name
    return SPLITS[-1]  # sums of floats can fall a hair short of 1


def slice_split(
    seed: int, cohort: str, patient: str, slice_index: int, ratios: Mapping[str, float]
) -> str:
    """Return the split of one slice under ``level: slice`` (the study's leaky protocol)."""
    return split_of_fraction(stable_fraction(seed, cohort, patient, int(slice_index)), ratios)


def quota_sizes(n: int, ratios: Mapping[str, float], tiebreak: Sequence[float]) -> list[int]:
    """Split ``n`` patients into per-split counts following ``ratios`` (in ``SPLITS`` order).

    Every split with a non-zero ratio first gets one patient when ``n`` allows it; the rest go by
    largest remainder of the remaining targets, ties broken by ``tiebreak`` (one value per split).
    """
    weights = [ratios[name] for name in SPLITS]
    positive = [i for i, weight in enumerate(weights) if weight > 0]
    sizes = [0] * len(weights)
    if n >= len(positive):
        for i in positive:
            sizes[i] = 1
    targets = [max(n * weight - size, 0.0) for weight, size in zip(weights, sizes, strict=True)]
    left = n - sum(sizes)
    scale = left / sum(targets) if sum(targets) > 0 else 0.0
    targets = [target * scale for target in targets]
    floors = [math.floor(target) for target in targets]
    sizes = [size + floor for size, floor in zip(sizes, floors, strict=True)]
    by_remainder = sorted(
        positive, key=lambda i: (targets[i] - floors[i], weights[i], tiebreak[i]), reverse=True
    )
    for i in by_remainder[: n - sum(sizes)]:
        sizes[i] += 1
    return sizes


def _quota_split(
    table: pd.DataFrame,
    fractions: Sequence[float],
    ratios: Mapping[str, float],
    seed: int,
    strata: str = "cohort_class",
) -> list[str]:
    """Split every stratum of ``table`` into hash-ranked bands of quota size.

    A stratum is one cohort's patients of one class (``strata="cohort_class"``) or one class's
    patients of every cohort (``strata="class"``).
    """
    split = [UNLABELLED_SPLIT] * len(table)
    frame = table.assign(_fraction=list(fractions), _row=range(len(table)))
    if strata == "class":
        frame = frame.assign(_stratum="*")
    else:
        frame = frame.assign(_stratum=frame["cohort"])
    for (cohort, label), stratum in frame.groupby(["_stratum", "class"], sort=True):
        if not label:
            continue
        tiebreak = [stable_fraction(seed, "quota", cohort, label, name) for name in SPLITS]
        sizes = quota_sizes(len(stratum), ratios, tiebreak)
        ranked = stratum.sort_values(["_fraction", "patient"], kind="stable")["_row"]
        names = [name for name, size in zip(SPLITS, sizes, strict=True) for _ in range(size)]
        for row, name in zip(ranked, names, strict=True):
            split[row] = name
    return split


def _within(
    table: pd.DataFrame,
    fractions: Sequence[float],
    ratios: Mapping[str, float],
    seed: int,
    method: str,
    strata: str = "cohort_class",
) -> list[str]:
    """The split of every row of ``table`` under ``method`` (``hash`` or ``quota``)."""
    if method == "quota":
        return _quota_split(table, fractions, ratios, seed, strata)
    return [split_of_fraction(f, ratios) for f in fractions]


def assign_splits(
    sheet: pd.DataFrame,
    *,
    level: str,
    ratios: Mapping[str, float],
    seed: int,
    test_cohorts: Sequence[str] = (),
    method: str = "hash",
    strata: str = "cohort_class",
    folds: int = 0,
) -> pd.DataFrame:
    """Return ``sheet``'s patient, cohort, class with ``split`` and ``fold``, sorted by ID.

    Args:
        sheet: columns patient, cohort, class ("" when unlabelled).
        level: ``patient`` (by hash or quota within each stratum), ``cohort`` (``test_cohorts``
            are the test set, the other cohorts train/val with the train:val ratio; without
            test cohorts, leave-one-cohort-out: every labelled patient ``cv``, its cohort its
            fold) or ``slice`` (labelled patients get ``slice``; their slices are split at load
            time).
        ratios: train, val, test fractions summing to 1.
        seed: the split seed.
        test_cohorts: external test cohorts (level ``cohort`` only).
        method: ``hash`` or ``quota`` (see the module docstring).
        strata: the strata of ``quota``: ``cohort_class`` (each cohort's classes) or ``class``
            (each class over all cohorts: a class too rare in every cohort still reaches every
            split, and adding a cohort can move the few patients at its bands' edges).
        folds: 0 for a single split; K >= 2 for K-fold cross-validation of the patients not in
            test (they become ``cv``, dealt to folds within each stratum).

    Raises:
        ValueError: unknown level or method, bad ratios or folds, or test cohorts missing from
            the sheet or covering all of it.
    """
    if level not in LEVELS:
        raise ValueError(f"split.level must be one of {', '.join(LEVELS)}; got {level!r}")
    if method not in METHODS:
        raise ValueError(f"split.method must be one of {', '.join(METHODS)}; got {method!r}")
    if strata not in STRATA:
        raise ValueError(f"split.strata must be one of {', '.join(STRATA)}; got {strata!r}")
    ratios = check_ratios(ratios)
    check_folds(folds, level, test_cohorts)
    out = sheet.loc[:, list(SHEET_COLUMNS)].reset_index(drop=True)
    out["fold"] = NO_FOLD
    fractions = [
        stable_fraction(seed, c, p) for c, p in zip(out["cohort"], out["patient"], strict=True)
    ]
    if level == "patient":
        split = _within(out, fractions, ratios, seed, method, strata)
    elif level == "cohort" and not test_cohorts:
        _check_loco(out)
        split = [CV_SPLIT] * len(out)
        out["fold"] = out["cohort"]
    elif level == "cohort":
        test = _check_test_cohorts(set(out["cohort"]), test_cohorts)
        train_share = ratios["train"] / (ratios["train"] + ratios["val"])
        inner = {"train": train_share, "val": 1 - train_share, "test": 0.0}
        split = _within(out, fractions, inner, seed, method, strata)
        split = ["test" if c in test else s for c, s in zip(out["cohort"], split, strict=True)]
    else:
        split = [SLICE_SPLIT] * len(out)
    out["split"] = split
    out.loc[out["class"] == "", "split"] = UNLABELLED_SPLIT
    if folds:
        development = out["split"].isin(["train", "val"])
        out.loc[development, "split"] = CV_SPLIT
        out.loc[development, "fold"] = deal_folds(
            out[development], folds=folds, seed=seed, strata=strata
        )
    out.loc[out["split"] != CV_SPLIT, "fold"] = NO_FOLD
    out = out[list(MANIFEST_COLUMNS)]
    return out.sort_values(["cohort", "patient"], kind="stable").reset_index(drop=True)


def _check_loco(sheet: pd.DataFrame) -> None:
    """Raise unless leave-one-cohort-out has two cohorts with labelled patients."""
    labelled = sorted(set(sheet.loc[sheet["class"] != "", "cohort"]))
    if len(labelled) < 2:
        raise ValueError(
            "split.level cohort without test_cohorts holds each cohort out in turn, which needs "
            f"two cohorts with labelled patients; the sheet has {labelled or 'none'}"
        )


def _check_test_cohorts(known: set[str], test_cohorts: Sequence[str]) -> set[str]:
    """Return the test cohorts after checking they exist and leave a cohort to train on."""
    test = set(test_cohorts)
    missing = sorted(test - known)
    if missing:
        raise ValueError(
            f"split.test_cohorts {missing} are not in the sample sheet; "
            f"its cohorts are {sorted(known)}"
        )
    if known <= test:
        raise ValueError("split.test_cohorts covers every cohort: nothing is left to train on")
    return test


def check_split_config(split: Mapping, cohorts: Iterable[str]) -> None:
    """Check the ``split`` config section against the sheet's cohorts, before any job runs.

    Raises:
        ValueError: unknown level, bad ratios, or unusable test cohorts under level ``cohort``.
    """
    if split["level"] not in LEVELS:
        raise ValueError(f"split.level must be one of {', '.join(LEVELS)}; got {split['level']!r}")
    check_ratios(split["ratios"])
    if split.get("method", "hash") not in METHODS:
        raise ValueError(
            f"split.method must be one of {', '.join(METHODS)}; got {split['method']!r}"
        )
    check_folds(int(split.get("folds", 0)), split["level"], split["test_cohorts"])
    if split["level"] == "cohort" and split["test_cohorts"]:
        _check_test_cohorts(set(cohorts), split["test_cohorts"])
    elif split["level"] == "cohort" and len(set(cohorts)) < 2:
        raise ValueError(
            "split.level cohort without test_cohorts holds each cohort out in turn, which needs "
            f"two cohorts; the sheet has {sorted(set(cohorts))}"
        )


def split_counts(splits: pd.DataFrame) -> pd.DataFrame:
    """Return patients per (cohort, class) stratum and split, one column per split."""
    table = splits.groupby(["cohort", "class", "split"]).size().unstack("split", fill_value=0)
    return table.reindex(columns=sorted(set(table.columns)), fill_value=0)


def _report(splits: pd.DataFrame, level: str, ratios: Mapping[str, float]) -> None:
    """Log counts per stratum; warn about the slice protocol and classes missing from a split."""
    if level == "slice":
        log.warning(
            "SPLIT LEVEL IS 'slice' (the study's protocol): slices of one patient fall in train, "
            "val AND test. Scores under this protocol are inflated by patient leakage and do not "
            "measure generalisation to new patients. Use split.level: patient for honest results."
        )
    log.info("patients per stratum and split:\n%s", split_counts(splits).to_string())
    if level == "slice":
        return
    labelled = splits[splits["split"].isin([*SPLITS, CV_SPLIT])]
    cross_validated = (splits["split"] == CV_SPLIT).any()
    if cross_validated:
        development = splits[splits["split"] == CV_SPLIT]
        counts = development.groupby(["fold", "class"]).size().unstack("class", fill_value=0)
        log.info("development patients per fold and class:\n%s", counts.to_string())
        for fold, row in counts.iterrows():
            for missing in sorted(c for c in counts.columns if row[c] == 0):
                log.warning(
                    "fold %s holds no %s patient: its model's held-out AUC of that class is "
                    "undefined (fewer folds, or strata: class, give every fold one)",
                    fold,
                    missing,
                )
    for name in SPLITS:
        if ratios[name] == 0 and not (level == "cohort" and name == "test"):
            continue
        if cross_validated and name != "test":
            continue
        present = set(labelled.loc[labelled["split"] == name, "class"])
        for missing in sorted(set(labelled["class"]) - present):
            log.warning(
                "class %s has no patient in %s (its strata are too small for this split; "
                "split.method quota gives every split one patient of a stratum of 3 or more)",
                missing,
                name,
            )


def _log_moves(previous: Path, splits: pd.DataFrame) -> None:
    """Warn about patients whose split differs from the manifest ``previous`` (when it exists)."""
    if not previous.is_file():
        return
    try:
        before = read_splits(previous)
    except InputError:
        return  # an unreadable old manifest is replaced; nothing to compare with
    both = before.merge(splits, on=["cohort", "patient"], suffixes=("_before", ""))
    moved = both[(both["split_before"] != both["split"]) | (both["fold_before"] != both["fold"])]
    if len(moved):
        log.warning(
            "%d patient(s) changed split or fold since the previous manifest (new patients in "
            "their strata, relabelling, or a changed split config): %s",
            len(moved),
            ", ".join(
                f"{row.cohort}/{row.patient} {_place(row.split_before, row.fold_before)}->"
                f"{_place(row.split, row.fold)}"
                for row in moved.itertuples(index=False)
            ),
        )


def _place(split: str, fold: str) -> str:
    """``train``, or ``cv[3]`` for a development patient of fold 3."""
    return f"{split}[{fold}]" if fold else split


def make_splits(
    sheet_path: str | Path,
    out_path: str | Path,
    *,
    level: str,
    ratios: Mapping[str, float],
    seed: int,
    test_cohorts: Sequence[str] = (),
    method: str = "hash",
    strata: str = "cohort_class",
    folds: int = 0,
) -> pd.DataFrame:
    """Write a sheet's split manifest (``patient, cohort, class, split, fold`` TSV) atomically.

    See :func:`assign_splits` for the arguments; returns the manifest written. Patients whose
    split changed since the manifest already at ``out_path`` are logged.
    """
    splits = assign_splits(
        read_sheet(sheet_path),
        level=level,
        ratios=ratios,
        seed=seed,
        test_cohorts=test_cohorts,
        method=method,
        strata=strata,
        folds=folds,
    )
    _report(splits, level, ratios)
    _log_moves(Path(out_path), splits)
    with atomic_path(out_path) as tmp:
        splits.to_csv(tmp, sep="\t", index=False)
    return splits
