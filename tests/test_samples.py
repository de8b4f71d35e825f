"""Sample-sheet validation: each bad case is rejected naming line, column and value."""

from pathlib import Path

import pandas as pd
import pytest

from glioma.samples import SampleSheetError, molecular_class, validate_sheet

COLUMNS = ["patient", "cohort", "t1w", "t1c", "t2w", "flair", "roi"]
COLUMNS += ["idh", "codeletion", "grade", "age", "sex"]


def _row(tmp: Path, patient: str, cohort: str = "C1", **overrides: str) -> dict[str, str]:
    row = {"patient": patient, "cohort": cohort}
    for seq in ("t1w", "t1c", "t2w", "flair", "roi"):
        name = f"img/{cohort}_{patient}_{seq}.nii.gz"
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        row[seq] = name
    row.update(idh="mutant", codeletion="intact", grade="2", age="40", sex="F")
    row.update(overrides)
    return row


def _write(tmp: Path, rows: list[dict[str, str]], drop: str | None = None) -> Path:
    df = pd.DataFrame(rows)
    if drop:
        df = df.drop(columns=drop)
    path = tmp / "samples.tsv"
    df.to_csv(path, sep="\t", index=False)
    return path


def test_valid_sheet_classes_and_paths(tmp_path: Path) -> None:
    rows = [
        _row(tmp_path, "P1", idh="wildtype", codeletion=""),
        _row(tmp_path, "P2", idh="mutant", codeletion="codeleted"),
        _row(tmp_path, "P3", idh="Mutant", codeletion="intact", sex="m"),
    ]
    result = validate_sheet(_write(tmp_path, rows))
    assert list(result.included["class"]) == ["IDHwt", "IDHmut-codel", "IDHmut-intact"]
    assert list(result.included["roi_on"]) == ["flair"] * 3
    assert result.included.loc[2, "sex"] == "M"
    for column in ("t1w", "roi"):
        assert all(Path(p).is_absolute() and Path(p).exists() for p in result.included[column])
    assert result.exclusions.empty


@pytest.mark.parametrize(
    ("override", "column", "value"),
    [
        ({"idh": "positive"}, "idh", "positive"),
        ({"codeletion": "yes"}, "codeletion", "yes"),
        ({"grade": "IV"}, "grade", "IV"),
        ({"sex": "X"}, "sex", "X"),
        ({"age": "forty"}, "age", "forty"),
        ({"roi_on": "dwi"}, "roi_on", "dwi"),
        ({"patient": "../x"}, "patient", "../x"),
        ({"patient": "a;b"}, "patient", "a;b"),
        ({"patient": "a b"}, "patient", "a b"),
        ({"cohort": "$(rm -rf ~)"}, "cohort", "$(rm -rf ~)"),
        ({"flair": "nowhere/flair.nii.gz"}, "flair", "nowhere/flair.nii.gz"),
    ],
)
def test_bad_value_names_line_column_value(
    tmp_path: Path, override: dict[str, str], column: str, value: str
) -> None:
    rows = [_row(tmp_path, "P1"), _row(tmp_path, "P2")]
    rows[1].update(override)
    with pytest.raises(SampleSheetError) as err:
        validate_sheet(_write(tmp_path, rows))
    message = str(err.value)
    assert "line 3" in message
    assert f"column {column!r}" in message
    assert repr(value) in message


def test_duplicate_id_in_cohort(tmp_path: Path) -> None:
    rows = [_row(tmp_path, "P1"), _row(tmp_path, "P2"), _row(tmp_path, "P1")]
    with pytest.raises(SampleSheetError, match=r"line 4, column 'patient', value 'P1': duplicate"):
        validate_sheet(_write(tmp_path, rows))


def test_same_id_in_two_cohorts_is_fine(tmp_path: Path) -> None:
    rows = [_row(tmp_path, "P1", cohort="A"), _row(tmp_path, "P1", cohort="B")]
    assert len(validate_sheet(_write(tmp_path, rows)).included) == 2


def test_missing_column(tmp_path: Path) -> None:
    with pytest.raises(SampleSheetError, match=r"missing column 'codeletion'"):
        validate_sheet(_write(tmp_path, [_row(tmp_path, "P1")], drop="codeletion"))


def test_missing_sheet(tmp_path: Path) -> None:
    with pytest.raises(SampleSheetError, match="does not exist"):
        validate_sheet(tmp_path / "nope.tsv")


def test_every_problem_reported_at_once(tmp_path: Path) -> None:
    rows = [_row(tmp_path, "P1", idh="maybe"), _row(tmp_path, "P 2", sex="?")]
    with pytest.raises(SampleSheetError) as err:
        validate_sheet(_write(tmp_path, rows))
    assert len(err.value.problems) == 3


def test_not_an_image_suffix(tmp_path: Path) -> None:
    row = _row(tmp_path, "P1")
    (tmp_path / "notes.txt").touch()
    row["t2w"] = "notes.txt"
    with pytest.raises(SampleSheetError, match=r"column 't2w', value 'notes.txt': not an image"):
        validate_sheet(_write(tmp_path, [row]))


def test_inclusion_exclusion(tmp_path: Path) -> None:
    rows = [
        _row(tmp_path, "ADULT"),
        _row(tmp_path, "CHILD", age="12"),
        _row(tmp_path, "EIGHTEEN", age="18"),
        _row(tmp_path, "NOT2", t2w=""),
        _row(tmp_path, "UNLAB", idh="mutant", codeletion=""),
        _row(tmp_path, "NOAGE", age=""),
    ]
    result = validate_sheet(_write(tmp_path, rows), min_age_exclusive=18)
    assert sorted(result.included["patient"]) == ["ADULT", "NOAGE", "UNLAB"]
    reasons = result.exclusions.set_index("patient")
    assert reasons.loc["CHILD", "scope"] == "all" and "age 12" in reasons.loc["CHILD", "reason"]
    assert reasons.loc["EIGHTEEN", "scope"] == "all"
    assert "missing t2w" in reasons.loc["NOT2", "reason"]
    assert reasons.loc["UNLAB", "scope"] == "training"
    assert "NOAGE" not in reasons.index
    assert result.included.set_index("patient").loc["UNLAB", "class"] == ""


def test_absolute_paths_kept(tmp_path: Path) -> None:
    row = _row(tmp_path, "P1")
    row["t1c"] = str((tmp_path / row["t1c"]).resolve())
    sheet_dir = tmp_path / "elsewhere"
    sheet_dir.mkdir()
    df = pd.DataFrame([row])
    for seq in ("t1w", "t2w", "flair", "roi"):
        df[seq] = "../" + df[seq]
    df.to_csv(sheet_dir / "s.tsv", sep="\t", index=False)
    included = validate_sheet(sheet_dir / "s.tsv").included
    assert Path(included.loc[0, "t1c"]) == (tmp_path / row["t1c"]).resolve()


@pytest.mark.parametrize(
    ("idh", "codel", "expected"),
    [
        ("wildtype", "", "IDHwt"),
        ("wildtype", "intact", "IDHwt"),
        ("mutant", "codeleted", "IDHmut-codel"),
        ("mutant", "intact", "IDHmut-intact"),
        ("mutant", "", ""),
        ("", "codeleted", ""),
    ],
)
def test_molecular_class(idh: str, codel: str, expected: str) -> None:
    assert molecular_class(idh, codel) == expected


def _gapped(tmp_path: Path) -> list[dict[str, str]]:
    return [
        _row(tmp_path, "FULL"),
        _row(tmp_path, "NOT1", t1w=""),
        _row(tmp_path, "NOT1C", t1c=""),
        _row(tmp_path, "NOFLAIR", flair="", roi_on="t2w"),
        _row(tmp_path, "TWOGONE", t1w="", t1c=""),
        _row(tmp_path, "ONLYROI", t1w="", t1c="", t2w=""),
        _row(tmp_path, "NOROI", roi=""),
    ]


def test_missing_sequences_exclude_names_what_each_patient_lacked(tmp_path: Path) -> None:
    result = validate_sheet(_write(tmp_path, _gapped(tmp_path)))
    assert list(result.included["patient"]) == ["FULL"]
    reasons = result.exclusions.set_index("patient")["reason"]
    assert reasons["NOT1"] == "missing t1w"
    assert reasons["NOT1C"] == "missing t1c"
    assert reasons["NOFLAIR"] == "missing flair"
    assert reasons["TWOGONE"] == "missing t1w, t1c"
    assert reasons["NOROI"] == "missing roi"


def test_missing_sequences_allow_keeps_patients_with_the_roi_sequence_and_one_more(
    tmp_path: Path,
) -> None:
    result = validate_sheet(_write(tmp_path, _gapped(tmp_path)), missing_sequences="allow")
    included = result.included.set_index("patient")
    assert sorted(included.index) == ["FULL", "NOFLAIR", "NOT1", "NOT1C", "TWOGONE"]
    assert included.loc["NOT1", "t1w"] == "" and Path(included.loc["NOT1", "t1c"]).is_absolute()
    assert included.loc["NOFLAIR", "roi_on"] == "t2w"
    reasons = result.exclusions.set_index("patient")["reason"]
    assert reasons["ONLYROI"].startswith("only flair: needs the ROI's sequence (flair) and")
    assert reasons["NOROI"] == "missing roi"
    assert set(reasons.index) == {"ONLYROI", "NOROI"}


def test_missing_roi_sequence_is_refused_naming_patient_and_column(tmp_path: Path) -> None:
    rows = [_row(tmp_path, "FULL"), _row(tmp_path, "NOFLAIR", flair="")]  # roi_on: flair
    with pytest.raises(SampleSheetError) as err:
        validate_sheet(_write(tmp_path, rows), missing_sequences="allow")
    message = str(err.value)
    assert "line 3, patient 'NOFLAIR', column 'flair', value ''" in message
    assert "the ROI was drawn on flair (column 'roi_on')" in message
    # Under exclude the same patient is simply excluded for lacking FLAIR.
    reasons = validate_sheet(_write(tmp_path, rows)).exclusions.set_index("patient")["reason"]
    assert reasons["NOFLAIR"] == "missing flair"
    with pytest.raises(ValueError, match="missing_sequences"):
        validate_sheet(_write(tmp_path, rows), missing_sequences="impute")
