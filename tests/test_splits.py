"""Split manifest: no leakage, ratios per stratum, stability as cohorts are added, validation."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from glioma.constants import CLASSES
from glioma.dataset.splits import (
    assign_splits,
    check_ratios,
    check_split_config,
    make_splits,
    quota_sizes,
    read_sheet,
    read_splits,
    slice_split,
    split_counts,
)
from glioma.errors import InputError

RATIOS = {"train": 0.8, "val": 0.1, "test": 0.1}


def synthetic_sheet(cohorts: dict[str, int], *, unlabelled: int = 0, seed: int = 0) -> pd.DataFrame:
    """Patients per cohort with classes drawn 50/25/25, plus ``unlabelled`` per cohort."""
    rng = np.random.default_rng(seed)
    rows = []
    for cohort, count in cohorts.items():
        classes = rng.choice(CLASSES, size=count, p=[0.5, 0.25, 0.25])
        rows += [(f"{cohort}-{i:04d}", cohort, c) for i, c in enumerate(classes)]
        rows += [(f"{cohort}-u{i:03d}", cohort, "") for i in range(unlabelled)]
    return pd.DataFrame(rows, columns=["patient", "cohort", "class"])


def keyed(splits: pd.DataFrame) -> dict[tuple[str, str], str]:
    return dict(
        zip(zip(splits["cohort"], splits["patient"], strict=True), splits["split"], strict=True)
    )


@pytest.mark.parametrize("seed", range(5))
def test_patient_level_ratios_hold_per_stratum(seed: int) -> None:
    sheet = synthetic_sheet({"A": 200, "B": 160}, unlabelled=5)
    splits = assign_splits(sheet, level="patient", ratios=RATIOS, seed=seed)
    assert len(splits) == len(sheet) and not splits.duplicated(["cohort", "patient"]).any()
    assert set(splits.loc[splits["class"] == "", "split"]) == {"unlabelled"}
    labelled = splits[splits["class"] != ""]
    strata = [stratum for _, stratum in labelled.groupby(["cohort", "class"])]
    assert len(strata) == 6
    for stratum in [*strata, labelled]:
        fractions = stratum["split"].value_counts(normalize=True)
        for name, target in RATIOS.items():
            # Hashing never re-balances, so a stratum of n patients spreads binomially: allow 4 SD
            # (0.06-0.25 on these 40-100-patient strata, 0.06-0.08 overall).
            spread = 4 * math.sqrt(target * (1 - target) / len(stratum))
            assert abs(fractions.get(name, 0.0) - target) < spread, (stratum.iloc[0], name)


def test_adding_a_cohort_and_patients_moves_nobody() -> None:
    before = synthetic_sheet({"A": 60, "B": 40}, unlabelled=2)
    grown = synthetic_sheet({"A": 90, "B": 40, "C": 50}, unlabelled=3)
    grown = grown.sample(frac=1, random_state=1)  # row order must not matter either
    for level, extra in [("patient", {}), ("cohort", {"test_cohorts": ["B"]})]:
        old = keyed(assign_splits(before, level=level, ratios=RATIOS, seed=7, **extra))
        new = keyed(assign_splits(grown, level=level, ratios=RATIOS, seed=7, **extra))
        assert {key: new[key] for key in old} == old
        assert len(new) == len(grown)


@pytest.mark.parametrize(
    ("n", "sizes"),
    [(1, [1, 0, 0]), (3, [1, 1, 1]), (10, [8, 1, 1]), (20, [16, 2, 2]), (5, [3, 1, 1])],
)
def test_quota_sizes_are_exact_and_cover_every_split(n: int, sizes: list[int]) -> None:
    assert quota_sizes(n, RATIOS, [0.1, 0.2, 0.3]) == sizes


def test_quota_sizes_break_ties_by_the_given_order() -> None:
    ratios = {"train": 0.6, "val": 0.2, "test": 0.2}
    assert quota_sizes(2, ratios, [0.0, 0.9, 0.1]) == [1, 1, 0]
    assert quota_sizes(2, ratios, [0.0, 0.1, 0.9]) == [1, 0, 1]


def test_quota_holds_ratios_per_stratum_and_reaches_small_classes() -> None:
    sheet = synthetic_sheet({"A": 53, "B": 7, "C": 4}, unlabelled=2)
    splits = assign_splits(sheet, level="patient", ratios=RATIOS, seed=3, method="quota")
    labelled = splits[splits["class"] != ""]
    for (_, _), stratum in labelled.groupby(["cohort", "class"]):
        counts = stratum["split"].value_counts()
        n = len(stratum)
        expected = quota_sizes(n, RATIOS, [0, 0, 0])
        assert sorted(counts.reindex(["train", "val", "test"], fill_value=0)) == sorted(expected)
        if n >= 3:
            assert set(counts.index) == {"train", "val", "test"}, stratum
        assert abs(counts.get("train", 0) - 0.8 * n) <= max(2, 0.1 * n)
    assert set(splits.loc[splits["class"] == "", "split"]) == {"unlabelled"}


def test_quota_adding_a_cohort_moves_nobody_and_growing_one_moves_few() -> None:
    before = synthetic_sheet({"A": 60, "B": 40}, unlabelled=2)
    grown = synthetic_sheet({"A": 60, "B": 40, "C": 50}, unlabelled=2)
    grown = grown.sample(frac=1, random_state=1)
    for level, extra in [("patient", {}), ("cohort", {"test_cohorts": ["B"]})]:
        old = keyed(
            assign_splits(before, level=level, ratios=RATIOS, seed=7, method="quota", **extra)
        )
        new = keyed(
            assign_splits(grown, level=level, ratios=RATIOS, seed=7, method="quota", **extra)
        )
        assert {key: new[key] for key in old} == old
    extra = pd.DataFrame([{"patient": "A-new", "cohort": "A", "class": "IDHwt"}])
    more_a = pd.concat([before, extra], ignore_index=True)
    new = keyed(assign_splits(more_a, level="patient", ratios=RATIOS, seed=7, method="quota"))
    old = keyed(assign_splits(before, level="patient", ratios=RATIOS, seed=7, method="quota"))
    moved = [key for key in old if new[key] != old[key]]
    assert len(moved) <= 2 and all(cohort == "A" for cohort, _ in moved)


def test_make_splits_logs_patients_that_moved(tmp_path: Path, caplog) -> None:
    sheet = synthetic_sheet({"A": 30})
    sheet.to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    out = tmp_path / "splits.tsv"
    make_splits(tmp_path / "samples.tsv", out, level="patient", ratios=RATIOS, seed=1)
    with caplog.at_level(logging.WARNING):
        make_splits(tmp_path / "samples.tsv", out, level="patient", ratios=RATIOS, seed=1)
    assert "changed split" not in caplog.text
    with caplog.at_level(logging.WARNING):
        make_splits(tmp_path / "samples.tsv", out, level="patient", ratios=RATIOS, seed=2)
    assert "changed split or fold since the previous manifest" in caplog.text


def test_unknown_method_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"split\.method"):
        assign_splits(synthetic_sheet({"A": 3}), level="patient", ratios=RATIOS, seed=0, method="x")
    with pytest.raises(ValueError, match=r"split\.method"):
        check_split_config({"level": "patient", "method": "x", "ratios": RATIOS}, ["A"])


def test_relabelling_moves_only_between_labelled_and_unlabelled() -> None:
    sheet = synthetic_sheet({"A": 50})
    relabelled = sheet.assign(**{"class": sheet["class"].replace({"IDHwt": "IDHmut-intact"})})
    a = assign_splits(sheet, level="patient", ratios=RATIOS, seed=1)
    b = assign_splits(relabelled, level="patient", ratios=RATIOS, seed=1)
    assert a["split"].tolist() == b["split"].tolist()


def test_seed_changes_the_assignment() -> None:
    sheet = synthetic_sheet({"A": 100})
    a = assign_splits(sheet, level="patient", ratios=RATIOS, seed=1)["split"]
    b = assign_splits(sheet, level="patient", ratios=RATIOS, seed=2)["split"]
    assert (a != b).sum() > 10


def test_cohort_level_holds_out_whole_cohorts() -> None:
    sheet = synthetic_sheet({"A": 120, "B": 80, "C": 30}, unlabelled=2)
    splits = assign_splits(sheet, level="cohort", ratios=RATIOS, seed=3, test_cohorts=["C"])
    labelled = splits[splits["class"] != ""]
    assert set(labelled.loc[labelled["cohort"] == "C", "split"]) == {"test"}
    inner = labelled[labelled["cohort"] != "C"]
    assert set(inner["split"]) == {"train", "val"}
    assert abs((inner["split"] == "val").mean() - 0.1 / 0.9) < 0.05
    for patient_splits in splits.groupby(["cohort", "patient"])["split"].nunique():
        assert patient_splits == 1


@pytest.mark.parametrize(
    ("test_cohorts", "pattern"),
    [
        (["Z"], r"\['Z'\] are not in the sample sheet"),
        (["A", "B"], "every cohort"),
    ],
)
def test_cohort_level_validates_test_cohorts(test_cohorts: list[str], pattern: str) -> None:
    sheet = synthetic_sheet({"A": 5, "B": 5})
    with pytest.raises(ValueError, match=pattern):
        assign_splits(sheet, level="cohort", ratios=RATIOS, seed=0, test_cohorts=test_cohorts)


def test_slice_level_marks_patients_and_splits_slices_stably() -> None:
    sheet = synthetic_sheet({"A": 10}, unlabelled=1)
    splits = assign_splits(sheet, level="slice", ratios=RATIOS, seed=0)
    assert set(splits.loc[splits["class"] != "", "split"]) == {"slice"}
    assert set(splits.loc[splits["class"] == "", "split"]) == {"unlabelled"}
    first = [slice_split(5, "A", "A-0001", s, RATIOS) for s in range(400)]
    assert first == [slice_split(5, "A", "A-0001", s, RATIOS) for s in range(400)]
    # Slices of one patient land in every split: the leakage this level reproduces.
    assert set(first) == {"train", "val", "test"}
    assert abs(first.count("train") / 400 - 0.8) < 0.06


@pytest.mark.parametrize(
    ("ratios", "pattern"),
    [
        ({"train": 0.8, "val": 0.1, "test": 0.2}, "sum to 1"),
        ({"train": 0.8, "val": 0.2}, "exactly"),
        ({"train": 1.1, "val": -0.1, "test": 0.0}, "negative"),
        ({"train": 0.0, "val": 0.5, "test": 0.5}, "above 0"),
    ],
)
def test_bad_ratios_are_rejected(ratios: dict[str, float], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        check_ratios(ratios)


def test_ratios_within_tolerance_are_accepted() -> None:
    assert check_ratios({"test": 0.1, "val": 0.1, "train": 0.8 + 5e-7}) == pytest.approx(
        RATIOS, abs=1e-6
    )


def test_split_config_is_checked_before_any_job() -> None:
    good = {"level": "cohort", "ratios": RATIOS, "test_cohorts": ["B"]}
    check_split_config(good, ["A", "B"])
    with pytest.raises(ValueError, match="not in the sample sheet"):
        check_split_config(good, ["A", "C"])
    with pytest.raises(ValueError, match="sum to 1"):
        check_split_config({**good, "ratios": {"train": 0.5, "val": 0.1, "test": 0.1}}, ["A", "B"])
    with pytest.raises(ValueError, match=r"split\.level"):
        check_split_config({**good, "level": "site"}, ["A", "B"])
    check_split_config({**good, "level": "patient", "test_cohorts": []}, ["A"])


def test_unknown_level_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"split\.level"):
        assign_splits(synthetic_sheet({"A": 3}), level="slices", ratios=RATIOS, seed=0)


def test_make_splits_writes_manifest_and_reads_back(tmp_path: Path, caplog) -> None:
    sheet = synthetic_sheet({"A": 30, "B": 3}, unlabelled=1)
    sheet.assign(t1w="x.nii.gz").to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    out = tmp_path / "results" / "splits.tsv"
    with caplog.at_level(logging.INFO):
        written = make_splits(tmp_path / "samples.tsv", out, level="patient", ratios=RATIOS, seed=9)
    assert "patients per stratum" in caplog.text
    back = read_splits(out)
    assert list(back.columns) == ["patient", "cohort", "class", "split", "fold"]
    assert (back["fold"] == "").all()
    assert all(back[c].map(type).eq(str).all() for c in back.columns)
    assert (back["class"] == "").sum() == 2
    pd.testing.assert_frame_equal(back, written)
    assert list(out.parent.iterdir()) == [out]


def test_small_strata_warn_when_a_class_misses_a_split(tmp_path: Path, caplog) -> None:
    sheet = pd.DataFrame({"patient": ["a", "b"], "cohort": "A", "class": ["IDHwt", "IDHmut-codel"]})
    sheet.to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    with caplog.at_level(logging.WARNING):
        make_splits(
            tmp_path / "samples.tsv", tmp_path / "s.tsv", level="patient", ratios=RATIOS, seed=0
        )
    assert "has no patient in test" in caplog.text


def test_slice_level_warns_loudly(tmp_path: Path, caplog) -> None:
    synthetic_sheet({"A": 4}).to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    with caplog.at_level(logging.WARNING):
        make_splits(
            tmp_path / "samples.tsv", tmp_path / "s.tsv", level="slice", ratios=RATIOS, seed=0
        )
    assert "SPLIT LEVEL IS 'slice'" in caplog.text and "leakage" in caplog.text


def test_failed_make_splits_leaves_no_manifest(tmp_path: Path) -> None:
    synthetic_sheet({"A": 4}).to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    with pytest.raises(ValueError):
        make_splits(
            tmp_path / "samples.tsv",
            tmp_path / "s.tsv",
            level="patient",
            ratios={"train": 1.0, "val": 0.5, "test": 0},
            seed=0,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.tsv"]


@pytest.mark.parametrize(
    ("rows", "column", "pattern"),
    [
        ([("a", "A", "GBM")], "class", "not one of"),
        ([("a", "A", "IDHwt"), ("a", "A", "")], None, "more than once"),
        ([("", "A", "IDHwt")], None, "must not be empty"),
    ],
)
def test_bad_sheet_names_patient_column_and_file(
    tmp_path: Path, rows, column, pattern: str
) -> None:
    path = tmp_path / "samples.tsv"
    pd.DataFrame(rows, columns=["patient", "cohort", "class"]).to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match=pattern) as caught:
        read_sheet(path)
    assert caught.value.path == str(path) and caught.value.column == column


def test_missing_column_and_bad_split_value(tmp_path: Path) -> None:
    path = tmp_path / "splits.tsv"
    pd.DataFrame({"patient": ["a"], "cohort": ["A"], "class": ["IDHwt"]}).to_csv(
        path, sep="\t", index=False
    )
    with pytest.raises(InputError, match="column 'split'"):
        read_splits(path)
    pd.DataFrame({"patient": ["a"], "cohort": ["A"], "class": ["IDHwt"], "split": ["dev"]}).to_csv(
        path, sep="\t", index=False
    )
    with pytest.raises(InputError, match="patient 'a', column 'split'"):
        read_splits(path)


def test_split_counts_table() -> None:
    splits = assign_splits(synthetic_sheet({"A": 40}), level="patient", ratios=RATIOS, seed=0)
    counts = split_counts(splits)
    assert counts.to_numpy().sum() == 40 and set(counts.columns) <= {"train", "val", "test"}


def test_quota_over_class_strata_reaches_a_class_rare_in_every_cohort() -> None:
    # Two IDHmut-codel patients per cohort: too few for every split within a cohort.
    rows = [
        (f"{cohort}-{i}", cohort, "IDHmut-codel" if i < 2 else CLASSES[i % 2 * 2])
        for cohort in "ABC"
        for i in range(10)
    ]
    sheet = pd.DataFrame(rows, columns=["patient", "cohort", "class"])
    ratios = {"train": 0.6, "val": 0.2, "test": 0.2}
    by_cohort = assign_splits(sheet, level="patient", ratios=ratios, seed=1, method="quota")
    codel = by_cohort[by_cohort["class"] == "IDHmut-codel"]
    assert codel.groupby("cohort")["split"].nunique().max() <= 2  # no cohort reaches all three
    pooled = assign_splits(
        sheet, level="patient", ratios=ratios, seed=1, method="quota", strata="class"
    )
    for name in CLASSES:
        counts = pooled.loc[pooled["class"] == name, "split"].value_counts()
        n = int(counts.sum())
        assert sorted(counts.reindex(["train", "val", "test"], fill_value=0)) == sorted(
            quota_sizes(n, ratios, [0, 0, 0])
        )
        assert set(counts.index) == {"train", "val", "test"}, name
    with pytest.raises(ValueError, match=r"split\.strata"):
        assign_splits(sheet, level="patient", ratios=ratios, seed=1, method="quota", strata="x")
