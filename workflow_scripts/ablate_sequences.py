"""Rule adapter of ``ablate_sequences``: see :func:`glioma.model.ablation.write_ablation`."""

from glioma.logs import setup_logging


def main(smk) -> None:
    """Hide each sequence in turn and write the change in patient-level macro AUC."""
    setup_logging(smk.log[0])
    import torch

    from glioma.model.ablation import write_ablation

    torch.set_num_threads(smk.threads)
    write_ablation(
        list(smk.input.shards),
        smk.input.splits,
        smk.input.bundle,
        smk.output[0],
        split=smk.params.split,
        batch_size=int(smk.params.batch_size),
        bootstrap=int(smk.params.bootstrap),
        seed=int(smk.params.seed),
    )


main(snakemake)
