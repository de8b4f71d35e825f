"""Rule adapter: brain mask of one patient on the T1c grid."""

from glioma.logs import setup_logging


def main(smk) -> None:
    """Unpack the rule's input, output and params and extract the brain."""
    setup_logging(smk.log[0])
    from glioma.preprocess.brain import extract_brain_file

    settings = smk.params.brain_extraction
    extract_brain_file(
        smk.input.image,
        smk.output[0],
        method=settings["method"],
        threshold=settings["threshold"],
        hdbet_weights=settings["hdbet_weights"],
        threads=smk.threads,
        patient=smk.wildcards.patient,
        column=smk.params.source,
    )


main(snakemake)
