"""Cross-validation folds: stratified, stable, leakage-free fold manifests; leave-one-cohort-out."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from glioma.constants import CLASSES, CV_SPLIT
from glioma.dataset.folds import check_folds, deal_folds, fold_ids, fold_manifest
from glioma.dataset.splits import assign_splits, make_splits, read_splits

RATIOS = {"train": 0.7, "val": 0.1, "test": 0.2}


def _sheet(cohorts: dict[str, int], *, unlabelled: int = 0) -> pd.DataFrame:
    """``n`` patients per cohort, classes in turn, and ``unlabelled`` more in the first."""
    rows = []
    for cohort, n in cohorts.items():
        for k in range(n):
            rows.append({"patient": f"{cohort}-{k:03d}", "cohort": cohort, "class": CLASSES[k % 3]})
    first = next(iter(cohorts))
    for k in range(unlabelled):
        rows.append({"patient": f"{first}-U{k:02d}", "cohort": first, "class": ""})
    return pd.DataFrame(rows)


def _cv(sheet: pd.DataFrame, folds: int = 3, **kwargs) -> pd.DataFrame:
    return assign_splits(sheet, level="patient", ratios=RATIOS, seed=11, folds=folds, **kwargs)


def test_development_patients_get_a_fold_and_test_patients_none() -> None:
    sheet = _sheet({"A": 60, "B": 45}, unlabelled=4)
    single = assign_splits(sheet, level="patient", ratios=RATIOS, seed=11)
    cv = _cv(sheet)
    # Cross-validation keeps the single split's test set; its train and val become cv.
    assert (cv["split"] == "test").equals(single["split"] == "test")
    assert set(cv["split"]) == {CV_SPLIT, "test", "unlabelled"}
    development = cv[cv["split"] == CV_SPLIT]
    assert set(development["fold"]) == {"0", "1", "2"}
    assert (cv.loc[cv["split"] != CV_SPLIT, "fold"] == "").all()
    assert fold_ids(cv) == ["0", "1", "2"]


def test_folds_are_stratified_by_cohort_and_class() -> None:
    cv = _cv(_sheet({"A": 61, "B": 40}), folds=4)
    development = cv[cv["split"] == CV_SPLIT]
    counts = development.groupby(["cohort", "class", "fold"]).size().unstack("fold", fill_value=0)
    assert counts.shape[1] == 4
    # Round-robin dealing: within a stratum the folds differ by at most one patient.
    assert ((counts.max(axis=1) - counts.min(axis=1)) <= 1).all(), counts


def test_adding_a_cohort_moves_no_patient_between_folds() -> None:
    before = _cv(_sheet({"A": 30, "B": 24}))
    after = _cv(_sheet({"A": 30, "B": 24, "C": 27}))
    merged = before.merge(after, on=["cohort", "patient"], suffixes=("_before", "_after"))
    assert len(merged) == len(before)
    assert (merged["split_before"] == merged["split_after"]).all()
    assert (merged["fold_before"] == merged["fold_after"]).all()
    assert set(after.loc[after["cohort"] == "C", "fold"]) - {""} == {"0", "1", "2"}


def test_seed_changes_the_folds() -> None:
    sheet = _sheet({"A": 60})
    one = _cv(sheet)
    other = assign_splits(sheet, level="patient", ratios=RATIOS, seed=12, folds=3)
    assert not one["fold"].equals(other["fold"])


def test_every_development_patient_is_held_out_by_exactly_one_fold() -> None:
    cv = _cv(_sheet({"A": 45, "B": 30}, unlabelled=3))
    keys = list(zip(cv["cohort"], cv["patient"], strict=True))
    in_cv = cv["split"] == CV_SPLIT
    development = {key for key, inside in zip(keys, in_cv, strict=True) if inside}
    outside = set(keys) - development
    held_out: list[tuple[str, str]] = []
    for fold in fold_ids(cv):
        manifest = fold_manifest(cv, fold, ratios=RATIOS, seed=11)
        keys = set(zip(manifest["cohort"], manifest["patient"], strict=True))
        # Test and unlabelled patients are in no fold manifest: no fold model sees them.
        assert keys == development
        assert not keys & outside
        test = manifest[manifest["split"] == "test"]
        assert (test["fold"] == fold).all()
        fitted = manifest[manifest["split"].isin(["train", "val"])]
        assert not (fitted["fold"] == fold).any()
        # The inner validation share follows train:val (0.7:0.1 -> 1/8 of the rest).
        assert 0.03 < (fitted["split"] == "val").mean() < 0.25
        held_out += list(zip(test["cohort"], test["patient"], strict=True))
    assert sorted(held_out) == sorted(development)


def test_inner_validation_differs_between_folds() -> None:
    cv = _cv(_sheet({"A": 90}))
    val = [
        set(m.loc[m["split"] == "val", "patient"])
        for m in (fold_manifest(cv, f, ratios=RATIOS, seed=11) for f in fold_ids(cv))
    ]
    assert val[0] != val[1] and val[1] != val[2]


def test_quota_inner_split_gives_every_class_a_validation_patient() -> None:
    cv = _cv(_sheet({"A": 36}), method="quota")
    for fold in fold_ids(cv):
        manifest = fold_manifest(cv, fold, ratios=RATIOS, seed=11, method="quota")
        assert set(manifest.loc[manifest["split"] == "val", "class"]) == set(CLASSES)


def test_leave_one_cohort_out_holds_each_cohort_out() -> None:
    sheet = _sheet({"A": 9, "B": 6, "C": 6}, unlabelled=2)
    splits = assign_splits(sheet, level="cohort", ratios=RATIOS, seed=1)
    labelled = splits[splits["class"] != ""]
    assert (labelled["split"] == CV_SPLIT).all()
    assert (labelled["fold"] == labelled["cohort"]).all()
    assert fold_ids(splits) == ["A", "B", "C"]
    manifest = fold_manifest(splits, "B", ratios=RATIOS, seed=1)
    assert set(manifest.loc[manifest["split"] == "test", "cohort"]) == {"B"}
    assert set(manifest.loc[manifest["split"] != "test", "cohort"]) == {"A", "C"}


def test_leave_one_cohort_out_needs_two_labelled_cohorts() -> None:
    sheet = _sheet({"A": 9, "B": 0})
    with pytest.raises(ValueError, match="two cohorts with labelled patients"):
        assign_splits(sheet, level="cohort", ratios=RATIOS, seed=1)


@pytest.mark.parametrize(
    ("folds", "level", "test_cohorts", "message"),
    [
        (1, "patient", [], "at least 2"),
        (3, "slice", [], "split.level slice"),
        (3, "cohort", [], "leave-one-cohort-out"),
    ],
)
def test_bad_fold_settings_are_refused(
    folds: int, level: str, test_cohorts: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_folds(folds, level, test_cohorts)


def test_folds_with_test_cohorts_cross_validate_the_others() -> None:
    sheet = _sheet({"A": 30, "B": 30, "T": 12})
    splits = assign_splits(
        sheet, level="cohort", ratios=RATIOS, seed=1, test_cohorts=["T"], folds=3
    )
    assert (splits.loc[splits["cohort"] == "T", "split"] == "test").all()
    assert set(splits.loc[splits["cohort"] != "T", "split"]) == {CV_SPLIT}


def test_deal_folds_spreads_the_remainders() -> None:
    # Ten strata of one patient each: the per-stratum offsets spread them over the folds.
    table = pd.DataFrame(
        {"cohort": [f"C{k}" for k in range(10)], "patient": ["P"] * 10, "class": ["IDHwt"] * 10}
    )
    assert len(set(deal_folds(table, folds=3, seed=0))) == 3


def test_manifest_round_trip_and_old_manifests_without_folds(tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.tsv"
    _sheet({"A": 12}).to_csv(sheet, sep="\t", index=False)
    out = tmp_path / "splits.tsv"
    written = make_splits(sheet, out, level="patient", ratios=RATIOS, seed=3, folds=3)
    assert read_splits(out).equals(written)
    old = tmp_path / "old.tsv"
    written.drop(columns="fold").to_csv(old, sep="\t", index=False)
    assert (read_splits(old)["fold"] == "").all()


def test_make_splits_logs_patients_that_changed_fold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sheet = tmp_path / "sheet.tsv"
    _sheet({"A": 30}).to_csv(sheet, sep="\t", index=False)
    out = tmp_path / "splits.tsv"
    make_splits(sheet, out, level="patient", ratios=RATIOS, seed=3, folds=3)
    with caplog.at_level(logging.WARNING):
        make_splits(sheet, out, level="patient", ratios=RATIOS, seed=3, folds=4)
    assert "changed split or fold" in caplog.text
    assert "cv[" in caplog.text
