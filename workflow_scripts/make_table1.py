"""Rule adapter: Table 1 of the validated sample sheet, as TSV and Markdown."""

from glioma.logs import setup_logging
from glioma.report.table1 import write_table1


def main(smk) -> None:
    """Summarise ``smk.input.sheet`` into ``smk.output.tsv`` and ``smk.output.md``."""
    log = setup_logging(smk.log[0])
    table = write_table1(smk.input.sheet, smk.output.tsv, smk.output.md)
    log.info("Table 1: %d rows, %d columns", len(table), len(table.columns))


main(snakemake)
