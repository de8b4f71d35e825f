"""Names shared by every stage: classes, sequences, safe identifiers."""

import re

#: Model output order of the WHO-2021 molecular classes.
CLASSES: tuple[str, ...] = ("IDHwt", "IDHmut-codel", "IDHmut-intact")

#: Channel order of the four MRI sequences.
SEQUENCES: tuple[str, ...] = ("t1w", "t1c", "t2w", "flair")

#: Pattern a patient or cohort ID must match in full (no path separators, no shell syntax).
SAFE_ID = r"[A-Za-z0-9][A-Za-z0-9_-]*"
SAFE_ID_RE = re.compile(SAFE_ID)

#: Split names in ``results/splits.tsv``.
SPLITS: tuple[str, ...] = ("train", "val", "test")
UNLABELLED_SPLIT = "unlabelled"
#: Split of the development patients under cross-validation: each is predicted by the one fold
#: model that did not see it (its ``fold`` column says which).
CV_SPLIT = "cv"
#: Split of the labelled patients of a prediction-only run (``predict.bundle``): an external
#: test of a frozen model that never saw them.
EXTERNAL_SPLIT = "external"
#: Splits that metrics are reported on, in report order (single split, cross-validation, or a
#: prediction-only run's external patients).
EVAL_SPLITS: tuple[str, ...] = ("train", "val", CV_SPLIT, "test", EXTERNAL_SPLIT)

#: Columns of ``results/model/history.csv``, one row per epoch; ``lr`` is the learning rate at
#: the start of the epoch (it changes every step), ``seconds`` the epoch's training time.
HISTORY_COLUMNS = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_slice_macro_auc",
    "val_patient_macro_auc",
    "lr",
    "seconds",
)


#: Columns of ``results/metrics/ablation.tsv`` (rule ablate_sequences), one row per sequence
#: in :data:`SEQUENCES` order: each sequence hidden at test time in turn.
ABLATION_COLUMNS = (
    "sequence",
    "n_patients",
    "n_lacking",
    "macro_auc_all",
    "macro_auc_without",
    "delta_auc",
    "ci_low",
    "ci_high",
    "bootstrap",
)
#: ``missing`` of metrics.json's ``availability`` rows of patients that have every sequence.
COMPLETE_PATTERN = "none"


def class_index(name: str) -> int:
    """Return the model output index of a class name, or -1 for an empty (unlabelled) name."""
    return CLASSES.index(name) if name else -1
