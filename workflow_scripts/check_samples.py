"""Rule adapter: validate the sample sheet, write the included patients and the exclusions."""

from glioma.constants import SEQUENCES
from glioma.logs import setup_logging
from glioma.samples import validate_sheet, write_validated


def main(smk) -> None:
    """Validate ``smk.input[0]`` and write ``smk.output.samples`` / ``smk.output.exclusions``."""
    log = setup_logging(smk.log[0])
    result = validate_sheet(
        smk.input[0],
        min_age_exclusive=smk.params.min_age_exclusive,
        missing_sequences=smk.params.missing_sequences,
    )
    write_validated(result, smk.output.samples, smk.output.exclusions)
    log.info(
        "%d patients included, %d excluded from processing, %d processed but unlabelled",
        len(result.included),
        int((result.exclusions["scope"] == "all").sum()),
        int((result.exclusions["scope"] == "training").sum()),
    )
    lacking = {sequence: int((result.included[sequence] == "").sum()) for sequence in SEQUENCES}
    if any(lacking.values()):
        log.info(
            "included patients lacking a sequence: %s",
            ", ".join(f"{s} {n}" for s, n in lacking.items() if n),
        )
    for row in result.exclusions.itertuples():
        log.info("excluded (%s) %s/%s: %s", row.scope, row.cohort, row.patient, row.reason)


main(snakemake)
