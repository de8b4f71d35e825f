"""Print the headline metrics of a run (``python -m glioma.model.summary METRICS_JSON``).

With an ``ablation.tsv`` beside metrics.json (rule ablate_sequences) its lines close the summary.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

from glioma.constants import CLASSES, CV_SPLIT, EVAL_SPLITS, SPLITS


def _fmt(value: float | None) -> str:
    """Three decimals; ``n/a`` for a missing, non-numeric or non-finite value."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "n/a"
    return f"{value:.3f}"


def _splits(metrics: dict) -> list[str]:
    """The splits metrics.json scores, in report order (train, val, test in files without)."""
    named = metrics.get("splits")
    return list(SPLITS) if not isinstance(named, list) else [s for s in EVAL_SPLITS if s in named]


def summary_lines(metrics: dict) -> list[str]:
    """One line per split and level: n, accuracy, macro AUC and per-class AUC with 95% CI.

    Then the lines of :func:`trust_lines` (folds, calibration, review: those metrics.json
    holds) and last, when the metrics hold a ``baseline`` section, those of
    :func:`baseline_lines`.
    """
    lines = []
    if metrics.get("leaky_split"):
        lines.append("WARNING: slice-level split - patients leak across splits, figures inflated")
    for level in ("patient", "slice"):
        for split in _splits(metrics):
            entry = (metrics.get(level) or {}).get(split)
            if not entry:
                continue
            classes = {name: (entry.get("classes") or {}).get(name) or {} for name in CLASSES}
            aucs = ", ".join(
                f"{name} {_fmt(values.get('auc'))} "
                f"[{_fmt(values.get('auc_ci_low'))}-{_fmt(values.get('auc_ci_high'))}]"
                for name, values in classes.items()
            )
            note = {"train": " (training data)", CV_SPLIT: " (out-of-fold)"}.get(split, "")
            lines.append(
                f"{level:7s} {split:5s}{note}: n={entry.get('n')}, accuracy "
                f"{_fmt(entry.get('accuracy'))}, macro AUC {_fmt(entry.get('macro_auc'))}; {aucs}"
            )
    return lines + trust_lines(metrics) + baseline_lines(metrics)


def fold_lines(cv: dict) -> list[str]:
    """The spread of the fold models' held-out macro AUC; under leave-one-cohort-out also one
    line per held-out cohort. None without a ``cv`` section."""
    folds = cv.get("folds") or []
    if not folds:
        return []
    macro = (cv.get("summary") or {}).get("macro_auc") or {}
    values = [f["macro_auc"] for f in folds if _fmt(f.get("macro_auc")) != "n/a"]
    span = f" (range {_fmt(min(values))}-{_fmt(max(values))})" if values else ""
    total = cv.get("n_folds", len(folds))
    defined = macro.get("n_folds", total)
    over = f"{defined} folds" if defined == total else f"{defined} of {total} folds"
    lines = [
        f"{cv.get('scheme', 'cross-validation')}: per-fold held-out macro AUC: mean "
        f"{_fmt(macro.get('mean'))} ± SD {_fmt(macro.get('sd'))} over {over}{span}"
    ]
    if cv.get("scheme") == "leave-one-cohort-out":
        lines += [
            f"  held-out cohort {fold.get('fold')}: n={fold.get('n')}, macro AUC "
            f"{_fmt(fold.get('macro_auc'))}, accuracy {_fmt(fold.get('accuracy'))}"
            for fold in folds
        ]
    return lines


def trust_lines(metrics: dict) -> list[str]:
    """Per-fold spread, calibration and review lines (those metrics.json holds).

    Calibration is shown on test, else the out-of-fold (cv) split, else val; review on every
    scored split but train.
    """
    lines = fold_lines(metrics.get("cv") or {})
    scored = _splits(metrics)
    calibration = metrics.get("calibration") or {}
    shown = next((s for s in ("test", CV_SPLIT, "val") if s in scored), None)
    entry = (calibration.get("splits") or {}).get(shown)
    if entry:
        raw, scaled = entry.get("raw") or {}, entry.get("scaled") or {}
        sample = ", in-sample" if entry.get("in_sample") else ""
        lines.append(
            f"calibration ({shown}{sample}, T={_fmt(calibration.get('temperature'))}, fitted on "
            f"{calibration.get('fitted_on')}): top-label ECE {_fmt(raw.get('top_label'))} raw, "
            f"{_fmt(scaled.get('top_label'))} scaled; NLL {_fmt(raw.get('nll'))} raw, "
            f"{_fmt(scaled.get('nll'))} scaled"
        )
    review = metrics.get("uncertainty") or {}
    for split in scored:
        entry = (review.get("splits") or {}).get(split)
        if split == "train" or not entry:
            continue
        lines.append(
            f"review ({split}, normalised entropy > {review.get('threshold')}): "
            f"{entry.get('n_flagged')} of {entry.get('n')} flagged, accuracy flagged "
            f"{_fmt(entry.get('accuracy_flagged'))} vs not flagged "
            f"{_fmt(entry.get('accuracy_unflagged'))}, AURC {_fmt(entry.get('aurc'))}"
        )
    return lines


def baseline_lines(metrics: dict) -> list[str]:
    """One line per split: the network's patient-level AUCs beside the baseline's (none without)."""
    baseline = (metrics.get("baseline") or {}).get("patient") or {}
    lines = []
    for split in _splits(metrics):
        network, other = (metrics.get("patient") or {}).get(split), baseline.get(split)
        if not network or not other:
            continue
        aucs = ", ".join(f"{name} {_auc(network, name)} vs {_auc(other, name)}" for name in CLASSES)
        lines.append(
            f"patient {split:5s}: network macro AUC {_fmt(network.get('macro_auc'))} vs baseline "
            f"{_fmt(other.get('macro_auc'))}; {aucs}"
        )
    return lines


def availability_lines(metrics: dict) -> list[str]:
    """One line per scored split but train whose patients differ in the sequences they have:
    n, accuracy and macro AUC per pattern. None when everyone has every sequence."""
    section = metrics.get("availability") or {}
    lines = []
    for split in _splits(metrics):
        rows = section.get(split) or []
        if split == "train" or len(rows) < 2:
            continue
        parts = "; ".join(
            f"{'all four' if row.get('missing') == 'none' else 'no ' + str(row.get('missing'))}: "
            f"n={row.get('n_patients')}, accuracy {_fmt(row.get('accuracy'))}, macro AUC "
            f"{_fmt(row.get('macro_auc'))}"
            for row in rows
        )
        lines.append(f"by sequences present ({split}): {parts}")
    return lines


def ablation_lines(path: Path) -> list[str]:
    """One line per sequence of an ablation.tsv: the change in macro AUC without it."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))

    def number(value: str | None) -> float | None:
        try:
            return float(value) if value not in (None, "") else None
        except ValueError:
            return None

    return [
        f"without {row['sequence']:5s} (n={row.get('n_patients')}): macro AUC "
        f"{_fmt(number(row.get('macro_auc_all')))} -> {_fmt(number(row.get('macro_auc_without')))}"
        f", change {_fmt(number(row.get('delta_auc')))} [{_fmt(number(row.get('ci_low')))} to "
        f"{_fmt(number(row.get('ci_high')))}]"
        for row in rows
    ]


def _auc(entry: dict, name: str) -> str:
    """One class's AUC of a metrics entry."""
    return _fmt(((entry.get("classes") or {}).get(name) or {}).get("auc"))


def main(argv: list[str] | None = None) -> int:
    """Print the summary of the metrics.json named on the command line."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else "results/metrics/metrics.json")
    metrics = json.loads(path.read_text())
    lines = summary_lines(metrics) + availability_lines(metrics)
    print("\n".join(lines + ablation_lines(path.parent / "ablation.tsv")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
