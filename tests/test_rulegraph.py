"""The README's rule graph picture is current."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_rulegraph_picture_is_current() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--rulegraph",
            "--config",
            "samples=tests/data/placeholder/samples.tsv",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    current = result.stdout[result.stdout.index("digraph") :].strip()
    recorded = (REPO / "docs" / "rulegraph.dot").read_text().strip()
    assert current == recorded, "rule graph changed: run `make rulegraph` and commit docs/"
    assert (REPO / "docs" / "rulegraph.svg").stat().st_size > 0
