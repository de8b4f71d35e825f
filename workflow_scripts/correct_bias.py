"""Rule adapter: N4 bias-field correction of one patient's four sequences."""

from glioma.logs import setup_logging


def main(smk) -> None:
    """Unpack the rule's input, output and params and N4-correct the four sequences."""
    setup_logging(smk.log[0])
    from glioma.constants import SEQUENCES
    from glioma.preprocess.bias import correct_bias_files

    correct_bias_files(
        {s: smk.input[s] for s in SEQUENCES},
        {s: smk.output[s] for s in SEQUENCES},
        **smk.params.n4,
        threads=smk.threads,
        patient=smk.wildcards.patient,
    )


main(snakemake)
