"""Rule adapter: N4 bias-field correction of one patient's sequences."""

from glioma.logs import setup_logging


def main(smk) -> None:
    """Unpack the rule's input, output and params and N4-correct the patient's sequences (a
    sequence without input was not acquired)."""
    setup_logging(smk.log[0])
    from glioma.constants import SEQUENCES
    from glioma.preprocess.bias import correct_bias_files

    correct_bias_files(
        {s: path for s, path in smk.input.items() if s in SEQUENCES},
        {s: smk.output[s] for s in SEQUENCES},
        **smk.params.n4,
        threads=smk.threads,
        patient=smk.wildcards.patient,
    )


main(snakemake)
