# Cohort-level rules: the validated sample sheet and the exclusions table.


rule check_samples:
    input:
        config["samples"],
    output:
        samples=SHEET,
        exclusions=EXCLUSIONS,
    log:
        "logs/check_samples.log",
    benchmark:
        "results/benchmarks/check_samples.tsv"
    conda:
        "../envs/workflow.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        min_age_exclusive=config["inclusion"]["min_age_exclusive"],
        missing_sequences=config["inclusion"]["missing_sequences"],
    script:
        "../workflow_scripts/check_samples.py"
