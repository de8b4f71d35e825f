"""The report's model-bundle and saliency sections.

The bundle section says which frozen model made the predictions (its identity, models, training
cohort) and whether this run wrote it or only predicted with it. The saliency section shows the
maps of a few patients (held-out and flagged ones first; every patient has a page under
``results/patients/``) with the randomisation check of Adebayo et al. (2018).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from glioma.errors import InputError
from glioma.report import figures

#: Saliency pictures shown in the report (the rest are on the patients' pages).
SHOWN = 12
#: Splits shown first: patients no model of the run trained on.
HELD_OUT = ("test", "external", "cv", "unlabelled")


def read_bundle(bundle_dir: str | Path) -> dict[str, Any]:
    """A bundle's ``bundle.json`` with its identity (``id``), without re-hashing the weights."""
    from glioma.model.bundle import BUNDLE_JSON, MANIFEST, sha256_file

    root = Path(bundle_dir)
    path = root / BUNDLE_JSON
    if not path.is_file():
        raise InputError("model bundle has no bundle.json", path=root)
    document = json.loads(path.read_text())
    document["id"] = sha256_file(root / MANIFEST)
    return document


def cohort_rows(bundle: Mapping[str, Any]) -> list[list[str]]:
    """Rows (split, cohort, class counts) of the bundle's training-cohort summary."""
    rows = []
    for split, cohorts in sorted(bundle.get("training_cohort", {}).items()):
        for cohort, counts in sorted(cohorts.items()):
            text = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
            rows.append([split, cohort, text])
    return rows


def bundle_context(bundle_dir: str | Path, *, predicted_only: bool) -> dict[str, Any]:
    """What the template's bundle section shows."""
    bundle = read_bundle(bundle_dir)
    return {
        "id": bundle["id"],
        "short_id": bundle["id"][:12],
        "created": bundle.get("created", ""),
        "models": bundle.get("models", []),
        "model_name": bundle.get("settings", {}).get("model.name", ""),
        "temperature": bundle.get("temperature"),
        "cohort": cohort_rows(bundle),
        "path": str(bundle_dir),
        "predicted_only": predicted_only,
    }


def _order(predictions: pd.DataFrame) -> pd.DataFrame:
    """Held-out patients first, flagged ones first within them, then the rest."""
    rank = {split: i for i, split in enumerate(HELD_OUT)}
    review = predictions.get("review", pd.Series("", index=predictions.index))  # older tables
    flagged = review.astype(str).str.lower().isin(["true", "review", "1"])
    keyed = predictions.assign(
        _rank=predictions["split"].map(rank).fillna(len(rank)), _flag=~flagged
    )
    return keyed.sort_values(["_rank", "_flag", "cohort", "patient"])


def saliency_context(
    saliency_dirs: Sequence[str | Path], predictions: pd.DataFrame, shown: int = SHOWN
) -> dict[str, Any]:
    """Thumbnails of up to ``shown`` patients' saliency pictures, and the sanity check."""
    indices = {Path(d).name: _read_index(Path(d)) for d in saliency_dirs}
    items, sanity, methods = [], [], set()
    for row in _order(predictions).itertuples(index=False):
        entry = indices.get(row.cohort, {}).get("patients", {}).get(row.patient)
        if entry is None:
            continue
        methods.add(entry["method"])
        if len(items) < shown:
            path = Path(saliency_dirs[list(indices).index(row.cohort)]) / f"{row.patient}.png"
            items.append(
                {
                    "uri": figures.image_uri(path),
                    "caption": f"{row.cohort} / {row.patient} ({row.split}): "
                    f"{row.predicted_class}, slices {entry['shown']}",
                    "page": f"patients/{row.cohort}/{row.patient}.html",
                }
            )
    for cohort, index in indices.items():
        sanity.extend(
            [cohort, s["patient"], _fmt(s["rank_correlation"])] for s in index.get("sanity", [])
        )
    return {"pictures": items, "sanity": sanity, "methods": sorted(methods)}


def _read_index(folder: Path) -> dict[str, Any]:
    """A cohort's saliency index.json."""
    path = folder / "index.json"
    if not path.is_file():
        raise InputError("saliency index is missing", path=path)
    return json.loads(path.read_text())


def _fmt(value: float | None) -> str:
    """A correlation with two decimals, or n/a."""
    return "n/a" if value is None else f"{value:.2f}"
