"""Per-patient preprocessing: N4, registration to T1c, brain extraction, normalisation, crop, QC.

Each step is a module with an array (or image) function, a file function that reads and writes,
and a thin rule adapter in ``workflow_scripts/``. This package's ``__init__`` stays light (no ANTs,
torch or matplotlib import) so adapters can set thread counts before the heavy libraries start.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from glioma.errors import InputError

T = TypeVar("T")
R = TypeVar("R")

#: Environment variables read by ITK (SimpleITK and ANTs), OpenMP and BLAS at start-up.
THREAD_VARIABLES = (
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
)


def configure_threads(threads: int) -> None:
    """Limit ITK (SimpleITK and ANTs), OpenMP and an already imported torch to ``threads`` threads.

    ANTs reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` the first time one of its filters runs, so
    call this before any registration; SimpleITK is set directly. torch is only set when something
    has imported it already: importing it here would cost seconds in steps that never use it.

    Args:
        threads: the rule's ``threads`` (at least 1).
    """
    threads = max(1, int(threads))
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def in_context(
    err: InputError,
    *,
    patient: str | None = None,
    column: str | None = None,
    path: str | Path | None = None,
) -> InputError:
    """Return ``err`` with patient, column and file filled in where it did not name them.

    Library functions raise errors that know only part of the context (a sequence's array
    function knows no file; a reader knows no patient); the file functions complete them.
    """
    return err.with_context(patient=patient, column=column, path=path)


def extractor_input(preferred: str, present: Sequence[str], reference_order: Sequence[str]) -> str:
    """The sequence that feeds the brain extractor: ``preferred``
    (``preprocess.brain_extraction.input``) when the patient has it, else the other of T1w and
    T1c, else its first present sequence of ``reference_order``.

    Raises:
        InputError: none of them is present.
    """
    other = {"t1w": "t1c", "t1c": "t1w"}.get(preferred)
    for sequence in (preferred, other, *reference_order):
        if sequence in present:
            return sequence
    raise InputError(f"no sequence to extract the brain from (present: {list(present)})")


def in_parallel(function: Callable[[T], R], items: Sequence[T], threads: int) -> list[R]:
    """``[function(item) for item in items]`` on up to ``threads`` threads, results in order.

    For functions that spend their time in SimpleITK, which releases the GIL. The first item's
    error (in ``items`` order) is raised, as a loop would.
    """
    if threads <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(min(threads, len(items)), thread_name_prefix="step") as pool:
        return list(pool.map(function, items))
