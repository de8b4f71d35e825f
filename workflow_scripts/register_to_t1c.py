"""Rule adapter: rigid registration of T1w, T2w and FLAIR (and the ROI) onto the T1c grid."""

from glioma.logs import setup_logging


def main(smk) -> None:
    """Unpack the rule's input, output and params and register one patient to T1c."""
    setup_logging(smk.log[0])
    from glioma.constants import SEQUENCES
    from glioma.preprocess.register import MOVING, register_files

    register_files(
        {s: smk.input[s] for s in SEQUENCES},
        smk.input.roi,
        smk.params.roi_on,
        {name: smk.output[name] for name in (*SEQUENCES, "roi")},
        {s: smk.output[f"{s}_mat"] for s in MOVING},
        transform=smk.params.registration["transform"],
        resample_mm=smk.params.registration["resample_mm"],
        seed=smk.params.seed,
        threads=smk.threads,
        patient=smk.wildcards.patient,
    )


main(snakemake)
