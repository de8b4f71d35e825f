"""Rule adapter: rigid registration of a patient's sequences (and the ROI) onto its grid (T1c)."""

from glioma.logs import setup_logging


def main(smk) -> None:
    """Unpack the rule's input, output and params and register one patient's sequences."""
    setup_logging(smk.log[0])
    from glioma.constants import SEQUENCES
    from glioma.preprocess.register import register_files

    register_files(
        {s: smk.input[s] for s in SEQUENCES},
        smk.input.roi,
        smk.params.roi_on,
        {name: smk.output[name] for name in (*SEQUENCES, "roi")},
        smk.output.transforms,
        reference_order=smk.params.registration["reference"],
        transform=smk.params.registration["transform"],
        resample_mm=smk.params.registration["resample_mm"],
        seed=smk.params.seed,
        threads=smk.threads,
        patient=smk.wildcards.patient,
    )


main(snakemake)
