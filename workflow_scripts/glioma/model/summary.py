"""Print the headline metrics of a run (``python -m glioma.model.summary METRICS_JSON``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from glioma.constants import CLASSES, CV_SPLIT, EVAL_SPLITS, SPLITS


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _splits(metrics: dict) -> list[str]:
    """The splits metrics.json scores (train, val, test for files that do not say)."""
    named = metrics.get("splits")
    return list(SPLITS) if not isinstance(named, list) else [s for s in EVAL_SPLITS if s in named]


def summary_lines(metrics: dict) -> list[str]:
    """One line per split and level: n, accuracy, macro AUC and per-class AUC with 95% CI.

    Then, when the metrics hold a ``baseline`` section, the lines of :func:`baseline_lines`.
    """
    lines = []
    if metrics.get("leaky_split"):
        lines.append("WARNING: slice-level split - patients leak across splits, figures inflated")
    for level in ("patient", "slice"):
        for split in _splits(metrics):
            entry = metrics.get(level, {}).get(split)
            if not entry:
                continue
            aucs = ", ".join(
                f"{name} {_fmt(entry['classes'][name]['auc'])} "
                f"[{_fmt(entry['classes'][name]['auc_ci_low'])}-"
                f"{_fmt(entry['classes'][name]['auc_ci_high'])}]"
                for name in CLASSES
            )
            note = {"train": " (training data)", CV_SPLIT: " (out-of-fold)"}.get(split, "")
            lines.append(
                f"{level:7s} {split:5s}{note}: n={entry['n']}, accuracy {_fmt(entry['accuracy'])}, "
                f"macro AUC {_fmt(entry['macro_auc'])}; {aucs}"
            )
    return lines + baseline_lines(metrics) + trust_lines(metrics)


def trust_lines(metrics: dict) -> list[str]:
    """Per-fold spread, calibration and review lines (those metrics.json holds)."""
    lines = []
    cv = metrics.get("cv") or {}
    if cv.get("folds"):
        macro = cv["summary"]["macro_auc"]
        values = [f["macro_auc"] for f in cv["folds"] if f["macro_auc"] is not None]
        span = f" (range {_fmt(min(values))}-{_fmt(max(values))})" if values else ""
        lines.append(
            f"{cv['scheme']}: per-fold held-out macro AUC mean {_fmt(macro['mean'])} ± SD "
            f"{_fmt(macro['sd'])} over {cv['n_folds']} folds{span}"
        )
        if cv["scheme"] == "leave-one-cohort-out":
            for fold in cv["folds"]:
                lines.append(
                    f"  held-out cohort {fold['fold']}: n={fold['n']}, macro AUC "
                    f"{_fmt(fold['macro_auc'])}, accuracy {_fmt(fold['accuracy'])}"
                )
    scored = _splits(metrics)
    shown = next((s for s in ("test", CV_SPLIT, "val") if s in scored), None)
    calibration = metrics.get("calibration") or {}
    entry = (calibration.get("splits") or {}).get(shown)
    if entry:
        lines.append(
            f"calibration ({shown}, T={_fmt(calibration['temperature'])} fitted on "
            f"{calibration['fitted_on']}): top-label ECE {_fmt(entry['raw']['top_label'])} raw, "
            f"{_fmt(entry['scaled']['top_label'])} scaled"
        )
    review = metrics.get("uncertainty") or {}
    for split in scored:
        entry = (review.get("splits") or {}).get(split)
        if split == "train" or not entry:
            continue
        lines.append(
            f"review ({split}, normalised entropy > {review['threshold']}): "
            f"{entry['n_flagged']} of {entry['n']} flagged, accuracy flagged "
            f"{_fmt(entry['accuracy_flagged'])} vs not flagged {_fmt(entry['accuracy_unflagged'])}"
        )
    return lines


def baseline_lines(metrics: dict) -> list[str]:
    """One line per split: the network's patient-level AUCs beside the baseline's (none without)."""
    baseline = (metrics.get("baseline") or {}).get("patient") or {}
    lines = []
    for split in _splits(metrics):
        network, other = metrics.get("patient", {}).get(split), baseline.get(split)
        if not network or not other:
            continue
        aucs = ", ".join(
            f"{name} {_fmt(network['classes'][name]['auc'])} vs "
            f"{_fmt(other['classes'][name]['auc'])}"
            for name in CLASSES
        )
        lines.append(
            f"patient {split:5s}: network macro AUC {_fmt(network['macro_auc'])} vs baseline "
            f"{_fmt(other['macro_auc'])}; {aucs}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print the summary of the metrics.json named on the command line."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else "results/metrics/metrics.json")
    print("\n".join(summary_lines(json.loads(path.read_text()))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
