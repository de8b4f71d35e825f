"""Rule adapter of ``make_fold_split``: see :func:`glioma.dataset.folds.write_fold_manifest`."""

from glioma.dataset.folds import write_fold_manifest
from glioma.logs import setup_logging


def main(smk) -> None:
    """Write one fold's training manifest from ``results/splits.tsv``."""
    setup_logging(smk.log[0])
    write_fold_manifest(
        smk.input[0],
        smk.output[0],
        smk.wildcards.fold,
        ratios=dict(smk.params.ratios),
        seed=smk.params.seed,
        method=smk.params.method,
        strata=smk.params.strata,
    )


main(snakemake)
