# Glioma molecular classification from MRI (IDHwt / IDHmut-codel / IDHmut-intact), leakage-free.
# Usage: snakemake --cores 16 [--config samples=path/to/samples.tsv]; see README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


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
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        final_targets(),
