"""Rule adapter of ``predict_with_bundle``: see ``glioma.model.external``."""

import torch

from glioma.logs import setup_logging
from glioma.model.external import predict_with_bundle


def main(smk) -> None:
    """Predict every patient of the shards with the bundle's models (their mean)."""
    setup_logging(smk.log[0])
    torch.set_num_threads(smk.threads)
    predict_with_bundle(
        list(smk.input.shards),
        smk.input.splits,
        smk.input.bundle,
        smk.output.slices,
        smk.output.patients,
        batch_size=int(smk.params.batch_size),
        review_threshold=float(smk.params.review_entropy),
    )


main(snakemake)
