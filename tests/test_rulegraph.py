"""The README's rule graph picture is current."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _graph(dot: str) -> tuple[set[str], set[tuple[str, str]]]:
    """Rule names and edges (by name) of a rule graph; Snakemake numbers nodes in no fixed order."""
    labels = dict(re.findall(r'^\s*(\d+)\[label = "([^"]+)"', dot, re.MULTILINE))
    edges = re.findall(r"^\s*(\d+) -> (\d+)", dot, re.MULTILINE)
    return set(labels.values()), {(labels[a], labels[b]) for a, b in edges}


def test_rulegraph_picture_is_current() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--rulegraph",
            "--config",
            "samples=tests/data/placeholder/samples.tsv",
            "preprocess={jobs: step}",
        ],
        cwd=REPO,
        capture_output=True,
        encoding="utf-8",
        check=True,
    )
    current = _graph(result.stdout)
    recorded = _graph((REPO / "docs" / "rulegraph.dot").read_text(encoding="utf-8"))
    assert len(current[0]) > 5 and current[1]
    assert current == recorded, "rule graph changed: run `make rulegraph` and commit docs/"
    assert (REPO / "docs" / "rulegraph.svg").stat().st_size > 0
