"""Table 1: patient characteristics in total, per cohort and per molecular class, with tests.

Rows: the number of patients; age (mean ± SD, median (IQR)); sex, WHO grade and molecular class
as n (%); and, when some included patient lacks a sequence (``inclusion.missing_sequences:
allow``), the patients whose sequence was not acquired, n (%) per sequence. Percentages are of
the column's patients, and a missing value is counted in an ``unknown`` row, never dropped.
Columns: ``Total``, one per cohort (``cohort: X``), one per class (``class: X``, labelled
patients only), then the p-value across classes, the tests used, and one Bonferroni-corrected
post-hoc column per pair of classes (``post-hoc: A vs B``).

The tests are those of :mod:`glioma.report.stats`: Kruskal-Wallis with pairwise Mann-Whitney U
for age; chi-square with pairwise Fisher's exact (2x2) or chi-square (2 x k) for sex and grade;
each leaves unknown values out. The sequence rows have no test. :data:`FOOTNOTE` says so under
the table.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from glioma.constants import CLASSES, SEQUENCES
from glioma.errors import InputError
from glioma.io import atomic_path
from glioma.report import stats
from glioma.report.tables import SEQUENCE_LABELS

REQUIRED_COLUMNS = ("patient", "cohort", "grade", "age", "sex", "class")
UNKNOWN = "unknown"
#: Categorical variables: sheet column -> (row label, {value: level label}), in display order.
CATEGORICAL: dict[str, tuple[str, dict[str, str]]] = {
    "sex": ("Sex", {"F": "female", "M": "male"}),
    "grade": ("WHO grade", {"2": "2", "3": "3", "4": "4"}),
    "class": ("Molecular class", {c: c for c in CLASSES}),
}
AGE_LABEL = "Age, years"
#: The variable of the rows counting patients whose sequence was not acquired.
NOT_ACQUIRED_LABEL = "Sequence not acquired"
PAIRS = tuple(itertools.combinations(CLASSES, 2))
PAIR_COLUMNS = tuple(f"post-hoc: {a} vs {b}" for a, b in PAIRS)
AGE_TESTS = "Kruskal-Wallis; post-hoc Mann-Whitney U"
CATEGORICAL_TESTS = "chi-square; post-hoc Fisher's exact (2x2) or chi-square (2 x k)"

FOOTNOTE = (
    "Values are n (%) of the column's patients, or mean ± SD and median (IQR, 25th-75th "
    "percentile) of known ages; 'unknown' counts patients whose value is missing in the sample "
    "sheet. Class columns, p-values and post-hoc tests cover labelled patients only (those whose "
    "IDH and 1p/19q status give a WHO 2021 class); tests leave unknown values out. "
    "p across classes: Kruskal-Wallis H test for age; Pearson chi-square test of independence "
    "for sex and grade (levels no patient has are dropped). Post-hoc, each pair of classes: "
    "two-sided Mann-Whitney U test for age; Fisher's exact test for 2x2 tables (sex) and "
    "chi-square for 2 x k tables (grade); Bonferroni-corrected (p multiplied by the number of "
    "pairs tested, capped at 1). p < 0.001 is shown as < 0.001, other p-values with two "
    "significant digits and at most three decimals; n/a: undefined (fewer than two classes "
    "with data, or no variation). 'Sequence not acquired' (shown when some included patient "
    "lacks a sequence, under inclusion.missing_sequences: allow): n (%) of the column's patients "
    "whose sample-sheet cell for that sequence is empty; a patient lacking two sequences is "
    "counted in both rows; not tested."
)


def read_samples(path: str | Path) -> pd.DataFrame:
    """Read the validated sample sheet for Table 1, with ``age`` as float (NaN when unknown).

    Raises:
        InputError: a required column is missing, or a value is not one the sheet allows; the
            message names the patient, the column and the file.
    """
    sheet = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    for column in REQUIRED_COLUMNS:
        if column not in sheet.columns:
            raise InputError("required column is missing", column=column, path=path)
    for column, (_, levels) in CATEGORICAL.items():
        bad = ~sheet[column].isin([*levels, ""])
        if bad.any():
            row = sheet[bad].iloc[0]
            raise InputError(
                f"value {row[column]!r} is not one of {', '.join(levels)} or empty",
                patient=row["patient"],
                column=column,
                path=path,
            )
    ages = pd.to_numeric(sheet["age"].replace("", np.nan), errors="coerce")
    bad_age = ages.isna() & (sheet["age"] != "")
    if bad_age.any():
        row = sheet[bad_age].iloc[0]
        raise InputError(
            f"value {row['age']!r} is not a number of years",
            patient=row["patient"],
            column="age",
            path=path,
        )
    return sheet.assign(age=ages.astype(float))


def _groups(sheet: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The table's columns: total, each cohort (sorted), each class (labelled patients)."""
    groups = {"Total": sheet}
    for cohort in sorted(sheet["cohort"].unique()):
        groups[f"cohort: {cohort}"] = sheet[sheet["cohort"] == cohort]
    for name in CLASSES:
        groups[f"class: {name}"] = sheet[sheet["class"] == name]
    return groups


def _count(n: int, total: int) -> str:
    """Format a count with its percentage of ``total``."""
    return f"{n} ({100 * n / total:.1f}%)" if total else "0"


def _age_cells(ages: pd.Series) -> tuple[str, str]:
    """Mean ± SD and median (IQR) of the known ages, or a dash when there is none."""
    known = ages.dropna()
    if known.empty:
        return "-", "-"
    sd = f"{known.std(ddof=1):.1f}" if len(known) > 1 else "n/a"
    q1, median, q3 = known.quantile([0.25, 0.5, 0.75])
    return f"{known.mean():.1f} ± {sd}", f"{median:.1f} ({q1:.1f}-{q3:.1f})"


def _empty_row(variable: str, level: str, groups: dict[str, pd.DataFrame]) -> dict[str, str]:
    """A row with every statistics cell blank."""
    return {
        "variable": variable,
        "level": level,
        **dict.fromkeys(groups, ""),
        "p": "",
        "test": "",
        **dict.fromkeys(PAIR_COLUMNS, ""),
    }


@dataclass(frozen=True)
class ClassTest:
    """A variable's test across classes: its p, the post-hoc pairs' corrected p, and the tests."""

    p: float | None
    pairs: stats.PairwiseP
    test: str


def class_tests(sheet: pd.DataFrame) -> dict[str, ClassTest]:
    """Test age, sex and grade across the classes of the labelled patients (unknowns left out).

    Returns:
        ``{"age": ..., "sex": ..., "grade": ...}``, raw (unformatted) p-values.
    """
    labelled = sheet[sheet["class"].isin(CLASSES)]
    ages = {c: labelled.loc[labelled["class"] == c, "age"].dropna().to_numpy() for c in CLASSES}
    tests = {
        "age": ClassTest(
            stats.kruskal_p(list(ages.values())), stats.pairwise_numeric(ages), AGE_TESTS
        )
    }
    for column in ("sex", "grade"):
        known = labelled[labelled[column] != ""]
        counts = pd.crosstab(known["class"], known[column]).reindex(
            index=list(CLASSES), columns=list(CATEGORICAL[column][1]), fill_value=0
        )
        tests[column] = ClassTest(
            stats.chi2_p(counts.to_numpy()),
            stats.pairwise_categorical(counts),
            CATEGORICAL_TESTS,
        )
    return tests


def _with_tests(row: dict[str, str], test: ClassTest) -> None:
    """Fill a variable's first row with its p across classes and its post-hoc p-values."""
    row["p"] = stats.format_p(test.p)
    row["test"] = test.test
    for pair, column in zip(PAIRS, PAIR_COLUMNS, strict=True):
        row[column] = stats.format_p(test.pairs.get(pair))


def _age_rows(groups: dict[str, pd.DataFrame], test: ClassTest) -> list[dict[str, str]]:
    """Rows of age: mean ± SD (with the tests), median (IQR), and unknown when any is."""
    mean_row = _empty_row(AGE_LABEL, "mean ± SD", groups)
    median_row = _empty_row(AGE_LABEL, "median (IQR)", groups)
    unknown_row = _empty_row(AGE_LABEL, UNKNOWN, groups)
    for name, frame in groups.items():
        mean_row[name], median_row[name] = _age_cells(frame["age"])
        unknown_row[name] = _count(int(frame["age"].isna().sum()), len(frame))
    _with_tests(mean_row, test)
    has_unknown = groups["Total"]["age"].isna().any()
    return [mean_row, median_row, *([unknown_row] if has_unknown else [])]


def _categorical_rows(
    column: str, groups: dict[str, pd.DataFrame], test: ClassTest | None
) -> list[dict[str, str]]:
    """Rows of one categorical variable: each level, then unknown when any is."""
    label, levels = CATEGORICAL[column]
    values = [*levels, ""] if (groups["Total"][column] == "").any() else list(levels)
    rows = []
    for value in values:
        row = _empty_row(label, levels.get(value, UNKNOWN), groups)
        for name, frame in groups.items():
            row[name] = _count(int((frame[column] == value).sum()), len(frame))
        rows.append(row)
    if test is not None:
        _with_tests(rows[0], test)
    return rows


def not_acquired(sheet: pd.DataFrame) -> pd.DataFrame:
    """Which sequences each patient lacks: a bool column per sequence, True where the sheet's
    cell is empty (a sheet without a sequence's column has that sequence for every patient)."""
    return pd.DataFrame(
        {
            s: sheet[s].astype(str).str.strip().eq("")
            if s in sheet.columns
            else pd.Series(False, index=sheet.index)
            for s in SEQUENCES
        },
        index=sheet.index,
    )


def _sequence_rows(groups: dict[str, pd.DataFrame], lacking: pd.DataFrame) -> list[dict[str, str]]:
    """Rows of the sequences not acquired, one per sequence, when some patient lacks one."""
    if not lacking.to_numpy().any():
        return []
    rows = []
    for sequence in SEQUENCES:
        row = _empty_row(NOT_ACQUIRED_LABEL, SEQUENCE_LABELS[sequence], groups)
        for name, frame in groups.items():
            row[name] = _count(int(lacking.loc[frame.index, sequence].sum()), len(frame))
        rows.append(row)
    return rows


def build_table1(sheet: pd.DataFrame) -> pd.DataFrame:
    """Build Table 1 from a sheet read by :func:`read_samples`.

    Returns:
        One row per (variable, level) with formatted cells (strings), columns ``variable``,
        ``level``, ``Total``, ``cohort: X`` ..., ``class: X`` ..., ``p``, ``test`` and the
        post-hoc columns (see the module docstring).
    """
    sheet = sheet.reset_index(drop=True)
    groups = _groups(sheet)
    tests = class_tests(sheet)
    patients = _empty_row("Patients", "n", groups)
    for name, frame in groups.items():
        patients[name] = str(len(frame))
    rows = [patients, *_age_rows(groups, tests["age"])]
    for column in CATEGORICAL:  # class is what the tests compare: it has no test of its own
        rows += _categorical_rows(column, groups, tests.get(column))
    rows += _sequence_rows(groups, not_acquired(sheet))
    return pd.DataFrame(rows, dtype=str)


def _md_cell(value: object) -> str:
    """A Markdown table cell: pipes escaped, no line breaks."""
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(table: pd.DataFrame, footnote: str = FOOTNOTE) -> str:
    """Render Table 1 as a GitHub-flavoured Markdown table with its footnote."""
    header = "| " + " | ".join(_md_cell(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in table.to_numpy()]
    return "\n".join(["# Table 1", "", header, rule, *body, "", footnote, ""])


def write_table1(sheet_path: str | Path, tsv_path: str | Path, md_path: str | Path) -> pd.DataFrame:
    """Read the validated sheet, build Table 1 and write it as TSV and Markdown, atomically.

    Returns:
        The table that was written.
    """
    table = build_table1(read_samples(sheet_path))
    with atomic_path(tsv_path) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    with atomic_path(md_path) as tmp:
        Path(tmp).write_text(to_markdown(table), encoding="utf-8")
    return table
