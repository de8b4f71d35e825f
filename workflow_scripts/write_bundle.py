"""Rule adapter of ``write_bundle``: see :func:`glioma.model.bundle.write_bundle`."""

from glioma.dataset.splits import read_splits
from glioma.logs import setup_logging
from glioma.model.bundle import write_bundle


def main(smk) -> None:
    """Gather the trained models, manifest and metrics into ``results/bundle``."""
    setup_logging(smk.log[0])
    write_bundle(
        dict(zip(smk.params.names, smk.input.models, strict=True)),
        smk.output[0],
        config=smk.config,
        splits=read_splits(smk.input.splits),
        metrics_path=smk.input.metrics,
    )


main(snakemake)
