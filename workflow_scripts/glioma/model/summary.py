"""Print the headline metrics of a run (``python -m glioma.model.summary METRICS_JSON``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from glioma.constants import CLASSES, SPLITS


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def summary_lines(metrics: dict) -> list[str]:
    """One line per split and level: n, accuracy, macro AUC and per-class AUC with 95% CI.

    Then, when the metrics hold a ``baseline`` section, the lines of :func:`baseline_lines`.
    """
    lines = []
    if metrics.get("leaky_split"):
        lines.append("WARNING: slice-level split - patients leak across splits, figures inflated")
    for level in ("patient", "slice"):
        for split in SPLITS:
            entry = metrics.get(level, {}).get(split)
            if not entry:
                continue
            aucs = ", ".join(
                f"{name} {_fmt(entry['classes'][name]['auc'])} "
                f"[{_fmt(entry['classes'][name]['auc_ci_low'])}-"
                f"{_fmt(entry['classes'][name]['auc_ci_high'])}]"
                for name in CLASSES
            )
            note = " (training data)" if split == "train" else ""
            lines.append(
                f"{level:7s} {split:5s}{note}: n={entry['n']}, accuracy {_fmt(entry['accuracy'])}, "
                f"macro AUC {_fmt(entry['macro_auc'])}; {aucs}"
            )
    return lines + baseline_lines(metrics)


def baseline_lines(metrics: dict) -> list[str]:
    """One line per split: the network's patient-level AUCs beside the baseline's (none without)."""
    baseline = (metrics.get("baseline") or {}).get("patient") or {}
    lines = []
    for split in SPLITS:
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
