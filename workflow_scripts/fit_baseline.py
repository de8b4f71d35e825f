"""Rule adapter of ``fit_baseline``: see :func:`glioma.model.baseline.fit_baseline`."""

from glioma.logs import setup_logging
from glioma.model.baseline import fit_baseline


def main(smk) -> None:
    """Fit the logistic-regression baseline and predict every slice and patient of the shards."""
    setup_logging(smk.log[0])
    fit_baseline(
        list(smk.input.shards),
        smk.input.splits,
        smk.output.slices,
        smk.output.patients,
        config=smk.config,
        model_out=smk.output.model,
        fold_paths=dict(zip(smk.params.folds, smk.input.folds, strict=True)),
    )


main(snakemake)
