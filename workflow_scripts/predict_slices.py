"""Rule adapter of ``predict_slices``: see :func:`glioma.model.predict.predict_slices`."""

import torch

from glioma.logs import setup_logging
from glioma.model.predict import predict_slices


def main(smk) -> None:
    """Predict every slice and patient of the shards with one model's best checkpoint."""
    setup_logging(smk.log[0])
    torch.set_num_threads(smk.threads)
    predict_slices(
        list(smk.input.shards),
        smk.input.splits,
        smk.input.model,
        smk.output.slices,
        smk.output.patients,
        config=smk.config,
        model_name=smk.params.model_name,
    )


main(snakemake)
