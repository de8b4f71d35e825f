"""Bad inputs through the workflow: each bad patient fails alone, clearly, and leaves no debris.

One real run under ``--keep-going`` up to the shards, on a cohort built from the tiny generated
one in which six patients are each broken in one way (truncated ``.nii.gz``, 4D image, infinite
voxels, empty ROI, ROI on a grid of no sequence, a folder of garbage DICOM files). The sheet
sits in a subfolder and reaches the images through ``..`` and absolute paths, one good image
carries a name in its header, and one patient is excluded by an empty cell, so the same run
also shows where a run may write and what reaches the outputs.

Behaviour shown here (README "When something goes wrong"):

- a patient that fails keeps its cohort's shards (and so training) from being built: a cohort is
  never silently trained on without one of its patients. The run ends with one message listing
  the failed patients, their step, error and log, and the cohorts that wait for them.
- a file that does not exist is a sheet error: nothing runs until it is fixed. An empty cell is
  how a sheet excludes a patient, with a row in ``results/cohort/exclusions.tsv``.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import SimpleITK as sitk
from conftest import planned_jobs, run_snakemake, write_config

from glioma.io import read_image

pytestmark = pytest.mark.slow

GOOD = ["DEMO-A-001", "DEMO-B-001", "DEMO-C-001"]
#: Its T1w, T1c and T2w cells are left empty: under the demo's inclusion.missing_sequences
#: allow, FLAIR (the ROI's sequence) alone is too little, so it is excluded.
EXCLUDED = "DEMO-C-003"
IDENTIFIER = b"Doe^Jane 1961-02-03"  # put in a good image's NIfTI description
#: The fastest preprocessing: what is tested here is how failures are handled, not quality.
FAST = {
    "n4": {"iterations": [10], "fit_spacing_mm": 16.0},
    "registration": {"transform": "QuickRigid"},
    "brain_extraction": {"method": "none"},
}


@dataclass(frozen=True)
class Breakage:
    """One patient broken in one way, and what the workflow must say about it."""

    patient: str
    column: str
    rule: str  # the step that fails
    error: str  # pattern of the error's reason
    name: str  # file or folder name of the broken input


BROKEN = [
    Breakage("DEMO-A-002", "t1c", "correct_bias", r"truncated or corrupt", "t1c_cut.nii.gz"),
    Breakage("DEMO-A-003", "t1w", "correct_bias", r"is a 4D image", "t1w_4d.nii.gz"),
    Breakage("DEMO-A-004", "flair", "correct_bias", r"NaN or infinite", "flair_inf.nii.gz"),
    Breakage("DEMO-B-002", "roi", "register_to_t1c", r"ROI is empty", "roi_empty.nii"),
    Breakage("DEMO-B-003", "roi", "register_to_t1c", r"matches no sequence", "roi_off.nii"),
    Breakage("DEMO-B-004", "t2w", "correct_bias", r"no DICOM series: none of its 3", "t2w_dcm"),
]
#: Where each failed step's outputs go, and what comes after it for the same patient.
OUTPUTS_OF = {
    "correct_bias": "results/n4/{cohort}/{patient}",
    "register_to_t1c": "results/registered/{cohort}/{patient}",
}
DOWNSTREAM = [
    "results/brain/{cohort}/{patient}",
    "results/preprocessed/{cohort}/{patient}",
    "results/crops/{cohort}/{patient}.npz",
    "results/qc/{cohort}/{patient}.png",
]


def _break(kind: Breakage, original: Path, out: Path) -> None:
    """Write ``out``: ``original`` broken the way ``kind`` says."""
    if kind.name.endswith("_cut.nii.gz"):
        out.write_bytes(original.read_bytes()[: original.stat().st_size // 3])
    elif kind.name.endswith("_4d.nii.gz"):
        image = sitk.ReadImage(str(original))
        sitk.WriteImage(sitk.JoinSeries([image, image]), str(out))
    elif kind.name.endswith("_inf.nii.gz"):
        image = nib.load(original)
        data = np.asarray(image.dataobj, np.float32)
        data[data.shape[0] // 2, :4, :4] = np.inf
        nib.save(nib.Nifti1Image(data, image.affine), out)
    elif kind.name.endswith("_empty.nii"):
        image = sitk.ReadImage(str(original))
        sitk.WriteImage(image * 0, str(out))
    elif kind.name.endswith("_off.nii"):
        # The ROI on a grid 1.5x coarser and shifted: it matches no sequence's grid.
        image = sitk.ReadImage(str(original))
        grid = sitk.Image([max(1, round(n / 1.5)) for n in image.GetSize()], image.GetPixelID())
        grid.SetSpacing([s * 1.5 for s in image.GetSpacing()])
        grid.SetDirection(image.GetDirection())
        grid.SetOrigin([o + 3.0 for o in image.GetOrigin()])
        resampled = sitk.Resample(image, grid, sitk.Transform(), sitk.sitkNearestNeighbor)
        assert sitk.GetArrayViewFromImage(resampled).any()
        sitk.WriteImage(resampled, str(out))
    elif kind.name.endswith("_dcm"):
        out.mkdir()
        rng = np.random.default_rng(0)
        for i in range(3):
            (out / f"IM{i:04d}.dcm").write_bytes(rng.bytes(4096))
    else:  # pragma: no cover - a new Breakage needs its own branch
        raise AssertionError(kind.name)


def _with_identifier(original: Path, out: Path) -> None:
    """Copy a NIfTI with a patient's name and birth date in its description field."""
    image = nib.load(original)
    header = image.header.copy()
    header["descrip"] = IDENTIFIER
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), image.affine, header), out)


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@dataclass(frozen=True)
class BadRun:
    """The run and what it was given."""

    workdir: Path
    data: Path
    sheet: pd.DataFrame  # as written, paths as in the sheet
    inputs_before: dict[str, str]
    output: str  # stdout and stderr
    returncode: int

    def path_of(self, patient: str, column: str) -> Path:
        """The absolute path of a patient's image, as the workflow resolves it."""
        value = self.sheet.set_index("patient").loc[patient, column]
        return (self.data / "sheets" / value).resolve()

    def cohort_of(self, patient: str) -> str:
        return self.sheet.set_index("patient").loc[patient, "cohort"]


def _build_sheet(tiny_cohort: Path, data: Path) -> pd.DataFrame:
    """Copy the patients used here into ``data`` and break six; return the sheet rows."""
    source = tiny_cohort.parent
    sheet = pd.read_csv(tiny_cohort, sep="\t", dtype=str, keep_default_na=False)
    keep = GOOD + [b.patient for b in BROKEN] + [EXCLUDED]
    sheet = sheet[sheet["patient"].isin(keep)].reset_index(drop=True)
    for cohort, patient in zip(sheet["cohort"], sheet["patient"], strict=True):
        shutil.copytree(source / cohort / patient, data / cohort / patient)
    rows = sheet.set_index("patient")
    for kind in BROKEN:
        original = data / rows.loc[kind.patient, kind.column]
        broken = original.parent / kind.name
        _break(kind, original, broken)
        rows.loc[kind.patient, kind.column] = broken.relative_to(data).as_posix()
    named = data / rows.loc["DEMO-A-001", "t1c"]
    _with_identifier(named, named.with_name("t1c_named.nii.gz"))
    rows.loc["DEMO-A-001", "t1c"] = named.with_name("t1c_named.nii.gz").relative_to(data).as_posix()
    rows.loc[EXCLUDED, ["t1w", "t1c", "t2w"]] = ""
    # The sheet lives in data/sheets: relative paths climb out with "..", SITE-C's are absolute.
    for column in ("t1w", "t1c", "t2w", "flair", "roi"):
        for patient in rows.index:
            value = rows.loc[patient, column]
            if not value:
                continue
            absolute = rows.loc[patient, "cohort"] == "SITE-C"
            rows.loc[patient, column] = str(data / value) if absolute else f"../{value}"
    return rows.reset_index()


def _targets(sheet: pd.DataFrame) -> list[str]:
    cohorts = sorted(set(sheet["cohort"]))
    included = sheet[sheet["patient"] != EXCLUDED]
    pairs = zip(included["cohort"], included["patient"], strict=True)
    return [
        "results/cohort/exclusions.tsv",
        *(f"results/shards/{c}" for c in cohorts),
        *(f"results/qc/{c}/{p}.png" for c, p in pairs),
    ]


@pytest.fixture(scope="session")
def bad_run(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> BadRun:
    """The workflow run once, up to the shards, under --keep-going on the broken cohort."""
    data = tmp_path_factory.mktemp("bad_inputs_data")
    sheet = _build_sheet(tiny_cohort, data)
    (data / "sheets").mkdir()
    sheet_path = data / "sheets" / "broken.tsv"
    sheet.to_csv(sheet_path, sep="\t", index=False)
    inputs_before = _snapshot(data)
    workdir = tmp_path_factory.mktemp("bad_inputs_run")
    write_config(workdir, sheet_path, preprocess=FAST)
    run = run_snakemake(workdir, "--keep-going", *_targets(sheet))
    return BadRun(workdir, data, sheet, inputs_before, run.stdout + run.stderr, run.returncode)


def test_run_fails_and_its_closing_message_lists_every_failure(bad_run: BadRun) -> None:
    assert bad_run.returncode != 0
    found = re.search(r"(\d+) patient\(s\) failed.*", bad_run.output, re.DOTALL)
    assert found, bad_run.output[-6000:]
    closing = found.group(0)
    assert int(found.group(1)) == len(BROKEN), closing
    assert "cohort(s) SITE-A, SITE-B need" in closing
    for kind in BROKEN:
        cohort = bad_run.cohort_of(kind.patient)
        assert f"{cohort}/{kind.patient} in {kind.rule}" in closing, closing
    assert not any(f"/{patient} in " in closing for patient in GOOD)


@pytest.mark.parametrize("kind", BROKEN, ids=[b.name for b in BROKEN])
def test_log_names_patient_column_and_file(bad_run: BadRun, kind: Breakage) -> None:
    cohort = bad_run.cohort_of(kind.patient)
    log = bad_run.workdir / "logs" / kind.rule / cohort / f"{kind.patient}.log"
    text = log.read_text()
    where = (
        f"patient {kind.patient!r}, column {kind.column!r}, "
        f"file {str(bad_run.path_of(kind.patient, kind.column))!r}: "
    )
    assert re.search(re.escape(where) + ".*" + kind.error, text), text[-3000:]
    assert "CRITICAL" in text  # the error itself, not only the step's progress lines


@pytest.mark.parametrize("kind", BROKEN, ids=[b.name for b in BROKEN])
def test_no_partial_output_of_a_failed_patient(bad_run: BadRun, kind: Breakage) -> None:
    results = bad_run.workdir / "results"
    where = {"cohort": bad_run.cohort_of(kind.patient), "patient": kind.patient}
    for pattern in [OUTPUTS_OF[kind.rule], *DOWNSTREAM]:
        path = bad_run.workdir / pattern.format(**where)
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        assert not [p for p in files if p.exists()], path
    # What a failed ROI leaves behind is the finished step before it, whole and readable.
    if kind.rule == "register_to_t1c":
        for image in (results / "n4" / where["cohort"] / kind.patient).iterdir():
            assert read_image(image).GetDimension() == 3


def test_no_temporary_file_left_anywhere(bad_run: BadRun) -> None:
    results = bad_run.workdir / "results"
    leftovers = [
        p
        for p in results.rglob("*")
        if (p.name.startswith(".") or ".tmp" in p.name) and p.name != ".snakemake_timestamp"
    ]
    assert leftovers == []


def test_good_patients_finish_and_only_whole_cohorts_get_shards(bad_run: BadRun) -> None:
    results = bad_run.workdir / "results"
    for patient in GOOD:
        cohort = bad_run.cohort_of(patient)
        assert (results / "crops" / cohort / f"{patient}.npz").is_file(), patient
        assert (results / "qc" / cohort / f"{patient}.png").is_file(), patient
    table = pq.read_table(results / "shards" / "SITE-C")
    assert set(table.column("patient").to_pylist()) == {"DEMO-C-001"}
    # A cohort with a failed patient gets no shards: never silently trained on without it.
    assert not (results / "shards" / "SITE-A").exists()
    assert not (results / "shards" / "SITE-B").exists()


def test_empty_cell_excludes_with_a_reason_and_failures_are_not_excluded(bad_run: BadRun) -> None:
    exclusions = pd.read_csv(
        bad_run.workdir / "results" / "cohort" / "exclusions.tsv", sep="\t", dtype=str
    ).set_index("patient")
    assert exclusions.loc[EXCLUDED, "scope"] == "all"
    assert exclusions.loc[EXCLUDED, "reason"].startswith("only flair: needs the ROI's sequence")
    assert not set(exclusions.index) & {b.patient for b in BROKEN}
    assert not list((bad_run.workdir / "logs").glob(f"*/*/{EXCLUDED}.log"))


def test_writes_stay_under_results_and_logs(bad_run: BadRun) -> None:
    """The sheet reaches its images through '..' and absolute paths; nothing is written there."""
    assert _snapshot(bad_run.data) == bad_run.inputs_before
    allowed = {"results", "logs", ".snakemake", "config.yaml"}
    assert {p.name for p in bad_run.workdir.iterdir()} <= allowed


def test_no_header_identifier_reaches_outputs(bad_run: BadRun) -> None:
    results = bad_run.workdir / "results"
    outputs = [p for p in results.rglob("*") if p.is_file()]
    assert any("DEMO-A-001" in str(p) for p in outputs)
    for path in outputs:
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        assert IDENTIFIER not in data, path


def test_missing_file_stops_the_run_before_anything_runs(bad_run: BadRun, tmp_path: Path) -> None:
    sheet = bad_run.sheet.copy()
    row = sheet.index[sheet["patient"] == GOOD[0]][0]
    sheet.loc[row, "flair"] = "../SITE-A/DEMO-A-001/flair_moved.nii.gz"
    sheet_path = bad_run.data / "sheets" / "missing.tsv"
    sheet.to_csv(sheet_path, sep="\t", index=False)
    write_config(tmp_path, sheet_path)
    run = run_snakemake(tmp_path)
    message = run.stdout + run.stderr
    assert run.returncode != 0
    assert (
        f"line {row + 2}, patient {GOOD[0]!r}, column 'flair', "
        "value '../SITE-A/DEMO-A-001/flair_moved.nii.gz': file not found"
    ) in message, message[-3000:]
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


def test_every_job_writes_under_results_or_logs_and_runs_no_shell(bad_run: BadRun) -> None:
    dry = run_snakemake(bad_run.workdir, "--dry-run", "--forceall")
    log = dry.stdout + dry.stderr
    assert dry.returncode == 0, log[-3000:]
    assert len(planned_jobs(log)) > 20
    paths = re.findall(r"^    (?:output|log|benchmark): (.*)$", log, re.MULTILINE)
    assert paths
    for path in (p for line in paths for p in line.split(", ")):
        assert path.startswith(("results/", "logs/")) and ".." not in path, path
    commands = re.findall(r"^Shell command: (.*)$", log, re.MULTILINE)
    assert commands and set(commands) == {"None"}


@pytest.mark.parametrize(
    "target",
    ["results/crops/SITE-A/a;b.npz", "results/qc/SITE-A/$(touch x).png", "results/../../x.npz"],
)
def test_unsafe_target_matches_no_rule(bad_run: BadRun, target: str) -> None:
    dry = run_snakemake(bad_run.workdir, "--dry-run", target)
    assert dry.returncode != 0
    assert "No rule to produce" in dry.stdout + dry.stderr
