"""Rule adapter of ``render_patient_pages``: see ``glioma.report.cohort_pages``."""

from glioma.logs import setup_logging
from glioma.report.cohort_pages import write_cohort_pages


def main(smk) -> None:
    """Write one self-contained page per patient of one cohort."""
    log = setup_logging(smk.log[0])
    paths = write_cohort_pages(
        smk.wildcards.cohort,
        smk.input.predictions,
        smk.output[0],
        splits_path=smk.input.splits,
        qc=list(smk.input.qc),
        saliency_dir=smk.input.saliency,
        bundle_dir=smk.input.bundle,
        review_threshold=float(smk.params.review_entropy),
        sheet_path=smk.input.sheet,
    )
    log.info("wrote %d patient pages into %s", len(paths), smk.output[0])


main(snakemake)
