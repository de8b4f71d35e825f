"""Rule adapter of ``evaluate_model``: see :func:`glioma.model.evaluate.evaluate_predictions`."""

from glioma.logs import setup_logging
from glioma.model.evaluate import evaluate_predictions


def main(smk) -> None:
    """Write metrics.json (network and baseline), the Table 2 TSVs and the figures."""
    setup_logging(smk.log[0])
    shown = list(smk.params.splits)
    figures = {
        kind: dict(zip(shown, getattr(smk.output, kind), strict=True))
        for kind in ("roc", "confusion", "calibration", "uncertainty")
    }
    figures["folds"] = smk.output.folds_figure[0] if smk.output.folds_figure else None
    evaluate_predictions(
        smk.input.slices,
        smk.input.splits,
        smk.output.metrics,
        {
            "patient": smk.output.table_patient,
            "slice": smk.output.table_slice,
            "baseline": smk.output.table_baseline,
            "folds": smk.output.table_folds,
            "availability": smk.output.table_availability,
        },
        figures,
        n_boot=smk.params.bootstrap,
        seed=smk.params.seed,
        baseline_path=smk.input.baseline or None,
        predictions_path=smk.input.predictions,
        review_threshold=smk.params.review_entropy,
        calibration_bins=smk.params.calibration_bins,
        temperature=smk.params.temperature,
        sheet_path=smk.input.sheet,
    )


main(snakemake)
