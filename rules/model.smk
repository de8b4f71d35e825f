# Classifier: train on the shards of every included cohort, predict every patient, evaluate.
# Training uses the GPUs the job sees: one process, or one per GPU under torchrun (DDP) when it
# sees several (model.processes 0; glioma.model.launch decides inside the job). Clusters ask for
# GPUs in the profile (`gpu` for train_classifier), not here, so that a workstation without a
# GPU still schedules it; the job's threads are shared among the processes. fit_baseline fits a
# logistic regression on first-order slice features of the same shards and split, and
# evaluate_model scores it beside the network.
from glioma.constants import SPLITS
from glioma.model.identity import training_identity


rule train_classifier:
    input:
        shards=expand("results/shards/{cohort}", cohort=cohorts()),
        splits="results/splits.tsv",
        weights=config["model"]["pretrained_weights"] or [],
    output:
        best="results/model/best.pt",
        last="results/model/last.pt",
        history=report(
            "results/model/history.csv",
            caption="../report/history.rst",
            category="Training",
            labels={"table": "training history"},
        ),
        config="results/model/config.yaml",
    log:
        "logs/train_classifier.log",
    benchmark:
        "results/benchmarks/train_classifier.tsv"
    conda:
        "../envs/model.yaml"
    threads: 8
    resources:
        mem_mb=16000,
        runtime=720,
    params:
        # Per-epoch resumable state, outside the outputs: Snakemake deletes a failed job's
        # outputs, and a rerun continues from this file when settings and data are unchanged.
        state="results/model/resume_state.pt",
        # Every setting that changes the trained model (not workers or process count), so
        # that changing one retrains; the script reads the same values from the config.
        trained_with=training_identity(config),
    script:
        "../workflow_scripts/train_classifier.py"


rule predict_slices:
    input:
        shards=expand("results/shards/{cohort}", cohort=cohorts()),
        splits="results/splits.tsv",
        model="results/model/best.pt",
    output:
        slices="results/predictions/slices.parquet",
        patients="results/predictions/predictions.csv",
    log:
        "logs/predict_slices.log",
    benchmark:
        "results/benchmarks/predict_slices.tsv"
    conda:
        "../envs/model.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=120,
    script:
        "../workflow_scripts/predict_slices.py"


rule fit_baseline:
    input:
        shards=expand("results/shards/{cohort}", cohort=cohorts()),
        splits="results/splits.tsv",
    output:
        slices="results/baseline/slices.parquet",
        patients="results/baseline/predictions.csv",
        model="results/baseline/model.json",
    log:
        "logs/fit_baseline.log",
    benchmark:
        "results/benchmarks/fit_baseline.tsv"
    conda:
        "../envs/model.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        # Read by the script from the config; named here so that changing them reruns it.
        baseline=config["baseline"],
        seed=config["seed"],
        ratios=config["split"]["ratios"],
    script:
        "../workflow_scripts/fit_baseline.py"


rule evaluate_model:
    input:
        slices="results/predictions/slices.parquet",
        predictions="results/predictions/predictions.csv",
        splits="results/splits.tsv",
        baseline="results/baseline/slices.parquet",
    output:
        metrics="results/metrics/metrics.json",
        table_patient="results/metrics/table2_patient.tsv",
        table_slice="results/metrics/table2_slice.tsv",
        table_baseline="results/metrics/table2_baseline_patient.tsv",
        roc=[
            report(
                f"results/metrics/roc_{split}.png",
                caption="../report/roc.rst",
                category="Evaluation",
                subcategory="ROC curves",
                labels={"figure": "ROC", "split": split},
            )
            for split in SPLITS
        ],
        confusion=[
            report(
                f"results/metrics/confusion_{split}.png",
                caption="../report/confusion.rst",
                category="Evaluation",
                subcategory="Confusion matrices",
                labels={"figure": "confusion matrix", "split": split},
            )
            for split in SPLITS
        ],
    log:
        "logs/evaluate_model.log",
    benchmark:
        "results/benchmarks/evaluate_model.tsv"
    conda:
        "../envs/model.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        bootstrap=config["evaluate"]["bootstrap"],
        aggregate=config["evaluate"]["aggregate"],
        seed=config["seed"],
    script:
        "../workflow_scripts/evaluate_model.py"
