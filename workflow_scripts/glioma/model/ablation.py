"""Sequence ablation: what each sequence is worth to the model, measured at test time.

Every labelled patient of the scored split (``test`` of a training run, ``external`` of a
prediction-only run) is predicted with its sequences as given (the reference), then with each
sequence hidden in turn: its channel set to NaN in every slice
(:func:`glioma.model.availability.hide`), exactly as a patient who lacks it is given to the
model. A patient's probabilities are the mean
of its slices' (as everywhere in the workflow) and the mean over the bundle's models (as the
bundle predicts, :func:`glioma.model.ensemble.combine_folds`). The table has one row per
sequence: the patient-level macro AUC with every sequence and without that one, the change
(without - all) and a paired percentile bootstrap interval of the change, each resample drawing
the same patients for both AUCs.

A patient who already lacks a sequence (its channel NaN in every slice) is predicted the same
with and without it; ``n_lacking`` counts them, since they dilute the change. A patient whose
only sequence is the one hidden is still predicted, from no image at all (the network sees the
fill value and four zero availability planes).

Under the study's slice-level protocol a patient's slices are scored in the split each slice
was drawn into (:func:`glioma.dataset.splits.slice_split`), as the evaluation scores them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from glioma.constants import ABLATION_COLUMNS, CLASSES, CV_SPLIT, SEQUENCES
from glioma.dataset.loader import iter_patient_batches
from glioma.dataset.splits import SLICE_SPLIT, read_splits, slice_split
from glioma.io import atomic_path
from glioma.model.availability import absent, hide
from glioma.model.bundle import load_models
from glioma.model.metrics import macro_auc
from glioma.model.nets import pick_device
from glioma.model.predict import predict_images

log = logging.getLogger(__name__)

#: Coverage of the bootstrap interval of the change.
LEVEL = 0.95

Key = tuple[str, str]


def scored_patients(splits: pd.DataFrame, split: str) -> dict[Key, int]:
    """The labelled patients whose slices are scored in ``split``, with their class index.

    Under the slice-level protocol every labelled patient may have slices in ``split``.

    Args:
        splits: the run's manifest (:func:`glioma.dataset.splits.read_splits`).
        split: the split scored.

    Returns:
        ``{(cohort, patient): class index}``.
    """
    wanted = {split, SLICE_SPLIT}
    rows = splits[(splits["class"] != "") & splits["split"].isin(wanted)]
    return {
        (str(cohort), str(patient)): CLASSES.index(name)
        for cohort, patient, name in rows[["cohort", "patient", "class"]].itertuples(index=False)
    }


def _scored_slices(
    key: Key,
    slice_index: np.ndarray,
    splits_of: Mapping[Key, str],
    split: str,
    *,
    ratios: Mapping[str, float] | None,
    seed: int,
) -> np.ndarray:
    """Bool mask (S,) of one patient's slices scored in ``split``.

    Raises:
        ValueError: the manifest is slice-level and no ``ratios`` were given.
    """
    if splits_of[key] != SLICE_SPLIT:
        return np.ones(len(slice_index), dtype=bool)
    if ratios is None:
        raise ValueError("a slice-level manifest needs the split ratios to find its slices")
    cohort, patient = key
    drawn = [slice_split(seed, cohort, patient, int(i), ratios) for i in slice_index.tolist()]
    return np.asarray(drawn) == split


def _ablated(images: torch.Tensor) -> torch.Tensor:
    """The reference slices (S, C, H, W) followed by C copies, the c-th with channel c hidden:
    a (1 + C) * S stack, predicted in one go."""
    n_slices, n_channels = images.shape[:2]
    variants = [images]
    for channel in range(n_channels):
        hidden = torch.zeros(n_slices, n_channels, dtype=torch.bool)
        hidden[:, channel] = True
        variants.append(hide(images, hidden))
    return torch.cat(variants)


def ablation_passes(
    models: Mapping[str, nn.Module],
    shard_dirs: Sequence[str | Path],
    splits: pd.DataFrame,
    patients: Mapping[Key, int],
    *,
    split: str,
    device: torch.device,
    batch_size: int,
    ratios: Mapping[str, float] | None = None,
    seed: int = 0,
) -> tuple[dict[Key, np.ndarray], dict[Key, np.ndarray]]:
    """Read the patients' scored slices once per model and predict every variant of them.

    With no model the shards are read once for the absent sequences only.

    Args:
        models: model name -> model (called with NaN for an absent sequence).
        shard_dirs: ``results/shards/{cohort}`` folders.
        splits: the run's manifest.
        patients: the patients to read (:func:`scored_patients`).
        split: the split scored (selects the slices of a slice-level manifest).
        device: where the models are.
        batch_size: slices per forward pass.
        ratios: the split ratios of a slice-level manifest.
        seed: the seed the slice-level splits were drawn with.

    Returns:
        ``{(cohort, patient): probabilities (1 + C, K)}``, the mean over the patient's scored
        slices and over the models of the reference (row 0) and of each sequence hidden (row
        1 + c), empty without models; and ``{(cohort, patient): bool (C,)}``, the sequences
        absent from every scored slice. Patients with no scored slice are in neither.
    """
    splits_of = {
        (str(c), str(p)): str(s)
        for c, p, s in splits[["cohort", "patient", "split"]].itertuples(index=False)
    }
    sums: dict[Key, np.ndarray] = {}
    lacking: dict[Key, np.ndarray] = {}
    for n, model in enumerate(models.values() or [None]):
        for cohort, patient, images, slice_index in iter_patient_batches(
            shard_dirs, keys=set(patients)
        ):
            key = (cohort, patient)
            mask = _scored_slices(key, slice_index, splits_of, split, ratios=ratios, seed=seed)
            if not mask.any():
                continue
            if not mask.all():
                images = images[torch.from_numpy(mask)]
            if n == 0:
                lacking[key] = absent(images).all(dim=0).numpy()
            if model is None:
                continue
            probs = predict_images(model, _ablated(images), device, batch_size)
            mean = probs.astype(np.float64).reshape(-1, len(images), probs.shape[1]).mean(axis=1)
            sums[key] = sums.get(key, 0.0) + mean
    probs = {key: total / len(models) for key, total in sums.items()}
    return probs, lacking


def paired_delta_ci(
    labels: np.ndarray,
    reference: np.ndarray,
    ablated: np.ndarray,
    *,
    n_boot: int,
    seed: int,
    level: float = LEVEL,
) -> tuple[np.ndarray, np.ndarray]:
    """Paired percentile bootstrap interval of each ablation's change in macro AUC.

    Patients are resampled with replacement as :func:`glioma.model.metrics.bootstrap_auc_ci`
    resamples them (one seeded generator, one draw of N per resample); each resample scores the
    same patients with and without every sequence. Resamples where the macro AUC is undefined
    (a class not drawn) are skipped.

    Args:
        labels: int class indices (N,), one per patient.
        reference: patient probabilities with every sequence (N, K).
        ablated: patient probabilities with each sequence hidden (A, N, K).
        n_boot: number of resamples; 0 gives NaN intervals.
        seed: seed of the resampling.
        level: coverage of the interval.

    Returns:
        (A, 2) low and high bounds of ``macro AUC without - macro AUC with`` (NaN where no
        resample had it defined), and (A,) the number of resamples used.
    """
    n_ablations, n = ablated.shape[0], labels.size
    out = np.full((n_ablations, 2), np.nan)
    if n_boot <= 0 or n == 0:
        return out, np.zeros(n_ablations, dtype=np.int64)
    rng = np.random.default_rng(seed)
    draws = np.full((n_boot, n_ablations), np.nan)
    for b in range(n_boot):
        rows = rng.integers(0, n, size=n)
        base = macro_auc(labels[rows], reference[rows])
        if not math.isfinite(base):
            continue
        for a in range(n_ablations):
            draws[b, a] = macro_auc(labels[rows], ablated[a, rows]) - base
    alpha = (1 - level) / 2
    used = np.isfinite(draws).sum(axis=0)
    for a in range(n_ablations):
        valid = draws[np.isfinite(draws[:, a]), a]
        if valid.size:
            out[a] = np.quantile(valid, [alpha, 1 - alpha])
    return out, used


def _table(
    n_patients: int,
    n_lacking: np.ndarray,
    auc_all: float,
    auc_without: np.ndarray,
    ci: np.ndarray,
    used: np.ndarray,
) -> pd.DataFrame:
    """The ablation table, one row per sequence, in :data:`ABLATION_COLUMNS` order."""
    table = pd.DataFrame(
        {
            "sequence": list(SEQUENCES),
            "n_patients": n_patients,
            "n_lacking": np.asarray(n_lacking, dtype=np.int64),
            "macro_auc_all": auc_all,
            "macro_auc_without": auc_without,
            "delta_auc": auc_without - auc_all,
            "ci_low": ci[:, 0],
            "ci_high": ci[:, 1],
            "bootstrap": np.asarray(used, dtype=np.int64),
        }
    )
    return table.reindex(columns=list(ABLATION_COLUMNS))


def _undefined(n_patients: int, n_lacking: np.ndarray) -> pd.DataFrame:
    """The table of a split whose macro AUC is undefined: counts, NaN everywhere else."""
    n_seq = len(SEQUENCES)
    return _table(
        n_patients,
        n_lacking,
        math.nan,
        np.full(n_seq, np.nan),
        np.full((n_seq, 2), np.nan),
        np.zeros(n_seq, dtype=np.int64),
    )


def _class_names(labels: Sequence[int]) -> str:
    """The classes present among ``labels``, in :data:`CLASSES` order."""
    return ", ".join(CLASSES[k] for k in sorted(set(labels))) or "none"


def ablate(
    models: Mapping[str, nn.Module],
    shard_dirs: Sequence[str | Path],
    splits: pd.DataFrame,
    *,
    split: str,
    device: torch.device,
    batch_size: int,
    bootstrap: int,
    seed: int,
    ratios: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """The sequence ablation of one split: each sequence hidden in turn, every patient's slices.

    A split without labelled patients, or whose patients lack a class (the macro AUC needs
    every class), gives a table of counts and NaN, with a warning saying why; nothing is
    predicted then.

    Args:
        models: model name -> model (a bundle's, :func:`glioma.model.bundle.load_models`); a
            patient's probabilities are the mean of the models'.
        shard_dirs: ``results/shards/{cohort}`` folders.
        splits: the run's manifest (:func:`glioma.dataset.splits.read_splits`).
        split: the split scored (``test``, or ``external`` of a prediction-only run).
        device: where the models are.
        batch_size: slices per forward pass.
        bootstrap: resamples of the paired bootstrap; 0 gives NaN intervals.
        seed: seed of the bootstrap, and of the slice draws of a slice-level manifest (the
            training run's seed).
        ratios: the split ratios of a slice-level manifest (unused otherwise).

    Returns:
        One row per sequence (:data:`ABLATION_COLUMNS`): ``n_patients`` scored, ``n_lacking``
        of them without that sequence already, ``macro_auc_all``, ``macro_auc_without``,
        ``delta_auc`` (without - all), ``ci_low`` and ``ci_high`` (the change's interval) and
        ``bootstrap`` (resamples used).

    Raises:
        ValueError: no model, or the ``cv`` split (its patients are scored out-of-fold, by one
            model each, which this ablation does not do).
    """
    if not models:
        raise ValueError("the ablation needs at least one model")
    if split == CV_SPLIT:
        raise ValueError(
            "the cv split is scored out-of-fold (one model per patient); ablate test or external"
        )
    patients = scored_patients(splits, split)
    n_seq = len(SEQUENCES)
    if not patients:
        log.warning(
            "split %r has no labelled patient%s: the sequence ablation is not defined and its "
            "table holds NaN",
            split,
            " (a leave-one-cohort-out run has no test split)" if split == "test" else "",
        )
        return _undefined(0, np.zeros(n_seq, dtype=np.int64))
    if len(set(patients.values())) < len(CLASSES):
        _, lacking = ablation_passes(
            {}, shard_dirs, splits, patients, split=split, device=device,
            batch_size=batch_size, ratios=ratios, seed=seed,
        )  # fmt: skip
        log.warning(
            "split %r has patients of %s only: the macro AUC needs all %d classes, so the "
            "sequence ablation's AUCs are NaN",
            split,
            _class_names(list(patients.values())),
            len(CLASSES),
        )
        counts = np.sum(list(lacking.values()), axis=0) if lacking else np.zeros(n_seq)
        return _undefined(len(lacking), counts)
    probs, lacking = ablation_passes(
        models, shard_dirs, splits, patients, split=split, device=device,
        batch_size=batch_size, ratios=ratios, seed=seed,
    )  # fmt: skip
    missing = sorted(set(patients) - set(probs))
    for cohort, patient in missing:
        log.warning("patient %s of cohort %s has no %s slice in the shards", patient, cohort, split)
    keys = list(probs)
    labels = np.array([patients[key] for key in keys], dtype=np.int64)
    n_lacking = np.sum([lacking[key] for key in keys], axis=0) if keys else np.zeros(n_seq)
    if len(set(labels.tolist())) < len(CLASSES):
        log.warning(
            "the %d patients of split %r in the shards are of %s only: the macro AUC needs all "
            "%d classes, so the sequence ablation's AUCs are NaN",
            len(keys),
            split,
            _class_names(labels.tolist()),
            len(CLASSES),
        )
        return _undefined(len(keys), n_lacking)
    stack = np.stack([probs[key] for key in keys], axis=1)  # (1 + C, N, K)
    auc_all = macro_auc(labels, stack[0])
    auc_without = np.array([macro_auc(labels, stack[1 + c]) for c in range(n_seq)])
    ci, used = paired_delta_ci(labels, stack[0], stack[1:], n_boot=bootstrap, seed=seed)
    return _table(len(keys), n_lacking, auc_all, auc_without, ci, used)


def _summary(row: pd.Series) -> str:
    """One log line of an ablation row."""
    lacking = f"{row['n_lacking']} of {row['n_patients']} patients lack it already"
    if not math.isfinite(row["delta_auc"]):
        return f"without {row['sequence']}: not defined; {lacking}"
    ci = (
        f"{LEVEL:.0%} CI {row['ci_low']:+.3f} to {row['ci_high']:+.3f}, "
        f"{row['bootstrap']} resamples"
        if math.isfinite(row["ci_low"])
        else "no CI"
    )
    return (
        f"without {row['sequence']}: patient macro AUC {row['macro_auc_all']:.3f} -> "
        f"{row['macro_auc_without']:.3f} (change {row['delta_auc']:+.3f}, {ci}); {lacking}"
    )


def write_ablation(
    shard_dirs: Sequence[str | Path],
    splits_path: str | Path,
    bundle_dir: str | Path,
    out_path: str | Path,
    *,
    split: str,
    batch_size: int,
    bootstrap: int,
    seed: int,
    device: str | None = None,
) -> pd.DataFrame:
    """Ablate each sequence with every model of a bundle and write the table atomically (TSV).

    Args:
        shard_dirs: ``results/shards/{cohort}`` folders of this run.
        splits_path: ``results/splits.tsv``.
        bundle_dir: the model bundle (verified before use): the training run's, or the one a
            prediction-only run predicts with.
        out_path: ``results/metrics/ablation.tsv``.
        split: the split scored (``test``, or ``external`` of a prediction-only run).
        batch_size: slices per forward pass.
        bootstrap: resamples of the paired bootstrap (``evaluate.bootstrap``).
        seed: the run's seed (bootstrap, and slice draws of a slice-level manifest).
        device: torch device name; default CUDA when available.

    Returns:
        The table written (:func:`ablate`).
    """
    splits = read_splits(splits_path)
    torch_device = pick_device(device)
    bundle, models = load_models(bundle_dir, torch_device)
    ratios = (bundle.get("split") or {}).get("ratios")
    table = ablate(
        models,
        shard_dirs,
        splits,
        split=split,
        device=torch_device,
        batch_size=batch_size,
        bootstrap=bootstrap,
        seed=seed,
        ratios=ratios,
    )
    with atomic_path(out_path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="")
    log.info(
        "sequence ablation of split %s with bundle %s (%d model(s)):",
        split,
        bundle["id"][:12],
        len(models),
    )
    for _, row in table.iterrows():
        log.info("%s", _summary(row))
    return table
