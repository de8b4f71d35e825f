# Sequence ablation (#16): every labelled patient of the scored split predicted by the model
# bundle with all its sequences, then with each sequence hidden in turn (its channel NaN in
# every slice, as a patient who lacks it); the change in patient-level macro AUC, with a paired
# bootstrap interval, says what each sequence is worth to the model (glioma.model.ablation).
# A training run ablates its test patients with the bundle it writes, a prediction-only run its
# external patients with the bundle given. Leave-one-cohort-out has no test split: the table
# then holds NaN and the log says why.


rule ablate_sequences:
    input:
        shards=expand("results/shards/{cohort}", cohort=cohorts()),
        splits="results/splits.tsv",
        bundle=BUNDLE_DIR,
    output:
        "results/metrics/ablation.tsv",
    log:
        "logs/ablate_sequences.log",
    benchmark:
        "results/benchmarks/ablate_sequences.tsv"
    conda:
        "../envs/workflow.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        split="external" if BUNDLE else "test",
        bundle_id=BUNDLE["id"] if BUNDLE else "",
        bootstrap=config["evaluate"]["bootstrap"],
        seed=config["seed"],
        batch_size=config["model"]["batch_size"],
    script:
        "../workflow_scripts/ablate_sequences.py"
