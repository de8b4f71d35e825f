"""Table 1: counts, summaries and tests checked against pandas/scipy computed here."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from glioma.constants import CLASSES, SEQUENCES
from glioma.errors import InputError
from glioma.report import stats, table1

COLUMNS = ("patient", "cohort", "grade", "age", "sex", "class")


def make_sheet(seed: int = 3) -> pd.DataFrame:
    """A sheet of 2 cohorts x 3 classes, plus unlabelled patients and missing values."""
    rng = np.random.default_rng(seed)
    rows = []
    # Moderate effects, so p-values land between 0.001 and 1 and their formatting is checked.
    mean_age = {"IDHwt": 52, "IDHmut-codel": 46, "IDHmut-intact": 44, "": 50}
    grades = {
        "IDHwt": ["3", "4", "4"],
        "IDHmut-codel": ["2", "3"],
        "IDHmut-intact": ["2", "3", "4"],
    }
    grades[""] = ["4"]
    sizes = {"IDHwt": 14, "IDHmut-codel": 9, "IDHmut-intact": 11, "": 3}
    for name, size in sizes.items():
        for i in range(size):
            age = f"{rng.normal(mean_age[name], 8):.1f}"
            rows.append(
                {
                    "patient": f"{name or 'unl'}-{i:02d}".replace("IDH", "P"),
                    "cohort": "SITE-A" if i % 3 else "SITE-B",
                    "grade": str(rng.choice(grades[name])),
                    "age": age,
                    "sex": str(rng.choice(["M", "F"], p=[0.6, 0.4])),
                    "class": name,
                }
            )
    sheet = pd.DataFrame(rows, columns=list(COLUMNS))
    sheet.loc[[1, 16], "age"] = ""  # an IDHwt and an IDHmut-codel with unknown age
    sheet.loc[[2, 30], "sex"] = ""
    sheet.loc[5, "grade"] = ""
    return sheet


@pytest.fixture
def written(tmp_path):
    sheet = make_sheet()
    path = tmp_path / "samples.tsv"
    sheet.to_csv(path, sep="\t", index=False)
    table1.write_table1(path, tmp_path / "table1.tsv", tmp_path / "table1.md")
    table = pd.read_csv(tmp_path / "table1.tsv", sep="\t", dtype=str, keep_default_na=False)
    return sheet, table, tmp_path


def cell(table: pd.DataFrame, variable: str, level: str, column: str) -> str:
    match = table[(table["variable"] == variable) & (table["level"] == level)]
    assert len(match) == 1, (variable, level)
    return match.iloc[0][column]


def hand_kruskal_p(groups: list[np.ndarray]) -> float:
    """Kruskal-Wallis H with tie correction, from its textbook formula."""
    values = np.concatenate(groups)
    ranks = sps.rankdata(values)
    n = len(values)
    h, start = 0.0, 0
    for g in groups:
        r = ranks[start : start + len(g)]
        h += r.sum() ** 2 / len(g)
        start += len(g)
    h = 12 / (n * (n + 1)) * h - 3 * (n + 1)
    _, ties = np.unique(values, return_counts=True)
    h /= 1 - (ties**3 - ties).sum() / (n**3 - n)
    return float(sps.chi2.sf(h, len(groups) - 1))


def hand_chi2_p(observed: np.ndarray) -> float:
    """Pearson chi-square test of independence from expected counts (no continuity correction)."""
    expected = observed.sum(1, keepdims=True) * observed.sum(0, keepdims=True) / observed.sum()
    chi2 = ((observed - expected) ** 2 / expected).sum()
    dof = (observed.shape[0] - 1) * (observed.shape[1] - 1)
    return float(sps.chi2.sf(chi2, dof))


def test_counts_and_summaries_match_pandas(written):
    sheet, table, _ = written
    ages = pd.to_numeric(sheet["age"].replace("", np.nan))
    groups = {"Total": sheet.index, "cohort: SITE-A": sheet.index[sheet["cohort"] == "SITE-A"]}
    groups["class: IDHwt"] = sheet.index[sheet["class"] == "IDHwt"]
    for column, index in groups.items():
        n = len(index)
        assert cell(table, "Patients", "n", column) == str(n)
        known = ages[index].dropna()
        expected = f"{known.mean():.1f} ± {known.std():.1f}"
        assert cell(table, "Age, years", "mean ± SD", column) == expected
        q1, q3 = np.percentile(known, [25, 75])
        assert cell(table, "Age, years", "median (IQR)", column) == (
            f"{np.median(known):.1f} ({q1:.1f}-{q3:.1f})"
        )
        males = int((sheet.loc[index, "sex"] == "M").sum())
        assert cell(table, "Sex", "male", column) == f"{males} ({100 * males / n:.1f}%)"
    assert cell(table, "Age, years", "unknown", "Total") == f"2 ({200 / len(sheet):.1f}%)"
    assert cell(table, "Molecular class", "unknown", "Total") == f"3 ({300 / len(sheet):.1f}%)"


def test_unknown_values_are_counted_not_dropped(written):
    sheet, table, _ = written
    for variable in ("Sex", "WHO grade", "Molecular class"):
        rows = table[table["variable"] == variable]
        assert "unknown" in set(rows["level"])
        counts = rows["Total"].str.extract(r"^(\d+)")[0].astype(int)
        assert counts.sum() == len(sheet), variable


def test_kruskal_wallis_hand_checked(written):
    sheet, table, tmp_path = written
    labelled = sheet[sheet["class"] != ""]
    ages = pd.to_numeric(labelled["age"].replace("", np.nan))
    groups = [ages[labelled["class"] == c].dropna().to_numpy() for c in CLASSES]
    p = hand_kruskal_p(groups)
    assert p == pytest.approx(sps.kruskal(*groups).pvalue, rel=1e-9)
    tests = table1.class_tests(table1.read_samples(tmp_path / "samples.tsv"))
    assert tests["age"].p == pytest.approx(p, rel=1e-9)
    assert cell(table, "Age, years", "mean ± SD", "p") == stats.format_p(p)
    assert cell(table, "Age, years", "mean ± SD", "test").startswith("Kruskal-Wallis")
    a, b = groups[0], groups[2]
    pair = min(1.0, 3 * sps.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    assert tests["age"].pairs[("IDHwt", "IDHmut-intact")] == pytest.approx(pair, rel=1e-9)
    column = "post-hoc: IDHwt vs IDHmut-intact"
    assert cell(table, "Age, years", "mean ± SD", column) == stats.format_p(pair)


def test_chi_square_hand_checked(written):
    sheet, table, tmp_path = written
    tests = table1.class_tests(table1.read_samples(tmp_path / "samples.tsv"))
    known = sheet[(sheet["class"] != "") & (sheet["grade"] != "")]
    observed = pd.crosstab(known["class"], known["grade"]).loc[list(CLASSES)].to_numpy()
    p = hand_chi2_p(observed.astype(float))
    assert p == pytest.approx(sps.chi2_contingency(observed).pvalue, rel=1e-9)
    assert tests["grade"].p == pytest.approx(p, rel=1e-9)
    assert cell(table, "WHO grade", "2", "p") == stats.format_p(p)
    sexed = sheet[(sheet["class"] != "") & (sheet["sex"] != "")]
    pairs = []
    for a, b in itertools.combinations(CLASSES, 2):
        sub = sexed[sexed["class"].isin([a, b])]
        pairs.append(sps.fisher_exact(pd.crosstab(sub["class"], sub["sex"]).to_numpy()).pvalue)
    expected = [min(1.0, 3 * q) for q in pairs]
    assert list(tests["sex"].pairs.values()) == pytest.approx(expected, rel=1e-9)
    column = "post-hoc: IDHwt vs IDHmut-codel"
    assert cell(table, "Sex", "female", column) == stats.format_p(expected[0])


@pytest.mark.parametrize(
    ("p", "text"),
    [
        (0.0004, "< 0.001"),
        (0.001, "0.001"),
        (0.00421, "0.004"),
        (0.0123, "0.012"),
        (0.0996, "0.10"),
        (0.456, "0.46"),
        (0.995, "> 0.99"),
        (None, "n/a"),
        (float("nan"), "n/a"),
    ],
)
def test_format_p(p, text):
    assert stats.format_p(p) == text


def test_single_class_gives_na(tmp_path):
    sheet = make_sheet()
    sheet = sheet[sheet["class"].isin(["IDHwt", ""])]
    path = tmp_path / "samples.tsv"
    sheet.to_csv(path, sep="\t", index=False)
    table = table1.build_table1(table1.read_samples(path))
    assert cell(table, "Age, years", "mean ± SD", "p") == "n/a"
    assert cell(table, "Sex", "female", "p") == "n/a"
    assert cell(table, "Patients", "n", "class: IDHmut-codel") == "0"


def test_markdown_has_table_and_footnote(written):
    _, table, tmp_path = written
    text = (tmp_path / "table1.md").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(lines) == len(table) + 2
    assert "Kruskal-Wallis" in text and "Bonferroni" in text and "Fisher" in text


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [("sex", "X", "'X'"), ("age", "forty", "'forty'"), ("grade", "5", "'5'")],
)
def test_bad_value_names_patient_column_file(tmp_path, column, value, message):
    sheet = make_sheet()
    sheet.loc[4, column] = value
    path = tmp_path / "samples.tsv"
    sheet.to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError) as err:
        table1.read_samples(path)
    text = str(err.value)
    assert sheet.loc[4, "patient"] in text and repr(column) in text and str(path) in text
    assert message in text


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "samples.tsv"
    make_sheet().drop(columns="grade").to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match="'grade'"):
        table1.read_samples(path)


def with_sequences(sheet: pd.DataFrame, lacking: dict[int, list[str]]) -> pd.DataFrame:
    """The sheet with an image path per sequence, left empty where ``lacking`` says."""
    sheet = sheet.assign(**{s: f"/d/{s}.nii.gz" for s in SEQUENCES})
    for index, sequences in lacking.items():
        sheet.loc[index, sequences] = ""
    return sheet


def test_sequence_rows_only_when_a_sequence_is_missing(written, tmp_path):
    _, table, _ = written  # a sheet without sequence columns
    assert table1.NOT_ACQUIRED_LABEL not in set(table["variable"])
    path = tmp_path / "complete.tsv"
    with_sequences(make_sheet(), {}).to_csv(path, sep="\t", index=False)
    complete = table1.build_table1(table1.read_samples(path))
    assert table1.NOT_ACQUIRED_LABEL not in set(complete["variable"])
    assert complete.equals(table)  # a complete sheet's table is the table without sequences


def test_sequence_rows_count_patients_lacking_each(tmp_path):
    sheet = make_sheet()
    # 0 (IDHwt, SITE-B) lacks T1w; 1 (IDHwt, SITE-A) T1w and FLAIR; 35 (unlabelled) FLAIR.
    sheet = with_sequences(sheet, {0: ["t1w"], 1: ["t1w", "flair"], 35: ["flair"]})
    path = tmp_path / "samples.tsv"
    sheet.to_csv(path, sep="\t", index=False)
    table = table1.write_table1(path, tmp_path / "table1.tsv", tmp_path / "table1.md")
    rows = table[table["variable"] == table1.NOT_ACQUIRED_LABEL]
    assert rows["level"].tolist() == ["T1w", "T1c", "T2w", "FLAIR"]  # zeros shown too
    assert table.index[table["variable"] == table1.NOT_ACQUIRED_LABEL][0] == len(table) - 4
    n = len(sheet)
    assert cell(table, table1.NOT_ACQUIRED_LABEL, "T1w", "Total") == f"2 ({200 / n:.1f}%)"
    assert cell(table, table1.NOT_ACQUIRED_LABEL, "FLAIR", "Total") == f"2 ({200 / n:.1f}%)"
    assert cell(table, table1.NOT_ACQUIRED_LABEL, "T1c", "Total") == "0 (0.0%)"
    for cohort in ("SITE-A", "SITE-B"):
        members = sheet[sheet["cohort"] == cohort]
        lacking = int((members["t1w"] == "").sum())
        expected = f"{lacking} ({100 * lacking / len(members):.1f}%)"
        assert cell(table, table1.NOT_ACQUIRED_LABEL, "T1w", f"cohort: {cohort}") == expected
    idhwt = int((sheet["class"] == "IDHwt").sum())
    assert cell(table, table1.NOT_ACQUIRED_LABEL, "T1w", "class: IDHwt") == (
        f"2 ({200 / idhwt:.1f}%)"
    )
    assert cell(table, table1.NOT_ACQUIRED_LABEL, "FLAIR", "class: IDHwt") == (
        f"1 ({100 / idhwt:.1f}%)"
    )
    assert cell(table, table1.NOT_ACQUIRED_LABEL, "FLAIR", "class: IDHmut-codel") == "0 (0.0%)"
    assert set(rows["p"]) == {""} and set(rows["test"]) == {""}  # no test of these rows
    markdown = (tmp_path / "table1.md").read_text(encoding="utf-8")
    assert f"| {table1.NOT_ACQUIRED_LABEL} | T1w | 2 (" in markdown
    assert "Sequence not acquired" in table1.FOOTNOTE and "not tested" in table1.FOOTNOTE
