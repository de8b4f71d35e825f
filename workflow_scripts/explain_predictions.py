"""Rule adapter of ``explain_predictions``: see :func:`glioma.model.explain.explain_cohort`."""

import torch

from glioma.logs import setup_logging
from glioma.model.explain import explain_cohort


def main(smk) -> None:
    """Write a saliency picture per patient of one cohort, and the cohort's index.json."""
    setup_logging(smk.log[0])
    torch.set_num_threads(smk.threads)
    explain_cohort(
        smk.input.shards,
        smk.input.predictions,
        smk.input.bundle,
        smk.output[0],
        method=smk.params.saliency["method"],
        n_slices=int(smk.params.saliency["slices"]),
        seed=int(smk.params.seed),
    )


main(snakemake)
