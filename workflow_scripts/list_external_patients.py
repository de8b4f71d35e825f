"""Rule adapter of ``list_external_patients``: see ``glioma.model.external``."""

from glioma.logs import setup_logging
from glioma.model.external import write_external_manifest


def main(smk) -> None:
    """Write the manifest of a prediction-only run: labelled patients are external."""
    setup_logging(smk.log[0])
    write_external_manifest(smk.input.sheet, smk.output[0])


main(snakemake)
