"""Rule adapter of ``train_classifier``: see :func:`glioma.model.classifier.train_classifier`."""

from pathlib import Path

import torch

from glioma.logs import setup_logging
from glioma.model.classifier import train_classifier


def main(smk) -> None:
    """Train on the shards of every included cohort and write ``results/model/``."""
    setup_logging(smk.log[0])
    torch.set_num_threads(smk.threads)
    train_classifier(
        list(smk.input.shards),
        smk.input.splits,
        Path(smk.output.best).parent,
        smk.config,
        state_path=smk.params.state,
    )


main(snakemake)
