"""Calibration (ECE, temperature scaling) and ensemble uncertainty against hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax

from glioma.model.calibration import (
    apply_temperature,
    class_ece,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability_bins,
)
from glioma.model.calibration_plots import _flag_text, plot_reliability, plot_risk_coverage
from glioma.model.uncertainty import (
    area_under_risk_coverage,
    ensemble_uncertainty,
    flagged_accuracy,
    review_flags,
    risk_coverage,
)


def test_ece_by_hand() -> None:
    # Two bins: [0, 0.5) holds 0.1, 0.2, 0.4 (mean 0.233, 1 of 3 positive: gap 0.1);
    # [0.5, 1] holds 0.6, 0.9, 1.0 (mean 0.833, 3 of 3 positive: gap 0.1667).
    positive = np.array([0, 1, 0, 1, 1, 1])
    score = np.array([0.1, 0.2, 0.4, 0.6, 0.9, 1.0])
    # ECE = 3/6 * 0.1 + 3/6 * 1/6 = 0.05 + 0.08333 = 2/15.
    assert expected_calibration_error(positive, score, n_bins=2) == pytest.approx(2 / 15)
    bins = reliability_bins(positive, score, n_bins=2)
    assert bins["count"].tolist() == [3, 3]
    assert bins["lower"].tolist() == [0.0, 0.5] and bins["upper"].tolist() == [0.5, 1.0]
    np.testing.assert_allclose(bins["mean_confidence"], [0.7 / 3, 2.5 / 3])
    np.testing.assert_allclose(bins["observed"], [1 / 3, 1.0])
    assert math.isnan(expected_calibration_error(np.zeros(0), np.zeros(0)))


def test_reliability_bins_edges_and_empty_bins() -> None:
    # 0.5 opens the upper bin, 1.0 belongs to the last bin; the middle bins stay empty.
    bins = reliability_bins(np.array([1, 0, 1]), np.array([0.5, 1.0, 0.0]), n_bins=4)
    assert bins["count"].tolist() == [1, 0, 1, 1]
    assert np.isnan(bins.loc[1, "mean_confidence"]) and np.isnan(bins.loc[1, "observed"])
    assert bins.loc[3, "mean_confidence"] == 1.0 and bins.loc[3, "observed"] == 0.0
    with pytest.raises(ValueError, match="rows"):
        reliability_bins(np.array([1, 0]), np.array([0.5]))


def test_ece_of_a_calibrated_construction_is_near_zero() -> None:
    rng = np.random.default_rng(0)
    score = rng.uniform(0, 1, 200_000)
    positive = rng.uniform(0, 1, score.size) < score
    assert expected_calibration_error(positive, score, n_bins=10) < 0.01
    assert expected_calibration_error(positive, np.clip(score + 0.2, 0, 1), n_bins=10) > 0.1


def test_class_ece_and_top_label_by_hand() -> None:
    labels = np.array([0, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1]])
    ece = class_ece(labels, probs, n_bins=2)
    # Top label: 0.8 (correct) and 0.6 (wrong) share the upper bin: |1/2 - 0.7| = 0.2.
    assert ece["top_label"] == pytest.approx(0.2)
    # IDHwt: both in the upper bin, mean 0.7, observed 1/2.
    assert ece["IDHwt"] == pytest.approx(0.2)
    # IDHmut-codel: both in the lower bin, mean 0.2, observed 1/2.
    assert ece["IDHmut-codel"] == pytest.approx(0.3)
    # IDHmut-intact: absent, both scores 0.1 in the lower bin: |0 - 0.1| = 0.1.
    assert ece["IDHmut-intact"] == pytest.approx(0.1)
    empty = class_ece(np.zeros(0, int), np.zeros((0, 3)))
    assert set(empty) == {"IDHwt", "IDHmut-codel", "IDHmut-intact", "top_label"}
    assert all(math.isnan(v) for v in empty.values())


def test_apply_temperature() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (50, 3))
    probs = softmax(logits, axis=1)
    np.testing.assert_allclose(apply_temperature(probs, 1.0), probs, atol=1e-9)
    np.testing.assert_allclose(apply_temperature(probs, 3.0), softmax(logits / 3, axis=1))
    np.testing.assert_allclose(apply_temperature(probs, 1e6), 1 / 3, atol=1e-4)
    # T = 1 renormalises rows that do not sum to 1.
    np.testing.assert_allclose(
        apply_temperature(np.array([[2.0, 1.0, 1.0]]), 1.0), [[0.5, 0.25, 0.25]]
    )
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(probs, 0.0)


def test_nll_by_hand() -> None:
    probs = np.array([[0.5, 0.25, 0.25], [0.1, 0.9, 0.0]])
    assert nll(probs, np.array([0, 1])) == pytest.approx(-(math.log(0.5) + math.log(0.9)) / 2)
    # A zero probability is clipped at 1e-12, not infinite.
    assert nll(probs, np.array([0, 2])) == pytest.approx(-(math.log(0.5) + math.log(1e-12)) / 2)
    assert math.isnan(nll(np.zeros((0, 3)), np.zeros(0, int)))


@pytest.mark.parametrize("true_temperature", [2.0, 0.5])
def test_fit_temperature_recovers_a_known_temperature(true_temperature: float) -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (4000, 3))
    truth = softmax(logits / true_temperature, axis=1)
    labels = np.array([rng.choice(3, p=row) for row in truth])
    fitted = fit_temperature(softmax(logits, axis=1), labels)
    assert fitted == pytest.approx(true_temperature, rel=0.1)
    scaled = apply_temperature(softmax(logits, axis=1), fitted)
    assert nll(scaled, labels) <= nll(softmax(logits, axis=1), labels)


def test_fit_temperature_without_two_classes_is_one(caplog: pytest.LogCaptureFixture) -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]])
    with caplog.at_level("WARNING", logger="glioma.model.calibration"):
        assert fit_temperature(probs, np.array([0, 0])) == 1.0
        assert fit_temperature(probs[:1], np.array([1])) == 1.0
        assert fit_temperature(np.zeros((0, 3)), np.zeros(0, int)) == 1.0
    assert len(caplog.records) == 3 and "not fitted" in caplog.records[0].getMessage()


def test_perfectly_separated_fitting_patients_hit_the_bound_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Seven validation patients all classified right (the demo's case): no optimum exists."""
    labels = np.array([0, 1, 2, 0, 1, 2, 0])
    probs = np.full((7, 3), 0.2)
    probs[np.arange(7), labels] = 0.6
    with caplog.at_level("WARNING", logger="glioma.model.calibration"):
        fitted = fit_temperature(probs, labels)
    assert fitted == pytest.approx(0.05, rel=0.01)
    assert "at its search bound" in caplog.text and "7 fitting patients" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="glioma.model.calibration"):
        fit_temperature(probs[[0, 1, 2, 3]], np.array([1, 1, 2, 0]))  # one patient wrong
    assert "search bound" not in caplog.text


def test_ensemble_uncertainty_by_hand() -> None:
    members = np.array(
        [
            [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]],
            [[0.2, 0.6, 0.2], [0.1, 0.7, 0.2]],
        ]
    )
    out = ensemble_uncertainty(members)

    def h(*p: float) -> float:
        return -sum(x * math.log(x) for x in p)

    # Patient 0: mean (0.4, 0.45, 0.15), predicted class 1, members give it 0.3 and 0.6.
    # Patient 1: mean (0.15, 0.6, 0.25), predicted class 1, members give it 0.5 and 0.7.
    np.testing.assert_allclose(out["mean"], [[0.4, 0.45, 0.15], [0.15, 0.6, 0.25]])
    np.testing.assert_allclose(out["sd"], [0.15, 0.1])
    entropy = [h(0.4, 0.45, 0.15), h(0.15, 0.6, 0.25)]  # 1.01041, 0.93764
    expected = [
        (h(0.6, 0.3, 0.1) + h(0.2, 0.6, 0.2)) / 2,  # 0.92411
        (h(0.2, 0.5, 0.3) + h(0.1, 0.7, 0.2)) / 2,  # 0.91574
    ]
    np.testing.assert_allclose(out["entropy"], entropy)
    np.testing.assert_allclose(out["expected_entropy"], expected)
    np.testing.assert_allclose(out["mutual_information"], [0.0863046, 0.0219012], atol=1e-6)
    np.testing.assert_allclose(out["normalised_entropy"], np.array(entropy) / math.log(3))


def test_identical_and_disagreeing_members() -> None:
    members = np.array(
        [
            [[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]],
            [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]],
        ]
    )
    out = ensemble_uncertainty(members)
    # Patient 0: both members say (0.5, 0.5, 0): entropy log 2, no disagreement.
    assert out["entropy"][0] == pytest.approx(math.log(2))
    assert out["mutual_information"][0] == pytest.approx(0.0)
    assert out["sd"][0] == pytest.approx(0.0)
    # Patient 1: one-hot members that disagree: mean (0.5, 0.5, 0), MI = log 2, SD 0.5.
    assert out["entropy"][1] == pytest.approx(math.log(2))
    assert out["expected_entropy"][1] == pytest.approx(0.0)
    assert out["mutual_information"][1] == pytest.approx(math.log(2))
    assert out["sd"][1] == pytest.approx(0.5)
    assert out["normalised_entropy"][0] == pytest.approx(math.log(2) / math.log(3))


def test_one_member_has_no_spread() -> None:
    member = np.array([[[0.7, 0.2, 0.1]]])
    out = ensemble_uncertainty(member)
    hand = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    assert out["entropy"][0] == pytest.approx(hand)
    assert out["sd"][0] == 0 and out["mutual_information"][0] == pytest.approx(0.0)
    assert out["expected_entropy"][0] == pytest.approx(hand)
    with pytest.raises(ValueError, match="M, N, K"):
        ensemble_uncertainty(np.zeros((3, 3)))
    empty = ensemble_uncertainty(np.zeros((2, 0, 3)))
    assert empty["mean"].shape == (0, 3) and empty["sd"].shape == (0,)


def test_review_flags_risk_coverage_and_flagged_accuracy() -> None:
    flags = review_flags(np.array([0.1, 0.7, np.nan]), 0.6)
    assert flags.tolist() == [False, True, True]
    correct = np.array([1, 0, 1, 0], bool)
    uncertainty = np.array([0.1, 0.5, 0.3, 0.9])
    curve = risk_coverage(correct, uncertainty)
    np.testing.assert_allclose(curve["accuracy"], [1, 1, 2 / 3, 0.5])
    np.testing.assert_allclose(curve["coverage"], [0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(curve["threshold"], [0.1, 0.3, 0.5, 0.9])
    # Ties keep the input order; NaN ranks last.
    tied = risk_coverage(np.array([0, 1, 1], bool), np.array([0.2, 0.2, np.nan]))
    np.testing.assert_allclose(tied["accuracy"], [0, 0.5, 2 / 3])
    assert math.isnan(area_under_risk_coverage(np.zeros(0, bool), np.zeros(0)))
    risks = [0, 0, 1 / 3, 0.5]
    assert area_under_risk_coverage(correct, uncertainty) == pytest.approx(sum(risks) / 4)
    summary = flagged_accuracy(correct, review_flags(uncertainty, 0.4))
    assert summary == {
        "n_flagged": 2,
        "n_unflagged": 2,
        "accuracy_flagged": 0.0,
        "accuracy_unflagged": 1.0,
    }
    assert flagged_accuracy(correct, np.zeros(4, bool))["accuracy_flagged"] is None
    # An accuracy of 0 is a value, not "n/a".
    assert "accuracy 0.000" in _flag_text(summary, 0.4)


def test_plots_write_pngs_even_without_patients(tmp_path: Path) -> None:
    labels = np.array([0, 1, 2, 0])
    probs = softmax(np.random.default_rng(3).normal(0, 1, (4, 3)), axis=1)
    for name, n in (("some", 4), ("none", 0)):
        plot_reliability(
            labels[:n], probs[:n], probs[:n], tmp_path / f"r_{name}.png",
            title="t", n_bins=5, temperature=1.5,
        )  # fmt: skip
        plot_risk_coverage(
            labels[:n] == 0, probs[:n, 0], tmp_path / f"u_{name}.png",
            title="t", threshold=0.5, label="entropy",
        )  # fmt: skip
        assert (tmp_path / f"r_{name}.png").stat().st_size > 1000
        assert (tmp_path / f"u_{name}.png").stat().st_size > 1000


def test_reliability_plot_with_a_class_absent(tmp_path: Path) -> None:
    probs = softmax(np.random.default_rng(4).normal(0, 1, (6, 3)), axis=1)
    out = tmp_path / "absent.png"
    plot_reliability(np.zeros(6, int), probs, probs, out, title="t", temperature=1.0)
    plot_risk_coverage(np.ones(6, bool), probs[:, 0], tmp_path / "u.png", title="t",
                       threshold=None, label="sd")  # fmt: skip
    assert out.stat().st_size > 1000 and (tmp_path / "u.png").stat().st_size > 1000
    assert not list(tmp_path.glob(".*.tmp*"))
