# Reports: the cohort's Table 1 and the run's one self-contained HTML page.
rule make_table1:
    input:
        sheet=SHEET,
    output:
        tsv=report(
            "results/cohort/table1.tsv",
            caption="../report/table1.rst",
            category="Cohort",
            labels={"table": "Table 1"},
        ),
        md="results/cohort/table1.md",
    log:
        "logs/make_table1.log",
    benchmark:
        "results/benchmarks/make_table1.tsv"
    conda:
        "../envs/workflow.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow_scripts/make_table1.py"


rule render_report:
    input:
        sheet=SHEET,
        exclusions=EXCLUSIONS,
        table1="results/cohort/table1.tsv",
        splits="results/splits.tsv",
        history=trained_models()["history"],
        model_config=trained_models()["config"],
        metrics="results/metrics/metrics.json",
        predictions="results/predictions/predictions.csv",
        folds="results/metrics/table_folds.tsv",
        ablation="results/metrics/ablation.tsv",
        roc=expand("results/metrics/roc_{split}.png", split=EVAL_SPLITS),
        confusion=expand("results/metrics/confusion_{split}.png", split=EVAL_SPLITS),
        calibration=expand("results/metrics/calibration_{split}.png", split=EVAL_SPLITS),
        uncertainty=expand("results/metrics/uncertainty_{split}.png", split=EVAL_SPLITS),
        folds_figure=["results/metrics/folds.png"] if FOLDS else [],
        qc=per_patient("results/qc/{cohort}/{patient}.png"),
        bundle=BUNDLE_DIR,
        saliency=expand("results/saliency/{cohort}", cohort=cohorts()),
    output:
        html=report(
            "results/report.html",
            caption="../report/report_html.rst",
            category="Evaluation",
            labels={"figure": "HTML report"},
        ),
        curves=report(
            "results/report/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
            labels={"figure": "training curves"},
        ),
    log:
        "logs/render_report.log",
    benchmark:
        "results/benchmarks/render_report.tsv"
    conda:
        "../envs/workflow.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        config=config,
    script:
        "../workflow_scripts/render_report.py"


rule render_patient_pages:
    input:
        predictions="results/predictions/predictions.csv",
        splits="results/splits.tsv",
        sheet=SHEET,
        qc=qc_of_cohort,
        saliency="results/saliency/{cohort}",
        bundle=BUNDLE_DIR,
    output:
        directory("results/patients/{cohort}"),
    log:
        "logs/render_patient_pages/{cohort}.log",
    benchmark:
        "results/benchmarks/render_patient_pages/{cohort}.tsv"
    conda:
        "../envs/workflow.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        review_entropy=config["evaluate"]["review_entropy"],
    script:
        "../workflow_scripts/render_patient_pages.py"
