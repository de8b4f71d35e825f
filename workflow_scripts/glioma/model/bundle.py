"""The model bundle: one folder that carries a trained model (or fold ensemble) to new patients.

Layout (``results/bundle/``)::

    manifest.json        format, version and the SHA-256 of every other file
    bundle.json          classes, sequences, the settings that shape the model's input, the
                         training cohort, temperature, package versions, metrics summary
    metrics.json         the training run's metrics (every split, as evaluated there)
    config.yaml          the training run's resolved config (of the first model)
    models/<name>/       ``single``, or ``fold-<id>`` per fold: ``weights.pt`` (a weights record
                         that loads with ``torch.load(weights_only=True)``) and ``history.csv``

The bundle's identity is the SHA-256 of ``manifest.json``: two bundles with the same identity
hold the same bytes. A bundle whose files fail their checksums, or written under another major
``VERSION``, is refused. This module imports only the standard library at the top, so rule files
read and check bundles cheaply while the DAG is built; :func:`load_models` imports torch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from glioma.errors import InputError

log = logging.getLogger(__name__)

FORMAT = "glioma-model-bundle"
#: Bumped when a bundle written by this code cannot be read by older code (and vice versa).
#: 2: networks with availability planes (8 input channels), preprocess.registration.reference
#: among the settings.
VERSION = 2
MANIFEST = "manifest.json"
BUNDLE_JSON = "bundle.json"
METRICS_JSON = "metrics.json"
CONFIG_YAML = "config.yaml"
MODELS_DIR = "models"
WEIGHTS = "weights.pt"
HISTORY = "history.csv"

#: Settings that shape what the model sees, carried by the bundle and applied to a
#: prediction-only run (dotted paths into the workflow config). Settings about the input archive
#: (``preprocess.per_cohort``, ``preprocess.brain_extraction.hdbet_weights``, ``preprocess.jobs``)
#: stay the user's.
BUNDLED_SETTINGS: tuple[str, ...] = (
    "preprocess.n4",
    "preprocess.registration.transform",
    "preprocess.registration.resample_mm",
    "preprocess.registration.reference",
    "preprocess.brain_extraction.method",
    "preprocess.brain_extraction.input",
    "preprocess.brain_extraction.threshold",
    "preprocess.normalisation",
    "preprocess.crop",
    "model.name",
    "model.kwargs",
)
#: Packages whose versions the bundle records.
PACKAGES = ("torch", "timm", "numpy", "SimpleITK", "antspyx", "deepbet", "hd-bet", "snakemake")


def _get(config: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted path of a nested mapping (KeyError when absent)."""
    value: Any = config
    for key in dotted.split("."):
        value = value[key]
    return value


def _set(config: dict[str, Any], dotted: str, value: Any) -> None:
    """Set the value at a dotted path of a nested dict."""
    *parents, last = dotted.split(".")
    node = config
    for key in parents:
        node = node[key]
    node[last] = copy.deepcopy(value)


def _leaves(value: Any, prefix: str) -> dict[str, Any]:
    """Flatten nested mappings into ``{dotted path: leaf value}``."""
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, child in value.items():
            out.update(_leaves(child, f"{prefix}.{key}"))
        return out
    return {prefix: value}


def _plain(value: Any) -> Any:
    """Config containers as JSON-ready dicts and lists."""
    return json.loads(json.dumps(value, default=str))


def input_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`BUNDLED_SETTINGS` of a validated config, by dotted path."""
    return {key: _plain(_get(config, key)) for key in BUNDLED_SETTINGS}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(bundle_dir: str | Path) -> dict[str, Any]:
    """Check a bundle's manifest, version and every checksum; return its ``bundle.json``.

    The returned document has ``id`` (the SHA-256 of ``manifest.json``) and ``path`` added.

    Raises:
        InputError: naming the file that is missing, unreadable, of another format or
            version, or whose content differs from its checksum.
    """
    root = Path(bundle_dir)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise InputError("is not a model bundle (no manifest.json)", path=root)
    manifest = _read_json(manifest_path)
    if manifest.get("format") != FORMAT:
        raise InputError(f"format {manifest.get('format')!r} is not {FORMAT!r}", path=manifest_path)
    version = manifest.get("version")
    if version != VERSION:
        raise InputError(
            f"bundle version {version!r} cannot be read by this workflow (it reads version "
            f"{VERSION}); predict with the workflow version that wrote it, or retrain",
            path=manifest_path,
        )
    files = manifest.get("files") or {}
    if BUNDLE_JSON not in files:
        raise InputError(f"the manifest lists no {BUNDLE_JSON}", path=manifest_path)
    for name, expected in sorted(files.items()):
        path = root / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise InputError(f"unsafe file name {name!r} in the manifest", path=manifest_path)
        if not path.is_file():
            raise InputError("listed in the bundle's manifest but missing", path=path)
        if sha256_file(path) != expected:
            raise InputError(
                "content differs from the checksum in the bundle's manifest (changed or "
                "corrupt): the bundle is refused",
                path=path,
            )
    document = _read_json(root / BUNDLE_JSON)
    document["id"] = sha256_file(manifest_path)
    document["path"] = str(root.resolve())
    return document


def _read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, or raise InputError naming the file."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot be read as JSON ({err})", path=path) from err
    if not isinstance(value, dict):
        raise InputError("is not a JSON object", path=path)
    return value


def apply_settings(
    config: dict[str, Any], explicit: Mapping[str, Any], bundle: Mapping[str, Any]
) -> list[str]:
    """Give a prediction-only run the bundle's input settings; return the keys changed.

    Args:
        config: the validated workflow config (changed in place).
        explicit: the settings the user gave explicitly (Snakemake's ``--configfile`` overlays
            and ``--config``); ``config.yaml``'s values are defaults that the bundle replaces.
        bundle: the bundle's ``bundle.json``.

    Raises:
        InputError: an explicit setting conflicts with the bundle (naming the key and both
            values).
    """
    settings = bundle["settings"]
    given = _leaves(_plain(dict(explicit)), "")
    changed = []
    for key in BUNDLED_SETTINGS:
        for leaf, value in _leaves(settings[key], key).items():
            mine = given.get(f".{leaf}")
            if f".{leaf}" in given and _plain(_get(config, leaf)) != value:
                raise InputError(
                    f"setting {leaf} is {mine!r} here but the model bundle was trained with "
                    f"{value!r}: remove the setting (the bundle's value is used) or retrain",
                    path=Path(bundle["path"]) / BUNDLE_JSON,
                )
        if _plain(_get(config, key)) != settings[key]:
            changed.append(key)
        _set(config, key, settings[key])
    return changed


def training_cohort(splits: Any) -> dict[str, dict[str, dict[str, int]]]:
    """Patients per split, cohort and class of a run's manifest (a pandas DataFrame)."""
    labelled = splits[splits["class"] != ""]
    counts = labelled.groupby(["split", "cohort", "class"]).size()
    out: dict[str, dict[str, dict[str, int]]] = {}
    for (split, cohort, name), n in counts.items():
        out.setdefault(split, {}).setdefault(cohort, {})[name] = int(n)
    return out


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (``"absent"`` for those not installed)."""
    import importlib.metadata
    import platform

    import glioma

    versions = {"python": platform.python_version(), "glioma": glioma.__version__}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _metrics_summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The patient-level macro AUC of every split the training run scored."""
    patient = metrics.get("patient", {})
    return {split: patient.get(split, {}).get("macro_auc") for split in metrics.get("splits", [])}


def write_bundle(
    models: Mapping[str, str | Path],
    out_dir: str | Path,
    *,
    config: Mapping[str, Any],
    splits: Any,
    metrics_path: str | Path,
) -> dict[str, Any]:
    """Write the bundle folder atomically and return its ``bundle.json`` (with ``id``).

    Args:
        models: model name (``single`` or ``fold-<id>``) -> its ``best.pt``; the
            ``history.csv`` beside it is copied too, and the first model's ``config.yaml``.
        out_dir: ``results/bundle``.
        config: the run's validated config.
        splits: the run's manifest (DataFrame), summarised as the training cohort.
        metrics_path: the run's ``metrics.json``.
    """
    from glioma.constants import CLASSES, SEQUENCES
    from glioma.dataset.writer import atomic_dir

    metrics = _read_json(Path(metrics_path))
    calibration = metrics.get("calibration") or {}
    document = {
        "format": FORMAT,
        "version": VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "classes": list(CLASSES),
        "sequences": list(SEQUENCES),
        "models": list(models),
        "settings": input_settings(config),
        "review_entropy": float(config["evaluate"]["review_entropy"]),
        "temperature": calibration.get("temperature"),
        "temperature_fitted_on": calibration.get("fitted_on"),
        "seed": int(config["seed"]),
        "split": _plain(config["split"]),
        "training_cohort": training_cohort(splits),
        "metrics": _metrics_summary(metrics),
        "packages": package_versions(),
    }
    with atomic_dir(out_dir) as tmp:
        for name, source in models.items():
            folder = tmp / MODELS_DIR / name
            folder.mkdir(parents=True)
            _copy_weights(Path(source), folder / WEIGHTS)
            shutil.copyfile(Path(source).parent / "history.csv", folder / HISTORY)
        shutil.copyfile(Path(next(iter(models.values()))).parent / CONFIG_YAML, tmp / CONFIG_YAML)
        shutil.copyfile(metrics_path, tmp / METRICS_JSON)
        (tmp / BUNDLE_JSON).write_text(json.dumps(document, indent=2) + "\n")
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "files": {p.relative_to(tmp).as_posix(): sha256_file(p) for p in files},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    document["id"] = sha256_file(Path(out_dir) / MANIFEST)
    log.info(
        "wrote model bundle %s (id %s) with %d model(s)", out_dir, document["id"][:12], len(models)
    )
    return document


def _copy_weights(source: Path, target: Path) -> None:
    """Copy a best.pt record with its weights and identity only (no optimiser, no run state)."""
    from glioma.model import checkpoint

    record = checkpoint.load(source)
    kept = ("format", "model", "model_name", "model_kwargs", "classes", "epoch", "metric")
    checkpoint.save({key: record[key] for key in kept if key in record}, target)


def model_paths(bundle: Mapping[str, Any], name: str = WEIGHTS) -> dict[str, Path]:
    """Model name -> its weights file (or ``history.csv``) in a verified bundle."""
    root = Path(bundle["path"])
    return {model: root / MODELS_DIR / model / name for model in bundle["models"]}


def load_models(bundle_dir: str | Path, device: Any = "cpu") -> tuple[dict[str, Any], dict]:
    """Verify a bundle and load its models (eval mode) with ``weights_only=True``.

    Returns:
        The bundle document and ``{model name: nn.Module}``.
    """
    from glioma.model.state import load_classifier

    bundle = verify(bundle_dir)
    models = {name: load_classifier(path, device) for name, path in model_paths(bundle).items()}
    return bundle, models
