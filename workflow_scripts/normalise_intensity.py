"""Rule adapter: skull stripping and intensity normalisation of one patient's four sequences."""

from glioma.logs import setup_logging


def main(smk) -> None:
    """Unpack the rule's input, output and params and normalise inside the brain mask."""
    setup_logging(smk.log[0])
    from glioma.constants import SEQUENCES
    from glioma.preprocess.normalise import normalise_files

    normalise_files(
        {s: smk.input[s] for s in SEQUENCES},
        smk.input.brain_mask,
        smk.input.roi,
        {name: smk.output[name] for name in (*SEQUENCES, "brain_mask", "roi")},
        method=smk.params.normalisation["method"],
        percentiles=smk.params.normalisation["percentiles"],
        patient=smk.wildcards.patient,
    )


main(snakemake)
