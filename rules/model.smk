# Classifier: train on the shards of every included cohort, predict every patient, evaluate.
# One split: train_classifier fits one model (results/model/), predict_slices predicts with it.
# Cross-validation (split.folds, or leave-one-cohort-out): make_fold_split writes each fold's
# manifest, train_fold fits one model per fold (results/model/folds/{fold}/, separate jobs that
# run in parallel or as separate GPU jobs), predict_fold predicts every patient with it, and
# ensemble_predictions keeps each development patient's out-of-fold prediction and averages the
# folds for test and unlabelled patients (glioma.model.ensemble).
# Training uses the GPUs the job sees: one process, or one per GPU under torchrun (DDP) when it
# sees several (model.processes 0; glioma.model.launch decides inside the job). Clusters ask for
# GPUs in the profile (`gpu` for train_classifier), not here, so that a workstation without a
# GPU still schedules it; the job's threads are shared among the processes. fit_baseline fits a
# logistic regression on first-order slice features of the same shards and split, and
# evaluate_model scores it beside the network.
from glioma.model.identity import training_identity

FOLDS = fold_ids()
EVAL_SPLITS = eval_splits()


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
        "../envs/workflow.yaml"
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


rule predict_fold:
    input:
        shards=expand("results/shards/{cohort}", cohort=cohorts()),
        splits="results/splits.tsv",
        model="results/model/folds/{fold}/best.pt",
    output:
        slices="results/model/folds/{fold}/slices.parquet",
        patients="results/model/folds/{fold}/predictions.csv",
    log:
        "logs/predict_fold/{fold}.log",
    benchmark:
        "results/benchmarks/predict_fold/{fold}.tsv"
    conda:
        "../envs/workflow.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        model_name=fold_model_name,
        review_entropy=config["evaluate"]["review_entropy"],
    script:
        "../workflow_scripts/predict_slices.py"


rule make_fold_split:
    input:
        "results/splits.tsv",
    output:
        "results/model/folds/{fold}/splits.tsv",
    log:
        "logs/make_fold_split/{fold}.log",
    benchmark:
        "results/benchmarks/make_fold_split/{fold}.tsv"
    conda:
        "../envs/workflow.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        ratios=config["split"]["ratios"],
        method=config["split"]["method"],
        strata=config["split"]["strata"],
        seed=config["seed"],
    script:
        "../workflow_scripts/make_fold_split.py"


use rule train_classifier as train_fold with:
    input:
        shards=expand("results/shards/{cohort}", cohort=cohorts()),
        splits="results/model/folds/{fold}/splits.tsv",
        weights=config["model"]["pretrained_weights"] or [],
    output:
        best="results/model/folds/{fold}/best.pt",
        last="results/model/folds/{fold}/last.pt",
        history="results/model/folds/{fold}/history.csv",
        config="results/model/folds/{fold}/config.yaml",
    log:
        "logs/train_fold/{fold}.log",
    benchmark:
        "results/benchmarks/train_fold/{fold}.tsv"
    params:
        state=fold_file("resume_state.pt"),
        trained_with=training_identity(config),


if BUNDLE:

    rule predict_with_bundle:
        input:
            shards=expand("results/shards/{cohort}", cohort=cohorts()),
            splits="results/splits.tsv",
            bundle=BUNDLE_DIR,
        output:
            slices="results/predictions/slices.parquet",
            patients="results/predictions/predictions.csv",
        log:
            "logs/predict_with_bundle.log",
        benchmark:
            "results/benchmarks/predict_with_bundle.tsv"
        conda:
            "../envs/workflow.yaml"
        threads: 4
        resources:
            mem_mb=8000,
            runtime=120,
        params:
            bundle_id=BUNDLE["id"],
            batch_size=config["model"]["batch_size"],
            review_entropy=config["evaluate"]["review_entropy"],
        script:
            "../workflow_scripts/predict_with_bundle.py"

elif FOLDS:

    rule ensemble_predictions:
        input:
            folds=expand("results/model/folds/{fold}/slices.parquet", fold=FOLDS),
            splits="results/splits.tsv",
        output:
            slices="results/predictions/slices.parquet",
            patients="results/predictions/predictions.csv",
        log:
            "logs/ensemble_predictions.log",
        benchmark:
            "results/benchmarks/ensemble_predictions.tsv"
        conda:
            "../envs/workflow.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=30,
        params:
            folds=FOLDS,
            review_entropy=config["evaluate"]["review_entropy"],
        script:
            "../workflow_scripts/ensemble_predictions.py"

else:

    use rule predict_fold as predict_slices with:
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
        params:
            model_name="single",
            review_entropy=config["evaluate"]["review_entropy"],


rule fit_baseline:
    input:
        shards=expand("results/shards/{cohort}", cohort=cohorts()),
        splits="results/splits.tsv",
        # Under cross-validation the baseline is fitted per fold, like the network.
        folds=expand("results/model/folds/{fold}/splits.tsv", fold=FOLDS),
    output:
        slices="results/baseline/slices.parquet",
        patients="results/baseline/predictions.csv",
        model="results/baseline/model.json",
    log:
        "logs/fit_baseline.log",
    benchmark:
        "results/benchmarks/fit_baseline.tsv"
    conda:
        "../envs/workflow.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        # Read by the script from the config; named here so that changing them reruns it.
        baseline=config["baseline"],
        seed=config["seed"],
        ratios=config["split"]["ratios"],
        folds=FOLDS,
    script:
        "../workflow_scripts/fit_baseline.py"


rule evaluate_model:
    input:
        slices="results/predictions/slices.parquet",
        predictions="results/predictions/predictions.csv",
        splits="results/splits.tsv",
        sheet=SHEET,
        # A prediction-only run fits no baseline (it would train on the external patients).
        baseline=[] if BUNDLE else "results/baseline/slices.parquet",
    output:
        metrics="results/metrics/metrics.json",
        table_patient="results/metrics/table2_patient.tsv",
        table_slice="results/metrics/table2_slice.tsv",
        table_baseline="results/metrics/table2_baseline_patient.tsv",
        table_folds="results/metrics/table_folds.tsv",
        table_availability="results/metrics/table_availability.tsv",
        roc=split_figures("roc", "ROC curves", "../report/roc.rst"),
        confusion=split_figures(
            "confusion", "Confusion matrices", "../report/confusion.rst"
        ),
        calibration=split_figures(
            "calibration", "Calibration", "../report/calibration.rst"
        ),
        uncertainty=split_figures(
            "uncertainty", "Uncertainty", "../report/uncertainty.rst"
        ),
        folds_figure=(
            [
                report(
                    "results/metrics/folds.png",
                    caption="../report/folds.rst",
                    category="Evaluation",
                    subcategory="Cross-validation",
                    labels={"figure": "per-fold AUC"},
                )
            ]
            if FOLDS
            else []
        ),
    log:
        "logs/evaluate_model.log",
    benchmark:
        "results/benchmarks/evaluate_model.tsv"
    conda:
        "../envs/workflow.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        splits=EVAL_SPLITS,
        bootstrap=config["evaluate"]["bootstrap"],
        review_entropy=config["evaluate"]["review_entropy"],
        calibration_bins=config["evaluate"]["calibration_bins"],
        seed=config["seed"],
        temperature=BUNDLE["temperature"] if BUNDLE else None,
    script:
        "../workflow_scripts/evaluate_model.py"


rule write_bundle:
    input:
        models=list(bundle_models().values()),
        history=trained_models()["history"],
        model_config=trained_models()["config"],
        splits="results/splits.tsv",
        metrics="results/metrics/metrics.json",
    output:
        directory("results/bundle"),
    log:
        "logs/write_bundle.log",
    benchmark:
        "results/benchmarks/write_bundle.tsv"
    conda:
        "../envs/workflow.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        names=list(bundle_models()),
    script:
        "../workflow_scripts/write_bundle.py"


rule explain_predictions:
    input:
        shards="results/shards/{cohort}",
        predictions="results/predictions/predictions.csv",
        bundle=BUNDLE_DIR,
    output:
        directory("results/saliency/{cohort}"),
    log:
        "logs/explain_predictions/{cohort}.log",
    benchmark:
        "results/benchmarks/explain_predictions/{cohort}.tsv"
    conda:
        "../envs/workflow.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        saliency=config["saliency"],
        seed=config["seed"],
    script:
        "../workflow_scripts/explain_predictions.py"
