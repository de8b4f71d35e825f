"""Rule adapter: axial ROI crops of one patient, written as an .npz."""

from glioma.logs import setup_logging


def main(smk) -> None:
    """Unpack the rule's input, output and params and crop the ROI slices."""
    setup_logging(smk.log[0])
    from glioma.constants import SEQUENCES
    from glioma.preprocess.crop import crop_file

    crop_file(
        {s: smk.input[s] for s in SEQUENCES},
        smk.input.roi,
        smk.output[0],
        **smk.params.crop,
        patient=smk.wildcards.patient,
    )


main(snakemake)
