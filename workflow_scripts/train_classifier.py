"""Rule adapter of ``train_classifier``: see :func:`glioma.model.launch.launch_training`."""

from pathlib import Path

from glioma.logs import setup_logging
from glioma.model.launch import launch_training


def main(smk) -> None:
    """Train on the shards of every included cohort and write ``results/model/``."""
    setup_logging(smk.log[0])
    launch_training(
        list(smk.input.shards),
        smk.input.splits,
        Path(smk.output.best).parent,
        smk.config,
        state_path=smk.params.state,
        threads=smk.threads,
    )


main(snakemake)
