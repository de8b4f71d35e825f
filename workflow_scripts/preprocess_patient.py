"""Rule adapter: every preprocessing step of one patient in one job (preprocess.jobs: patient)."""

from glioma.logs import setup_logging


def main(smk) -> None:
    """Unpack the rule's input, output and params and preprocess one patient."""
    setup_logging(smk.log[0])
    from glioma.constants import SEQUENCES
    from glioma.preprocess.pipeline import PatientOutputs, preprocess_patient_files

    out = smk.output
    outputs = PatientOutputs.in_folders(
        n4=out.n4,
        registered=out.registered,
        brain=out.brain,
        preprocessed=out.preprocessed,
        crops=out.crops,
        qc=out.qc,
    )
    params = smk.params
    preprocess_patient_files(
        {n: path for n, path in smk.input.items() if n in (*SEQUENCES, "roi")},
        outputs,
        roi_on=params.roi_on,
        n4=params.n4,
        registration=params.registration,
        brain_extraction=params.brain_extraction,
        normalisation=params.normalisation,
        crop=params.crop,
        seed=params.seed,
        threads=smk.threads,
        patient=smk.wildcards.patient,
        title=f"{smk.wildcards.cohort} / {smk.wildcards.patient}",
    )


main(snakemake)
