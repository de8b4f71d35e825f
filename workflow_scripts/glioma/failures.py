"""The patients whose steps failed in a run, read back from their step logs.

A per-patient step logs to ``logs/<rule>/<cohort>/<patient>.log`` and, when it dies on an
exception, ends that log with a ``CRITICAL`` record holding the error (see
:func:`glioma.logs.setup_logging`). Under ``--keep-going`` every other patient finishes, but a
cohort's shards need every patient of the cohort, so they (and training) wait until the failed
patients are fixed or dropped. :func:`failure_report` turns the logs into the closing message
that says so, rather than leaving the errors scattered through Snakemake's output.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: The record ``setup_logging`` writes for an uncaught exception (only those are CRITICAL).
_ERROR_RECORD = re.compile(r"^\S+ \S+ CRITICAL [\w.]+: (?P<message>.*)$")
#: Seconds a log's modification time may precede the run's start (coarse file-system clocks).
CLOCK_SLACK_S = 2.0


@dataclass(frozen=True)
class Failure:
    """One failed step of one patient."""

    cohort: str
    patient: str
    rule: str
    error: str
    log: Path


def last_error(log: Path) -> str | None:
    """Return the message of the last error record in ``log``, or None when it holds none."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        match = _ERROR_RECORD.match(line)
        if match:
            return match.group("message")
    return None


def find_failures(
    logs_dir: str | Path, patients: Iterable[tuple[str, str]], *, since: float = 0.0
) -> list[Failure]:
    """Return the failed steps of ``patients``: step logs written since ``since`` with an error.

    Args:
        logs_dir: the workflow's ``logs/`` folder.
        patients: (cohort, patient) pairs of the sheet's included patients; logs of anyone else
            (a patient since dropped from the sheet) are ignored.
        since: the run's start (seconds since the epoch); older logs belong to earlier runs.

    Returns:
        Failures sorted by cohort, patient and rule.
    """
    wanted = set(patients)
    failures = []
    for log in Path(logs_dir).glob("*/*/*.log"):
        rule, cohort, patient = log.parent.parent.name, log.parent.name, log.stem
        if (cohort, patient) not in wanted or log.stat().st_mtime < since - CLOCK_SLACK_S:
            continue
        error = last_error(log)
        if error is not None:
            failures.append(Failure(cohort, patient, rule, error, log))
    return sorted(failures, key=lambda f: (f.cohort, f.patient, f.rule))


def failure_report(failures: list[Failure]) -> str:
    """Return the closing message of a run with failed patients ("" when there are none)."""
    if not failures:
        return ""
    cohorts = sorted({f.cohort for f in failures})
    patients = sorted({(f.cohort, f.patient) for f in failures})
    lines = [
        f"{len(patients)} patient(s) failed; every other patient's steps ran. The shards of "
        f"cohort(s) {', '.join(cohorts)} need all their patients, so they and everything that "
        "reads them (training, predictions, report) were not built:"
    ]
    for failure in failures:
        lines.append(f"  {failure.cohort}/{failure.patient} in {failure.rule} ({failure.log}):")
        lines.append(f"      {failure.error}")
    lines.append(
        "Fix each file and run again (only these patients and what depends on them are "
        "recomputed), or leave the image's cell empty to exclude the patient with a reason in "
        "results/cohort/exclusions.tsv."
    )
    return "\n".join(lines)
