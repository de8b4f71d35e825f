"""The run's one self-contained HTML page, ``results/report.html``.

Every image is embedded as a base64 data URI and the CSS is inline. Its one script, inline too
(``templates/report.js.j2``: a filter box and click-to-sort headers for the per-patient tables), is
allowed by its SHA-256 hash, and the Content-Security-Policy allows nothing else but inline
styles and ``data:`` images, so a browser opening it makes no request at all: the page works
offline and leaks nothing about the patients. Without the script (blocked or switched off)
the filter boxes stay hidden and the tables are not sortable; nothing else changes.

The page stays small at any cohort size: per patient it holds one row of the predictions table
and a QC thumbnail of a few KB (:data:`PATIENT_BUDGET`), each linking to the patient's own page
``results/patients/{cohort}/{patient}.html`` (rule render_patient_pages), which carries the full
QC mosaic, the saliency map and the details; figures per split and the saliency pictures are
fixed in number. When the split leaks patients (``split.level: slice``), a banner at the top
says so.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import io
import platform
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import markupsafe
import pandas as pd
import yaml
from PIL import Image

import glioma
from glioma.constants import CV_SPLIT, EVAL_SPLITS
from glioma.errors import InputError
from glioma.io import atomic_path
from glioma.report import explained, figures, table1, tables, trust

TEMPLATES = Path(__file__).parent / "templates"
#: The page's one script (filter boxes, sortable tables), inlined and allowed by its hash; read
#: as it is, not rendered (``.j2`` so that it is packaged with the templates).
SCRIPT = TEMPLATES / "report.js.j2"
#: Bytes the page may grow by per patient (a predictions row and a QC thumbnail of at most
#: :data:`figures.THUMB_MAX_BYTES`, base64-encoded); tests/test_report.py measures it.
PATIENT_BUDGET = 12_000
#: Packages whose versions the page lists (those absent from the report's environment say so).
VERSION_PACKAGES = (
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "SimpleITK",
    "antspyx",
    "nibabel",
    "deepbet",
    "hd-bet",
    "pyarrow",
    "matplotlib",
    "jinja2",
    "snakemake",
)


@dataclass(frozen=True)
class ReportInputs:
    """Paths of every stage output the page shows (contracts in docs/architecture.md).

    ``history`` is one ``history.csv`` per trained model: ``results/model/history.csv``, or
    ``results/model/folds/{fold}/history.csv`` of each fold (a single path is accepted too);
    ``model_config`` is the one model's saved config, or the first fold's. ``roc``,
    ``confusion``, ``calibration`` and ``uncertainty`` hold ``<kind>_<split>.png`` of the scored
    splits. ``folds_table`` (``table_folds.tsv``) and ``folds_figure`` (``folds.png``, under
    cross-validation only) may be None, as may the trust figures be empty, for older runs;
    ``ablation`` (``results/metrics/ablation.tsv``, the sequence ablation) is None for runs from
    before it, and the page then says it is not available.
    """

    sheet: Path
    exclusions: Path
    table1: Path
    splits: Path
    history: Sequence[Path] | Path
    model_config: Path
    metrics: Path
    predictions: Path
    roc: Sequence[Path]
    confusion: Sequence[Path]
    qc: Sequence[Path]
    config: Mapping[str, Any] = field(default_factory=dict)
    calibration: Sequence[Path] = ()
    uncertainty: Sequence[Path] = ()
    folds_table: Path | None = None
    folds_figure: Path | None = None
    bundle: Path | None = None
    saliency: Sequence[Path] = ()
    predicted_only: bool = False
    ablation: Path | None = None

    def histories(self) -> dict[str, Path]:
        """Label -> history.csv: ``model`` for one, ``fold <id>`` (its folder) for several."""
        paths = [self.history] if isinstance(self.history, str | Path) else list(self.history)
        if len(paths) == 1:
            return {"model": Path(paths[0])}
        names = [Path(p).parent.name for p in paths]
        return {
            name if name.startswith("fold-") else f"fold {name}": Path(p)
            for name, p in zip(names, paths, strict=True)
        }


def package_versions(names: Sequence[str] = VERSION_PACKAGES) -> list[tuple[str, str]]:
    """Return (name, version) of Python, the workflow library and each package in ``names``."""
    rows = [("python", platform.python_version()), ("glioma", glioma.__version__)]
    for name in names:
        try:
            rows.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            rows.append((name, "not installed in the report's environment"))
    return rows


def split_figures(
    paths: Sequence[Path], prefix: str, metrics: dict[str, Any] | None = None
) -> list[dict[str, str]]:
    """Embed ``<prefix>_<split>.png`` figures in split order (train, val, cv, test).

    Each has its split, label, data URI and caption (what it shows and on which patients, from
    ``metrics``).

    Raises:
        InputError: a file name names no split, or the file is not an image.
    """
    found = {}
    for path in map(Path, paths):
        split = path.stem.removeprefix(f"{prefix}_")
        if split not in EVAL_SPLITS:
            raise InputError(f"name should be {prefix}_<train|val|cv|test>.png", path=path)
        found[split] = path
    return [
        {
            "split": s,
            "label": tables.split_label(s),
            "uri": figures.image_uri(found[s]),
            "caption": trust.caption(prefix, s, metrics or {}),
        }
        for s in EVAL_SPLITS
        if s in found
    ]


def patient_page(cohort: str, patient: str) -> str:
    """A patient's page relative to ``results/report.html``: ``patients/{cohort}/{patient}.html``.

    The IDs are safe (checked when the sample sheet is read); they are quoted all the same.
    """
    return f"patients/{quote(cohort, safe='')}/{quote(patient, safe='')}.html"


def qc_items(paths: Sequence[Path], workers: int = 1) -> list[dict[str, str]]:
    """A small JPEG thumbnail of each ``results/qc/{cohort}/{patient}.png``, sorted, with the
    patient's page it links to (the full mosaic is there and stays a file).

    Args:
        paths: the QC pictures.
        workers: threads shrinking them (decoding and resizing release the GIL).
    """
    paths = sorted(map(Path, paths), key=lambda p: (p.parent.name, p.stem))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        thumbs = list(pool.map(figures.thumbnail_jpeg, paths))
    items = []
    for path, thumb in zip(paths, thumbs, strict=True):
        cohort, patient = path.parent.name, path.stem
        with Image.open(io.BytesIO(thumb)) as image:
            width, height = image.size
        items.append(
            {
                "cohort": cohort,
                "patient": patient,
                "page": patient_page(cohort, patient),
                "thumb": figures.data_uri(thumb, "image/jpeg"),
                "width": width,
                "height": height,
            }
        )
    return items


def script() -> dict[str, Any]:
    """The page's script (``script``) and its CSP source (``script_hash``, ``'sha256-...'``).

    Raises:
        InputError: the script could end its element early.
    """
    text = SCRIPT.read_text(encoding="utf-8")
    if "</script" in text.lower():
        raise InputError("must not contain '</script'", path=SCRIPT)
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    return {
        "script": markupsafe.Markup(text),
        "script_hash": markupsafe.Markup(f"'sha256-{digest}'"),
    }


def summary(metrics: dict[str, Any], roc: list[dict[str, str]]) -> dict[str, Any]:
    """Headline of the page: patient-level metrics and ROC of the test split, else of the
    out-of-fold (cv) one, else of the last scored split.

    Splits without patients (``n`` 0 or missing) are passed over; {} when none is left.
    """
    level = "patient" if metrics.get("patient") else "slice"
    scored = tables.scored_splits(metrics)
    present = [s for s in scored if ((metrics.get(level) or {}).get(s) or {}).get("n")]
    if not present:
        return {}
    split = next((s for s in ("test", CV_SPLIT) if s in present), present[-1])
    figure = next((f for f in roc if f["split"] == split), None)
    rows = _frame(tables.table2({level: {split: metrics[level][split]}}, level))
    return {
        "level": level,
        "split": tables.split_label(split),
        "patients": trust.split_patients(split, metrics),
        "table": rows,
        "roc": figure,
    }


def _read_text(path: str | Path) -> str:
    """Read a UTF-8 text file, raising an InputError naming it when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot be read as UTF-8 text ({err})", path=path) from err


def shown_path(path: str | Path) -> str:
    """A path as the page shows it: from its (last) ``results`` folder on, the run's layout."""
    parts = Path(path).parts
    if "results" not in parts:
        return Path(path).name
    return "/".join(parts[len(parts) - 1 - parts[::-1].index("results") :])


def _frame(
    table: pd.DataFrame,
    *,
    group_first: bool = False,
    mark: tuple[str, str, str] | None = None,
    link: tuple[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """A DataFrame as header and rows of strings, for the template's table macro.

    Args:
        table: the table.
        group_first: blank the first cell where it repeats the row above (Table 1's variables).
        mark: (column, text, CSS class): rows whose cell in that column contains the text get
            the class (review flags, in-sample calibration rows).
        link: (column, one href per row): that column's cells link there (patients' pages).
    """
    rows = [[str(v) for v in row] for row in table.to_numpy()]
    links = {"index": -1, "hrefs": []}
    if link:
        links = {"index": list(table.columns).index(link[0]), "hrefs": list(link[1])}
    marks = [""] * len(rows)
    if mark and rows:
        index = list(table.columns).index(mark[0])
        marks = [mark[2] if mark[1] in row[index] else "" for row in rows]
    if group_first:
        firsts = [row[0] for row in rows]
        for row, above in zip(rows[1:], firsts, strict=False):
            if row[0] == above:
                row[0] = ""
    return {"columns": [str(c) for c in table.columns], "rows": rows, "marks": marks, **links}


def _labelled_splits(splits: pd.DataFrame) -> str:
    """The splits labelled patients are in, e.g. ``train / val / test`` or ``cv / test``."""
    present = set(splits.loc[splits["class"] != "", "split"])
    return " / ".join(s for s in tables.SPLIT_ORDER if s in present) or "none"


def _trust_context(inputs: ReportInputs, metrics: dict[str, Any]) -> dict[str, Any]:
    """Cross-validation, calibration and uncertainty sections (empty where metrics lack them)."""
    trust.check_fold_table(inputs.folds_table, metrics)
    cv = metrics.get("cv") or {}
    in_sample = ("split", "in-sample", "in-sample")
    return {
        "cv": _frame(trust.cv_table(metrics)),
        "cv_scheme": str(cv.get("scheme", "")),
        "cv_folds": cv.get("n_folds", 0),
        "cv_loco": cv.get("scheme") == trust.LOCO,
        "folds_figure": figures.image_uri(inputs.folds_figure) if inputs.folds_figure else "",
        "calibration": _frame(trust.calibration_table(metrics), group_first=True, mark=in_sample),
        "calibration_info": trust.calibration_info(metrics),
        "calibration_figures": split_figures(inputs.calibration, "calibration", metrics),
        "uncertainty": _frame(trust.uncertainty_table(metrics)),
        "uncertainty_info": trust.uncertainty_info(metrics),
        "uncertainty_figures": split_figures(inputs.uncertainty, "uncertainty", metrics),
    }


def ablation_split(
    metrics: dict[str, Any], *, predicted_only: bool, leaky: bool = False
) -> tuple[str, bool]:
    """Which patients the sequence ablation is on, as the page says it, and whether the run has
    none (no test split: leave-one-cohort-out cross-validation scores every patient out-of-fold).
    """
    if predicted_only:
        return "the external patients of this prediction-only run", False
    if "test" in tables.scored_splits(metrics):
        if leaky:
            return "the test slices (split by slice: their patients are not held out)", False
        return "the held-out test patients", False
    return "the held-out test patients, of which this run has none", True


def _sequences_context(
    inputs: ReportInputs,
    metrics: dict[str, Any],
    sheet: pd.DataFrame,
    exclusions: pd.DataFrame,
    *,
    leaky: bool,
) -> dict[str, Any]:
    """Missing sequences: who lacks which, the sequence ablation (None without ablation.tsv)
    and the metrics per availability pattern (``has_availability`` False in older runs)."""
    ablation = None
    if inputs.ablation is not None:
        frame = tables.read_ablation(inputs.ablation)
        split, no_patients = ablation_split(
            metrics, predicted_only=inputs.predicted_only, leaky=leaky
        )
        ablation = {
            "table": _frame(tables.ablation_table(frame)),
            "split": split,
            "no_patients": no_patients,
            "bootstrap": tables.bootstrap_resamples(frame),
        }
    return {
        "sequence_counts": _frame(tables.sequence_availability(sheet, exclusions)),
        "any_lacking": tables.any_lacking(sheet, exclusions),
        "ablation": ablation,
        "availability": _frame(tables.availability_table(metrics)),
        "has_availability": isinstance(metrics.get("availability"), dict),
    }


def _explained_context(inputs: ReportInputs) -> dict[str, Any]:
    """The model bundle and saliency sections (None where the run has neither)."""
    bundle = (
        explained.bundle_context(inputs.bundle, predicted_only=inputs.predicted_only)
        if inputs.bundle
        else None
    )
    saliency = None
    if inputs.saliency:
        raw = pd.read_csv(inputs.predictions, dtype=str, keep_default_na=False)
        saliency = explained.saliency_context(inputs.saliency, raw)
    return {"bundle": bundle, "saliency": saliency, "predicted_only": inputs.predicted_only}


def _predictions_context(predictions: pd.DataFrame) -> dict[str, Any]:
    """The per-patient table, each patient linking to its page, and the review count."""
    pages = [
        patient_page(c, p)
        for c, p in zip(predictions["cohort"], predictions["patient"], strict=True)
    ]
    return {
        "predictions": _frame(
            predictions, mark=("review", tables.REVIEW_FLAG, "review"), link=("patient", pages)
        ),
        "n_review": int((predictions["review"] == tables.REVIEW_FLAG).sum()),
    }


def _with_predictions(
    items: list[dict[str, str]], predictions: pd.DataFrame
) -> list[dict[str, str]]:
    """Add each QC thumbnail's split and review flag from the predictions table, for its
    caption (and so its filter box): blank for a patient the table lacks."""
    rows = predictions.set_index(["cohort", "patient"])
    for item in items:
        key = (item["cohort"], item["patient"])
        found = key in rows.index
        item["split"] = str(rows.at[key, "split"]) if found else ""
        item["review"] = str(rows.at[key, "review"]) if found else ""
    return items


def build_context(inputs: ReportInputs, curves_png: bytes, workers: int = 1) -> dict[str, Any]:
    """Read every input and return what the template shows (``workers``: threads drawing the
    QC thumbnails)."""
    sheet = tables.read_table(inputs.sheet, ("patient", "cohort", "class"))
    exclusions = tables.read_table(inputs.exclusions, tables.EXCLUSION_COLUMNS)
    splits = tables.read_splits(inputs.splits)
    metrics = tables.read_metrics(inputs.metrics)
    roc = split_figures(inputs.roc, "roc", metrics)
    table1_frame = tables.read_table(inputs.table1, ("variable", "level", "Total"))
    predictions = tables.read_predictions(inputs.predictions, sheet)
    histories = [shown_path(p) for p in inputs.histories().values()]
    return {
        "leaky": tables.is_leaky(splits, metrics),
        "warning": str(metrics.get("warning") or ""),
        "summary": summary(metrics, roc),
        "flow": tables.cohort_flow(sheet, exclusions),
        "labelled_splits": _labelled_splits(splits),
        "exclusions": _frame(exclusions[list(tables.EXCLUSION_COLUMNS)]),
        "table1": _frame(table1_frame, group_first=True),
        "table1_footnote": table1.FOOTNOTE,
        "split_sizes": _frame(tables.split_sizes(splits)),
        "fold_sizes": _frame(trust.fold_sizes(splits)),
        "curves": figures.data_uri(curves_png, "image/png"),
        "history_files": histories,
        "table2": {level: _frame(tables.table2(metrics, level)) for level in tables.LEVELS},
        "baseline": _frame(tables.baseline_comparison(metrics)),
        "baseline_caption": tables.BASELINE_CAPTION,
        "roc": roc,
        "confusion": split_figures(inputs.confusion, "confusion", metrics),
        **_trust_context(inputs, metrics),
        **_sequences_context(
            inputs, metrics, sheet, exclusions, leaky=tables.is_leaky(splits, metrics)
        ),
        **_explained_context(inputs),
        **_predictions_context(predictions),
        "qc": _with_predictions(qc_items(inputs.qc, workers), predictions),
        **script(),
        "config": yaml.safe_dump(dict(inputs.config), sort_keys=False) if inputs.config else "",
        "model_config": _read_text(inputs.model_config),
        "model_config_path": shown_path(inputs.model_config),
        "versions": package_versions(),
        "platform": f"{platform.platform()}; {sys.implementation.name}",
    }


def render_template(name: str, context: Mapping[str, Any]) -> str:
    """Render the template ``name`` of ``templates/`` with ``context`` (every value escaped
    unless marked safe; an undefined name is an error, not an empty string)."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template(name).render(**context)


def render_html(context: Mapping[str, Any]) -> str:
    """Render the report's page template with ``context``."""
    return render_template("report.html.j2", context)


def write_report(
    inputs: ReportInputs, html_path: str | Path, curves_path: str | Path, *, workers: int = 1
) -> None:
    """Draw the training curves, then write them and the HTML page atomically.

    Args:
        inputs: the stage outputs to show.
        html_path: the page, ``results/report.html``.
        curves_path: the training-curves PNG (also embedded in the page).
        workers: threads drawing the QC thumbnails.
    """
    histories = {label: figures.read_history(p) for label, p in inputs.histories().items()}
    curves = figures.training_curves_png(histories)
    html = render_html(build_context(inputs, curves, workers))
    with atomic_path(curves_path) as tmp:
        Path(tmp).write_bytes(curves)
    with atomic_path(html_path) as tmp:
        Path(tmp).write_text(html, encoding="utf-8")
