"""Rule adapter of ``ensemble_predictions``: see :mod:`glioma.model.ensemble`."""

from glioma.logs import setup_logging
from glioma.model.ensemble import ensemble_predictions


def main(smk) -> None:
    """Out-of-fold predictions of the development patients, the fold ensemble for the rest."""
    setup_logging(smk.log[0])
    ensemble_predictions(
        dict(zip(smk.params.folds, smk.input.folds, strict=True)),
        smk.input.splits,
        smk.output.slices,
        smk.output.patients,
        review_threshold=smk.params.review_entropy,
    )


main(snakemake)
