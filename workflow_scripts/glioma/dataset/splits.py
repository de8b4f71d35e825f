"""The split manifest ``results/splits.tsv``: stable, leakage-free train/val/test assignment.

Every labelled patient's split is a pure function of its own (cohort, patient) and the seed: a
SHA-256 of (seed, cohort, patient) mapped to [0, 1) is compared with the cumulative ratios. So
adding patients or cohorts never moves an existing patient, and a patient's slices are never in
two splits. The price of that stability is that the realised ratios are binomial around the
targets (within a stratum of n patients a fraction r varies by about sqrt(r(1-r)/n)) rather than
exact; re-balancing small strata would move existing patients, so it is not done. Instead the
counts per stratum (cohort x class) are logged, with a warning when a class is missing from a
split that should hold it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from glioma.constants import CLASSES, SPLITS, UNLABELLED_SPLIT
from glioma.dataset.hashing import stable_fraction
from glioma.errors import InputError
from glioma.io import atomic_path

log = logging.getLogger(__name__)

LEVELS = ("patient", "cohort", "slice")
#: Split value of labelled patients under ``level: slice``; their slices are split at load time.
SLICE_SPLIT = "slice"
SHEET_COLUMNS = ("patient", "cohort", "class")
SPLIT_COLUMNS = ("patient", "cohort", "class", "split")
RATIO_TOLERANCE = 1e-6


def _read_tsv(path: str | Path, columns: Sequence[str]) -> pd.DataFrame:
    """Read a TSV as strings (empty cells stay ""), keeping ``columns``, in that order."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file does not exist", path=path)
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    for column in columns:
        if column not in table.columns:
            raise InputError("column is missing", column=column, path=path)
    table = table[list(columns)].astype(str)
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
    """Read ``results/splits.tsv``: columns patient, cohort, class, split (str; "" unlabelled).

    Raises:
        InputError: a column is missing, a (cohort, patient) repeats, or a class or split is
            unknown.
    """
    table = _read_tsv(path, SPLIT_COLUMNS)
    _check_classes(table, path)
    bad = ~table["split"].isin([*SPLITS, UNLABELLED_SPLIT, SLICE_SPLIT])
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


def assign_splits(
    sheet: pd.DataFrame,
    *,
    level: str,
    ratios: Mapping[str, float],
    seed: int,
    test_cohorts: Sequence[str] = (),
) -> pd.DataFrame:
    """Return ``sheet``'s patient, cohort, class with a ``split`` column, sorted by cohort, patient.

    Args:
        sheet: columns patient, cohort, class ("" when unlabelled).
        level: ``patient`` (stable hash within each stratum), ``cohort`` (``test_cohorts`` are the
            test set, the other cohorts train/val by hash with the train:val ratio) or ``slice``
            (labelled patients get ``slice``; their slices are split at load time).
        ratios: train, val, test fractions summing to 1.
        seed: the split seed.
        test_cohorts: external test cohorts (level ``cohort`` only).

    Raises:
        ValueError: unknown level, bad ratios, or test cohorts missing from the sheet or
            covering all of it.
    """
    if level not in LEVELS:
        raise ValueError(f"split.level must be one of {', '.join(LEVELS)}; got {level!r}")
    ratios = check_ratios(ratios)
    out = sheet.loc[:, list(SHEET_COLUMNS)].copy()
    fractions = [
        stable_fraction(seed, c, p) for c, p in zip(out["cohort"], out["patient"], strict=True)
    ]
    if level == "patient":
        split = [split_of_fraction(f, ratios) for f in fractions]
    elif level == "cohort":
        test = _check_test_cohorts(set(out["cohort"]), test_cohorts)
        train_share = ratios["train"] / (ratios["train"] + ratios["val"])
        inner = {"train": train_share, "val": 1 - train_share, "test": 0.0}
        split = [
            "test" if cohort in test else split_of_fraction(f, inner)
            for cohort, f in zip(out["cohort"], fractions, strict=True)
        ]
    else:
        split = [SLICE_SPLIT] * len(out)
    out["split"] = split
    out.loc[out["class"] == "", "split"] = UNLABELLED_SPLIT
    return out.sort_values(["cohort", "patient"], kind="stable").reset_index(drop=True)


def _check_test_cohorts(known: set[str], test_cohorts: Sequence[str]) -> set[str]:
    """Return the test cohorts after checking they exist and leave a cohort to train on."""
    test = set(test_cohorts)
    if not test:
        raise ValueError("split.level is cohort but split.test_cohorts is empty")
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
    if split["level"] == "cohort":
        _check_test_cohorts(set(cohorts), split["test_cohorts"])


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
    labelled = splits[splits["split"].isin(SPLITS)]
    for name in SPLITS:
        if ratios[name] == 0 and not (level == "cohort" and name == "test"):
            continue
        present = set(labelled.loc[labelled["split"] == name, "class"])
        for missing in sorted(set(labelled["class"]) - present):
            log.warning(
                "class %s has no patient in %s (hash-based splits never re-balance: that would "
                "move existing patients)",
                missing,
                name,
            )


def make_splits(
    sheet_path: str | Path,
    out_path: str | Path,
    *,
    level: str,
    ratios: Mapping[str, float],
    seed: int,
    test_cohorts: Sequence[str] = (),
) -> pd.DataFrame:
    """Write the split manifest (``patient, cohort, class, split`` TSV) of a sheet, atomically.

    See :func:`assign_splits` for the arguments; returns the manifest written.
    """
    splits = assign_splits(
        read_sheet(sheet_path), level=level, ratios=ratios, seed=seed, test_cohorts=test_cohorts
    )
    _report(splits, level, ratios)
    with atomic_path(out_path) as tmp:
        splits.to_csv(tmp, sep="\t", index=False)
    return splits
