"""Size and time of ``results/report.html`` on a synthetic run of 1,000 patients.

The run is the fake one of ``tests/test_report.py`` (:func:`make_run`) at any size: sample sheet,
exclusions, Table 1, splits, history, metrics.json with ROC, confusion, calibration and
uncertainty figures per split, ablation.tsv, predictions.csv, a model bundle, saliency pictures
and index.json per cohort, and one QC picture per patient of the real size and mode (900x1200
RGBA PNG; 16 different noisy mosaics in turn, a little harder to compress than real ones). The
report is then rendered by :func:`glioma.report.html.write_report`, what rule render_report runs,
with ``--workers`` thumbnail threads (the rule's ``threads``). Goal: <= 30 MB and <= 60 s on 2
cores. Results go to ``benchmarks/report.md`` by hand from this script's output.

    python benchmarks/bench_report.py --patients 1000 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow_scripts"))
sys.path.insert(0, str(ROOT / "tests"))

from test_report import make_run, synthetic_patients  # noqa: E402

from glioma.report import html  # noqa: E402

MB = 1_000_000


def render(inputs: html.ReportInputs, out: Path, workers: int) -> dict[str, float]:
    """Render the report once; seconds for the QC thumbnails alone and for the whole report."""
    start = time.perf_counter()
    html.qc_items(inputs.qc, workers)
    thumbs = time.perf_counter() - start
    start = time.perf_counter()
    html.write_report(inputs, out / "report.html", out / "curves.png", workers=workers)
    total = time.perf_counter() - start
    return {"thumbnails_s": round(thumbs, 1), "report_s": round(total, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--keep", type=Path, help="build the run here and keep it")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_report_"))
    try:
        start = time.perf_counter()
        inputs = make_run(root, patients=synthetic_patients(args.patients), real_size_qc=True)
        built = time.perf_counter() - start
        qc_bytes = sum(p.stat().st_size for p in inputs.qc)
        rows = []
        for workers in args.workers:
            out = root / f"results/report-{workers}"
            out.mkdir(parents=True, exist_ok=True)
            timing = render(inputs, out, workers)
            size = (out / "report.html").stat().st_size
            rows.append({"workers": workers, "size_mb": round(size / MB, 2), **timing,
                         "bytes_per_patient": round(size / args.patients)})  # fmt: skip
        result = {
            "patients": args.patients,
            "build_s": round(built, 1),
            "qc_pictures_mb": round(qc_bytes / MB, 1),
            "renders": rows,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1000),
            "machine": f"{platform.platform()}, {platform.processor() or platform.machine()}",
        }
        print(json.dumps(result, indent=2))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
