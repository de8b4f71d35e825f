"""Rule adapter: QC picture of one patient (four sequences x three planes, brain and ROI)."""

from glioma.logs import setup_logging


def main(smk) -> None:
    """Unpack the rule's input and output and draw the QC picture."""
    setup_logging(smk.log[0])
    from glioma.constants import SEQUENCES
    from glioma.preprocess.qc import plot_qc_file

    plot_qc_file(
        {s: smk.input[s] for s in SEQUENCES},
        smk.input.brain_mask,
        smk.input.roi,
        smk.output[0],
        title=f"{smk.wildcards.cohort} / {smk.wildcards.patient}",
        patient=smk.wildcards.patient,
    )


main(snakemake)
