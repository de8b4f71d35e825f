"""Rule adapter: write the train/val/test (and cross-validation fold) split manifest."""

from glioma.dataset.splits import make_splits
from glioma.logs import setup_logging


def main(smk) -> None:
    """Unpack the rule's input, output and params and write ``results/splits.tsv``."""
    setup_logging(smk.log[0])
    make_splits(
        smk.input.sheet,
        smk.output[0],
        level=smk.params.level,
        method=smk.params.method,
        strata=smk.params.strata,
        ratios=dict(smk.params.ratios),
        seed=smk.params.seed,
        test_cohorts=list(smk.params.test_cohorts),
        folds=int(smk.params.folds),
    )


main(snakemake)
