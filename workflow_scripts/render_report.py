"""Rule adapter: the run's self-contained HTML report and its training-curves figure."""

from pathlib import Path

from glioma.logs import setup_logging
from glioma.report.html import ReportInputs, write_report


def main(smk) -> None:
    """Gather the stage outputs named in ``smk.input`` into ``smk.output.html``."""
    log = setup_logging(smk.log[0])
    inputs = ReportInputs(
        sheet=Path(smk.input.sheet),
        exclusions=Path(smk.input.exclusions),
        table1=Path(smk.input.table1),
        splits=Path(smk.input.splits),
        history=[Path(p) for p in smk.input.history],
        model_config=Path(smk.input.model_config),
        metrics=Path(smk.input.metrics),
        predictions=Path(smk.input.predictions),
        roc=[Path(p) for p in smk.input.roc],
        confusion=[Path(p) for p in smk.input.confusion],
        calibration=[Path(p) for p in smk.input.calibration],
        uncertainty=[Path(p) for p in smk.input.uncertainty],
        folds_table=Path(smk.input.folds),
        folds_figure=Path(smk.input.folds_figure[0]) if smk.input.folds_figure else None,
        qc=[Path(p) for p in smk.input.qc],
        config=dict(smk.params.config),
        bundle=Path(smk.input.bundle),
        saliency=[Path(p) for p in smk.input.saliency],
        predicted_only=bool(smk.params.config["predict"]["bundle"]),
        ablation=Path(smk.input.ablation),
    )
    write_report(inputs, smk.output.html, smk.output.curves, workers=smk.threads)
    log.info("wrote %s (%d QC mosaics)", smk.output.html, len(inputs.qc))


main(snakemake)
