"""All preprocessing steps of one patient in one process (config ``preprocess.jobs: patient``).

The step file functions run in the order of the step rules and write the same files, so the
outputs are those of the six step rules, byte for byte. What one process saves is Snakemake's
per-job cost (six jobs per patient make the DAG slow at thousands of patients), five Python
start-ups with their imports, and reading back from disk what the previous step wrote.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glioma.constants import SEQUENCES
from glioma.io import images_in_memory, present_sequences, release_images
from glioma.preprocess import extractor_input
from glioma.preprocess.bias import correct_bias_files
from glioma.preprocess.brain import extract_brain_file
from glioma.preprocess.crop import crop_file
from glioma.preprocess.normalise import normalise_files
from glioma.preprocess.qc import plot_qc_file
from glioma.preprocess.register import REFERENCE_ORDER, register_files

log = logging.getLogger(__name__)

PathLike = str | Path


@dataclass(frozen=True)
class PatientOutputs:
    """Every file the preprocessing of one patient writes (docs/architecture.md).

    Attributes:
        n4: N4-corrected image per sequence (native grid).
        registered: image per sequence and ``roi`` on the patient's grid (T1c's, or its first
            present sequence of ``preprocess.registration.reference``).
        transforms: folder of the ``{moving}_to_{reference}.mat`` transforms.
        brain: brain mask from the extractor (the patient's grid).
        preprocessed: normalised image per sequence, ``brain_mask`` and ``roi``.
        crops: the ``.npz`` slice stack.
        qc: the QC picture.
    """

    n4: Mapping[str, PathLike]
    registered: Mapping[str, PathLike]
    transforms: PathLike
    brain: PathLike
    preprocessed: Mapping[str, PathLike]
    crops: PathLike
    qc: PathLike

    @classmethod
    def in_folders(
        cls,
        *,
        n4: PathLike,
        registered: PathLike,
        brain: PathLike,
        preprocessed: PathLike,
        crops: PathLike,
        qc: PathLike,
    ) -> PatientOutputs:
        """The files of one patient given its stage folders (the rule's directory outputs).

        Args:
            n4: ``results/n4/{cohort}/{patient}``.
            registered: ``results/registered/{cohort}/{patient}``.
            brain: the brain mask file, ``results/brain/{cohort}/{patient}/brain_mask.nii.gz``.
            preprocessed: ``results/preprocessed/{cohort}/{patient}``.
            crops: ``results/crops/{cohort}/{patient}.npz``.
            qc: ``results/qc/{cohort}/{patient}.png``.
        """

        def images(folder: PathLike, *names: str) -> dict[str, Path]:
            return {name: Path(folder) / f"{name}.nii.gz" for name in names}

        return cls(
            n4=images(n4, *SEQUENCES),
            registered=images(registered, *SEQUENCES, "roi"),
            transforms=Path(registered) / "transforms",
            brain=Path(brain),
            preprocessed=images(preprocessed, *SEQUENCES, "brain_mask", "roi"),
            crops=Path(crops),
            qc=Path(qc),
        )

    @classmethod
    def under(cls, results: PathLike, cohort: str, patient: str) -> PatientOutputs:
        """The workflow's layout of one patient's files under ``results`` (docs/architecture.md)."""
        root = Path(results)
        return cls.in_folders(
            n4=root / "n4" / cohort / patient,
            registered=root / "registered" / cohort / patient,
            brain=root / "brain" / cohort / patient / "brain_mask.nii.gz",
            preprocessed=root / "preprocessed" / cohort / patient,
            crops=root / "crops" / cohort / f"{patient}.npz",
            qc=root / "qc" / cohort / f"{patient}.png",
        )


def preprocess_patient_files(
    raw: Mapping[str, PathLike],
    outputs: PatientOutputs,
    *,
    roi_on: str,
    n4: Mapping[str, Any],
    registration: Mapping[str, Any],
    brain_extraction: Mapping[str, Any],
    normalisation: Mapping[str, Any],
    crop: Mapping[str, Any],
    seed: int = 42,
    threads: int = 1,
    patient: str | None = None,
    title: str = "",
) -> None:
    """Run N4, registration, brain extraction, normalisation, crop and QC for one patient.

    Each step is the step rule's file function with the same arguments, so every output equals
    the step rules' output. The steps run inside :func:`glioma.io.images_in_memory`: a step
    reads the images the step before wrote from memory, not from disk.

    Args:
        raw: raw image path per sequence the patient has and ``roi`` (sheet columns); an
            absent or empty sequence was not acquired and gets the stand-in at every stage.
        outputs: where every file goes.
        roi_on: the sequence the ROI was drawn on.
        n4: ``preprocess.n4`` (fit_spacing_mm, iterations, tolerance).
        registration: ``preprocess.registration`` with the cohort's transform (``reference``:
            the order of the reference sequences; default :data:`REFERENCE_ORDER`).
        brain_extraction: ``preprocess.brain_extraction`` with the cohort's method.
        normalisation: ``preprocess.normalisation`` (method, percentiles).
        crop: ``preprocess.crop`` (fov_mm, margin_mm, size, mask_to_roi, min_roi_voxels).
        seed: seed of the registration's metric sampling.
        threads: threads for N4 and brain extraction (registration always uses one).
        patient: patient ID, for error messages.
        title: QC picture title (default: the patient ID).

    Raises:
        InputError: from the step that failed; names patient, column and file.
    """
    with images_in_memory():
        _correct_and_register(
            raw, outputs, roi_on, n4, registration, seed=seed, threads=threads, patient=patient
        )
        release_images(outputs.n4.values())  # native grids, read by no later step
        _extract_and_normalise(
            outputs,
            brain_extraction,
            normalisation,
            reference_order=registration.get("reference", REFERENCE_ORDER),
            threads=threads,
            patient=patient,
        )
        _crop_and_plot(outputs, crop, patient=patient, title=title)


def _correct_and_register(
    raw: Mapping[str, PathLike],
    outputs: PatientOutputs,
    roi_on: str,
    n4: Mapping[str, Any],
    registration: Mapping[str, Any],
    *,
    seed: int,
    threads: int,
    patient: str | None,
) -> None:
    """Steps 1 and 2: N4 of the raw sequences, then registration of them and the ROI."""
    log.info("step 1/6: N4 bias-field correction")
    sequences = {s: raw[s] for s in SEQUENCES if raw.get(s)}
    correct_bias_files(sequences, outputs.n4, **n4, threads=threads, patient=patient)
    log.info("step 2/6: registration")
    register_files(
        outputs.n4,
        raw["roi"],
        roi_on,
        outputs.registered,
        outputs.transforms,
        reference_order=registration.get("reference", REFERENCE_ORDER),
        transform=registration["transform"],
        resample_mm=registration["resample_mm"],
        seed=seed,
        threads=threads,
        patient=patient,
    )


def _extract_and_normalise(
    outputs: PatientOutputs,
    brain_extraction: Mapping[str, Any],
    normalisation: Mapping[str, Any],
    *,
    reference_order: Sequence[str],
    threads: int,
    patient: str | None,
) -> None:
    """Steps 3 and 4: the brain mask, then skull stripping and normalisation of the sequences."""
    log.info("step 3/6: brain extraction")
    present = present_sequences({s: outputs.registered[s] for s in SEQUENCES})
    source = extractor_input(brain_extraction["input"], present, reference_order)
    if source != brain_extraction["input"]:
        log.warning("no %s: the brain is extracted from %s", brain_extraction["input"], source)
    extract_brain_file(
        outputs.registered[source],
        outputs.brain,
        method=brain_extraction["method"],
        threshold=brain_extraction["threshold"],
        hdbet_weights=brain_extraction["hdbet_weights"],
        threads=threads,
        patient=patient,
        column=source,
    )
    log.info("step 4/6: normalisation")
    normalise_files(
        {s: outputs.registered[s] for s in SEQUENCES},
        outputs.brain,
        outputs.registered["roi"],
        outputs.preprocessed,
        **normalisation,
        patient=patient,
    )


def _crop_and_plot(
    outputs: PatientOutputs, crop: Mapping[str, Any], *, patient: str | None, title: str
) -> None:
    """Steps 5 and 6: the ROI crops, and the QC picture (registered images, final masks)."""
    log.info("step 5/6: ROI crop")
    preprocessed = outputs.preprocessed
    crop_file(
        {s: preprocessed[s] for s in SEQUENCES},
        preprocessed["roi"],
        outputs.crops,
        **crop,
        patient=patient,
    )
    log.info("step 6/6: QC picture")
    plot_qc_file(
        {s: outputs.registered[s] for s in SEQUENCES},
        preprocessed["brain_mask"],
        preprocessed["roi"],
        outputs.qc,
        title=title,
        patient=patient,
    )
