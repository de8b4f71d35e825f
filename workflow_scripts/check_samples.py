"""Rule adapter: validate the sample sheet, write the included patients and the exclusions."""

from glioma.logs import setup_logging
from glioma.samples import validate_sheet, write_validated


def main(smk) -> None:
    """Validate ``smk.input[0]`` and write ``smk.output.samples`` / ``smk.output.exclusions``."""
    log = setup_logging(smk.log[0])
    result = validate_sheet(smk.input[0], min_age_exclusive=smk.params.min_age_exclusive)
    write_validated(result, smk.output.samples, smk.output.exclusions)
    log.info(
        "%d patients included, %d excluded from processing, %d processed but unlabelled",
        len(result.included),
        int((result.exclusions["scope"] == "all").sum()),
        int((result.exclusions["scope"] == "training").sum()),
    )
    for row in result.exclusions.itertuples():
        log.info("excluded (%s) %s/%s: %s", row.scope, row.cohort, row.patient, row.reason)


main(snakemake)
