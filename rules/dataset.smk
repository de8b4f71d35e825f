# Slice dataset: per-cohort Parquet shards and the split manifest (docs/architecture.md).
#
# build_shards takes the cohort's classes as a param, not the validated sheet as an input: the
# sheet is rewritten whenever any cohort is added, which would rebuild every cohort's shards.
# (Marking the sheet ancient() avoided that, but Snakemake 9.27 then drops the new cohort's
# build_shards and per-patient jobs from the DAG whenever check_samples is to rerun.) Relabelling
# a patient changes the param and rebuilds that cohort's shards only; its crops or the
# preprocessing config changing does too.

# The same function as glioma.dataset.shards.preprocess_hash, from a module that imports only
# the standard library: importing shards (pyarrow) would slow every DAG build.
from glioma.dataset.hashing import preprocess_hash
from glioma.dataset.splits import check_split_config

# Bad ratios or test cohorts fail now, not after hours of preprocessing.
check_split_config(config["split"], cohorts())


rule build_shards:
    input:
        crops=crops_of_cohort,
    output:
        directory("results/shards/{cohort}"),
    log:
        "logs/build_shards/{cohort}.log",
    benchmark:
        "results/benchmarks/build_shards/{cohort}.tsv"
    conda:
        "../envs/workflow.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        preprocess_hash=preprocess_hash(config["preprocess"]),
        classes=classes_of,
        image_size=config["preprocess"]["crop"]["size"],
    script:
        "../workflow_scripts/build_shards.py"


if BUNDLE:

    # A prediction-only run draws no split: labelled patients are an external test.
    rule list_external_patients:
        input:
            sheet=SHEET,
        output:
            "results/splits.tsv",
        log:
            "logs/list_external_patients.log",
        benchmark:
            "results/benchmarks/list_external_patients.tsv"
        conda:
            "../envs/workflow.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        script:
            "../workflow_scripts/list_external_patients.py"

else:

    rule make_splits:
        input:
            sheet=SHEET,
        output:
            "results/splits.tsv",
        log:
            "logs/make_splits/make_splits.log",
        benchmark:
            "results/benchmarks/make_splits/make_splits.tsv"
        conda:
            "../envs/workflow.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        params:
            level=config["split"]["level"],
            method=config["split"]["method"],
            strata=config["split"]["strata"],
            ratios=config["split"]["ratios"],
            seed=config["seed"],
            test_cohorts=config["split"]["test_cohorts"],
            folds=config["split"]["folds"],
        script:
            "../workflow_scripts/make_splits.py"
