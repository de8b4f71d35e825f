# Validation, sample sheet, input functions and wildcard constraints shared by every stage.
import os
import sys
import time
from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import validate

LIBRARY = str(Path(workflow.basedir) / "workflow_scripts")
sys.path.insert(0, LIBRARY)
# Rule scripts run in their own interpreters (locally or on a cluster node, which inherits the
# environment) and must import this workflow's library, not another copy installed in the venv
# (Snakemake appends the script folder to sys.path, after site-packages).
os.environ.update(
    PYTHONPATH=os.pathsep.join([LIBRARY, *filter(None, [os.environ.get("PYTHONPATH")])])
)

from glioma.constants import SAFE_ID, SEQUENCES  # noqa: E402
from glioma.failures import failure_report, find_failures  # noqa: E402
from glioma.model import bundle as model_bundle  # noqa: E402
from glioma.preprocess import extractor_input  # noqa: E402
from glioma.samples import IMAGE_COLUMNS, validate_sheet  # noqa: E402

validate(config, "../schemas/config.schema.yaml")

#: A prediction-only run's model bundle (predict.bundle), checked now so that a tampered or
#: incompatible bundle fails before any preprocessing; its input settings replace config.yaml's.
BUNDLE = None
if config["predict"]["bundle"]:
    BUNDLE = model_bundle.verify(config["predict"]["bundle"])
    _changed = model_bundle.apply_settings(
        config, workflow.config_settings.overwrite_config, BUNDLE
    )
    logger.info(
        f"predicting with model bundle {BUNDLE['id'][:12]} ({', '.join(BUNDLE['models'])}); "
        f"settings from the bundle: {', '.join(_changed) or 'none differ from config.yaml'}"
    )
#: The bundle a run's pages and saliency maps use: the one given, or the one this run writes.
BUNDLE_DIR = BUNDLE["path"] if BUNDLE else "results/bundle"

SHEET_RESULT = validate_sheet(
    config["samples"],
    min_age_exclusive=config["inclusion"]["min_age_exclusive"],
    missing_sequences=config["inclusion"]["missing_sequences"],
)
validate(SHEET_RESULT.included, "../schemas/samples.schema.yaml")
SAMPLES = SHEET_RESULT.included.set_index(
    ["cohort", "patient"], drop=False
).sort_index()
# Plain dicts for the input functions: a pandas .loc per job costs ~1 ms, which adds up to
# seconds of DAG building at thousands of patients (benchmarks/dataset.md).
_ROWS = dict(zip(SAMPLES.index, SAMPLES.to_dict("records")))
_PATIENTS_OF = (
    SHEET_RESULT.included.groupby("cohort")["patient"].apply(sorted).to_dict()
)

#: When this run started: the closing message of a failed run names this run's failures only.
RUN_STARTED = time.time()

#: Validated sheet of included patients (absolute paths, class column) and exclusions table.
SHEET = "results/cohort/samples.tsv"
EXCLUSIONS = "results/cohort/exclusions.tsv"


def _row(wildcards):
    """The sheet row of one patient."""
    return _ROWS[(wildcards.cohort, wildcards.patient)]


def raw_inputs(wildcards):
    """Absolute paths of a patient's raw images: the sequences it has (of t1w, t1c, t2w,
    flair; an empty cell was not acquired) and roi."""
    row = _row(wildcards)
    return {column: row[column] for column in IMAGE_COLUMNS if row[column]}


def raw_sequences(wildcards):
    """Raw image paths of a patient's sequences (the ROI left out: N4 does not read it)."""
    paths = raw_inputs(wildcards)
    return {sequence: paths[sequence] for sequence in SEQUENCES if sequence in paths}


def present_of(wildcards):
    """The sequences a patient has, in channel order."""
    row = _row(wildcards)
    return [sequence for sequence in SEQUENCES if row[sequence]]


def brain_source(wildcards):
    """The sequence a patient's brain extractor reads (glioma.preprocess.extractor_input)."""
    return extractor_input(
        config["preprocess"]["brain_extraction"]["input"],
        present_of(wildcards),
        config["preprocess"]["registration"]["reference"],
    )


def raw_roi(wildcards):
    """Raw ROI path of a patient."""
    return raw_inputs(wildcards)["roi"]


def roi_on(wildcards):
    """The sequence a patient's ROI was drawn on."""
    return _row(wildcards)["roi_on"]


def brain_input(wildcards):
    """The registered image a patient's brain extractor reads (step mode)."""
    return (
        f"results/registered/{wildcards.cohort}/{wildcards.patient}/"
        f"{brain_source(wildcards)}.nii.gz"
    )


def _cohort_override(wildcards, step):
    """A cohort's override of one preprocessing step (preprocess.per_cohort), or None."""
    return config["preprocess"]["per_cohort"].get(wildcards.cohort, {}).get(step)


def registration_settings(wildcards):
    """Registration settings of a patient's cohort (per-cohort override applied)."""
    settings = dict(config["preprocess"]["registration"])
    settings["transform"] = (
        _cohort_override(wildcards, "registration") or settings["transform"]
    )
    return settings


def brain_extraction_settings(wildcards):
    """Brain extraction settings of a patient's cohort (per-cohort override applied)."""
    settings = dict(config["preprocess"]["brain_extraction"])
    settings["method"] = (
        _cohort_override(wildcards, "brain_extraction") or settings["method"]
    )
    return settings


def cohorts():
    """Cohorts with at least one included patient, sorted."""
    return sorted(_PATIENTS_OF)


def patients_of(cohort):
    """Included patients of one cohort, sorted."""
    return _PATIENTS_OF.get(cohort, [])


def classes_of(wildcards):
    """Class of each included patient of one cohort ("" when unlabelled)."""
    return {
        patient: _ROWS[(wildcards.cohort, patient)]["class"]
        for patient in patients_of(wildcards.cohort)
    }


def labelled_cohorts():
    """Cohorts with at least one labelled included patient, sorted."""
    return sorted({c for (c, _), row in _ROWS.items() if row["class"]})


def fold_ids():
    """The cross-validation folds: "0".."K-1" (split.folds K), the labelled cohorts
    (split.level cohort without test_cohorts: leave-one-cohort-out), or none (one split,
    or a prediction-only run).
    """
    if BUNDLE:
        return []
    split = config["split"]
    if split["level"] == "cohort" and not split["test_cohorts"]:
        return labelled_cohorts()
    return [str(k) for k in range(split["folds"])]


def eval_splits():
    """The splits scored: cv (out-of-fold) and test under cross-validation, else
    train, val and test; leave-one-cohort-out has no test split; a prediction-only run
    scores its labelled (external) patients."""
    if BUNDLE:
        return ["external"]
    if not fold_ids():
        return ["train", "val", "test"]
    split = config["split"]
    return (
        ["cv"]
        if split["level"] == "cohort" and not split["test_cohorts"]
        else ["cv", "test"]
    )


def fold_file(name):
    """An input function giving results/model/folds/{fold}/<name> for a job's fold."""

    def path(wildcards):
        return f"results/model/folds/{wildcards.fold}/{name}"

    return path


def fold_model_name(wildcards):
    """The predictions' model column of one fold's model (glioma.model.ensemble.fold_model)."""
    return f"fold-{wildcards.fold}"


def trained_models():
    """The history and saved config of every trained model (one, or one per fold), or of
    the bundle's models in a prediction-only run."""
    if BUNDLE:
        return {
            "history": list(
                map(str, model_bundle.model_paths(BUNDLE, "history.csv").values())
            ),
            "config": f"{BUNDLE_DIR}/config.yaml",
        }
    folds = fold_ids()
    if not folds:
        return {
            "history": ["results/model/history.csv"],
            "config": "results/model/config.yaml",
        }
    return {
        "history": expand("results/model/folds/{fold}/history.csv", fold=folds),
        "config": f"results/model/folds/{folds[0]}/config.yaml",
    }


def split_figures(kind, subcategory, caption):
    """results/metrics/<kind>_<split>.png of every scored split, as report items."""
    return [
        _evaluation_item(
            f"results/metrics/{kind}_{split}.png", caption, subcategory, split
        )
        for split in eval_splits()
    ]


def _evaluation_item(path, caption, subcategory, split):
    """One figure of the Evaluation category of Snakemake's --report."""
    # (A line starting with `report(` reads as a directive to snakefmt.)
    return report(
        path,
        caption=caption,
        category="Evaluation",
        subcategory=subcategory,
        labels={"figure": Path(path).stem.rsplit("_", 1)[0], "split": split},
    )


def per_patient(pattern):
    """Expand a path pattern with {cohort} and {patient} over every included patient."""
    return [
        pattern.format(cohort=cohort, patient=patient)
        for cohort, patient in zip(SAMPLES["cohort"], SAMPLES["patient"])
    ]


def crops_of_cohort(wildcards):
    """The per-patient slice stacks of one cohort."""
    return [
        f"results/crops/{wildcards.cohort}/{patient}.npz"
        for patient in patients_of(wildcards.cohort)
    ]


def bundle_models():
    """Model name -> best.pt of the models a training run bundles (one, or one per fold)."""
    folds = fold_ids()
    if not folds:
        return {"single": "results/model/best.pt"}
    return {f"fold-{fold}": f"results/model/folds/{fold}/best.pt" for fold in folds}


def qc_of_cohort(wildcards):
    """The QC pictures of one cohort's patients."""
    return [
        f"results/qc/{wildcards.cohort}/{patient}.png"
        for patient in patients_of(wildcards.cohort)
    ]


def final_targets():
    """The default targets: QC pictures, tables, metrics, predictions, the model bundle (of a
    training run), a page and a saliency picture per patient, and the HTML report."""
    return [
        SHEET,
        EXCLUSIONS,
        *per_patient("results/qc/{cohort}/{patient}.png"),
        "results/cohort/table1.md",
        "results/metrics/metrics.json",
        "results/predictions/predictions.csv",
        *([] if BUNDLE else ["results/bundle"]),
        *expand("results/patients/{cohort}", cohort=cohorts()),
        "results/report.html",
    ]


# Under --keep-going the failed patients' errors are scattered through the output; close with
# one list of them, and of the cohorts whose shards wait for them (glioma.failures).
onerror:
    message = failure_report(find_failures("logs", _ROWS, since=RUN_STARTED))
    if message:
        logger.error(message)
