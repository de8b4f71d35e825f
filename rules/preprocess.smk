# Per-patient preprocessing (docs/architecture.md): N4 -> rigid registration to T1c -> brain
# extraction -> normalisation -> ROI crop, and a QC picture. Steps that change results take their
# config section as params, so a config change reruns what it affects. A sequence that was not
# acquired (inclusion.missing_sequences: allow) keeps its file at every stage as a stand-in (all
# NaN on the patient's grid, glioma.io.write_absent); a patient without T1c is registered to its
# first present sequence of preprocess.registration.reference (the rule keeps its name).
#
# preprocess.jobs picks how the steps become jobs. `patient` (default): one job per patient (rule
# preprocess_patient) running every step in one process and writing the same files. `step`: one
# rule per step, so each step is cached, benchmarked and rerun on its own (a crop setting reruns
# only the crop). Snakemake's dry run costs a few ms per job (benchmarks/dataset.md), so
# six jobs per patient is what makes the DAG slow at thousands of patients; one job also starts
# Python once instead of six times.

PREPROCESS = config["preprocess"]


if PREPROCESS["jobs"] == "step":

    rule correct_bias:
        input:
            unpack(raw_sequences),
        output:
            t1w="results/n4/{cohort}/{patient}/t1w.nii.gz",
            t1c="results/n4/{cohort}/{patient}/t1c.nii.gz",
            t2w="results/n4/{cohort}/{patient}/t2w.nii.gz",
            flair="results/n4/{cohort}/{patient}/flair.nii.gz",
        log:
            "logs/correct_bias/{cohort}/{patient}.log",
        benchmark:
            "results/benchmarks/correct_bias/{cohort}/{patient}.tsv"
        conda:
            "../envs/workflow.yaml"
        threads: 2
        resources:
            mem_mb=2500,
            runtime=20,
        params:
            n4=PREPROCESS["n4"],
        script:
            "../workflow_scripts/correct_bias.py"

    rule register_to_t1c:
        input:
            t1w="results/n4/{cohort}/{patient}/t1w.nii.gz",
            t1c="results/n4/{cohort}/{patient}/t1c.nii.gz",
            t2w="results/n4/{cohort}/{patient}/t2w.nii.gz",
            flair="results/n4/{cohort}/{patient}/flair.nii.gz",
            roi=raw_roi,
        output:
            t1w="results/registered/{cohort}/{patient}/t1w.nii.gz",
            t1c="results/registered/{cohort}/{patient}/t1c.nii.gz",
            t2w="results/registered/{cohort}/{patient}/t2w.nii.gz",
            flair="results/registered/{cohort}/{patient}/flair.nii.gz",
            roi="results/registered/{cohort}/{patient}/roi.nii.gz",
            # {moving}_to_{reference}.mat of each registered sequence.
            transforms=directory("results/registered/{cohort}/{patient}/transforms"),
        log:
            "logs/register_to_t1c/{cohort}/{patient}.log",
        benchmark:
            "results/benchmarks/register_to_t1c/{cohort}/{patient}.tsv"
        conda:
            "../envs/workflow.yaml"
        threads: 1
        resources:
            mem_mb=3000,
            runtime=30,
        params:
            registration=registration_settings,
            roi_on=roi_on,
            seed=config["seed"],
        script:
            "../workflow_scripts/register_to_t1c.py"

    rule extract_brain:
        input:
            image=brain_input,
        output:
            "results/brain/{cohort}/{patient}/brain_mask.nii.gz",
        log:
            "logs/extract_brain/{cohort}/{patient}.log",
        benchmark:
            "results/benchmarks/extract_brain/{cohort}/{patient}.tsv"
        conda:
            "../envs/workflow.yaml"
        threads: 2
        resources:
            mem_mb=4000,
            runtime=30,
        params:
            brain_extraction=brain_extraction_settings,
            source=brain_source,
        script:
            "../workflow_scripts/extract_brain.py"

    rule normalise_intensity:
        input:
            t1w="results/registered/{cohort}/{patient}/t1w.nii.gz",
            t1c="results/registered/{cohort}/{patient}/t1c.nii.gz",
            t2w="results/registered/{cohort}/{patient}/t2w.nii.gz",
            flair="results/registered/{cohort}/{patient}/flair.nii.gz",
            roi="results/registered/{cohort}/{patient}/roi.nii.gz",
            brain_mask="results/brain/{cohort}/{patient}/brain_mask.nii.gz",
        output:
            t1w="results/preprocessed/{cohort}/{patient}/t1w.nii.gz",
            t1c="results/preprocessed/{cohort}/{patient}/t1c.nii.gz",
            t2w="results/preprocessed/{cohort}/{patient}/t2w.nii.gz",
            flair="results/preprocessed/{cohort}/{patient}/flair.nii.gz",
            brain_mask="results/preprocessed/{cohort}/{patient}/brain_mask.nii.gz",
            roi="results/preprocessed/{cohort}/{patient}/roi.nii.gz",
        log:
            "logs/normalise_intensity/{cohort}/{patient}.log",
        benchmark:
            "results/benchmarks/normalise_intensity/{cohort}/{patient}.tsv"
        conda:
            "../envs/workflow.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            normalisation=PREPROCESS["normalisation"],
        script:
            "../workflow_scripts/normalise_intensity.py"

    rule crop_roi:
        input:
            t1w="results/preprocessed/{cohort}/{patient}/t1w.nii.gz",
            t1c="results/preprocessed/{cohort}/{patient}/t1c.nii.gz",
            t2w="results/preprocessed/{cohort}/{patient}/t2w.nii.gz",
            flair="results/preprocessed/{cohort}/{patient}/flair.nii.gz",
            roi="results/preprocessed/{cohort}/{patient}/roi.nii.gz",
        output:
            "results/crops/{cohort}/{patient}.npz",
        log:
            "logs/crop_roi/{cohort}/{patient}.log",
        benchmark:
            "results/benchmarks/crop_roi/{cohort}/{patient}.tsv"
        conda:
            "../envs/workflow.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        params:
            crop=PREPROCESS["crop"],
        script:
            "../workflow_scripts/crop_roi.py"

    rule plot_qc:
        input:
            t1w="results/registered/{cohort}/{patient}/t1w.nii.gz",
            t1c="results/registered/{cohort}/{patient}/t1c.nii.gz",
            t2w="results/registered/{cohort}/{patient}/t2w.nii.gz",
            flair="results/registered/{cohort}/{patient}/flair.nii.gz",
            brain_mask="results/preprocessed/{cohort}/{patient}/brain_mask.nii.gz",
            roi="results/preprocessed/{cohort}/{patient}/roi.nii.gz",
        output:
            report(
                "results/qc/{cohort}/{patient}.png",
                caption="../report/qc.rst",
                category="Quality control",
                subcategory="{cohort}",
                labels={"cohort": "{cohort}", "patient": "{patient}"},
            ),
        log:
            "logs/plot_qc/{cohort}/{patient}.log",
        benchmark:
            "results/benchmarks/plot_qc/{cohort}/{patient}.tsv"
        conda:
            "../envs/workflow.yaml"
        threads: 1
        resources:
            mem_mb=1500,
            runtime=5,
        script:
            "../workflow_scripts/plot_qc.py"

else:

    rule preprocess_patient:
        input:
            unpack(raw_inputs),
        # The multi-file stage folders are directory outputs: Snakemake's DAG work grows with
        # every declared file; 21 files per job took a third more than these 6 to plan
        # (benchmarks/dataset.md).
        output:
            n4=directory("results/n4/{cohort}/{patient}"),
            registered=directory("results/registered/{cohort}/{patient}"),
            brain="results/brain/{cohort}/{patient}/brain_mask.nii.gz",
            preprocessed=directory("results/preprocessed/{cohort}/{patient}"),
            crops="results/crops/{cohort}/{patient}.npz",
            qc=report(
                "results/qc/{cohort}/{patient}.png",
                caption="../report/qc.rst",
                category="Quality control",
                subcategory="{cohort}",
                labels={"cohort": "{cohort}", "patient": "{patient}"},
            ),
        log:
            "logs/preprocess_patient/{cohort}/{patient}.log",
        benchmark:
            "results/benchmarks/preprocess_patient/{cohort}/{patient}.tsv"
        conda:
            "../envs/workflow.yaml"
        # One thread: patients in parallel use cores better than threads within a patient
        # (registration is single-threaded for reproducibility); clusters may raise it with
        # set-threads. The largest memory of the six steps and the sum of their runtimes. A
        # fixed disk_mb spares Snakemake's default (twice the input size): evaluating it stats
        # every job's inputs while the DAG is built (~2 ms per job, benchmarks/dataset.md).
        threads: 1
        resources:
            mem_mb=4000,
            runtime=105,
            disk_mb=1000,
        params:
            n4=PREPROCESS["n4"],
            registration=registration_settings,
            roi_on=roi_on,
            seed=config["seed"],
            brain_extraction=brain_extraction_settings,
            normalisation=PREPROCESS["normalisation"],
            crop=PREPROCESS["crop"],
        script:
            "../workflow_scripts/preprocess_patient.py"
