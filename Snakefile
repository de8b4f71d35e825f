# Glioma molecular classification from MRI (IDHwt / IDHmut-codel / IDHmut-intact), leakage-free.
# Usage: snakemake --cores 16 [--config samples=path/to/samples.tsv]; see README.md.
import os

from snakemake.utils import min_version

min_version("9.0")


# The working directory's config.yaml, else the repository's: a run in another folder
# (`--directory`, e.g. predicting new patients beside a training run) needs no copy of it.
configfile:
    "config.yaml"
    if os.path.exists("config.yaml")
    else os.path.join(workflow.basedir, "config.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"


# IDs become path components: only safe IDs (validated in the sheet) may match.
wildcard_constraints:
    cohort=SAFE_ID,
    patient=SAFE_ID,


include: "rules/cohort.smk"
include: "rules/preprocess.smk"
include: "rules/dataset.smk"
include: "rules/model.smk"
include: "rules/ablation.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        final_targets(),
