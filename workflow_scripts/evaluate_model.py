"""Rule adapter of ``evaluate_model``: see :func:`glioma.model.evaluate.evaluate_predictions`."""

from glioma.constants import SPLITS
from glioma.logs import setup_logging
from glioma.model.evaluate import evaluate_predictions


def main(smk) -> None:
    """Write metrics.json (network and baseline), the Table 2 TSVs and the figures."""
    setup_logging(smk.log[0])
    evaluate_predictions(
        smk.input.slices,
        smk.input.splits,
        smk.output.metrics,
        {"patient": smk.output.table_patient, "slice": smk.output.table_slice},
        {
            "roc": dict(zip(SPLITS, smk.output.roc, strict=True)),
            "confusion": dict(zip(SPLITS, smk.output.confusion, strict=True)),
        },
        n_boot=smk.params.bootstrap,
        seed=smk.params.seed,
        aggregate=smk.params.aggregate,
        baseline_path=smk.input.baseline,
        baseline_table_out=smk.output.table_baseline,
    )


main(snakemake)
