"""Glioma molecular classification from MRI: the library behind the Snakemake workflow.

The package never imports Snakemake; rule adapters in ``workflow_scripts/`` call into it.
"""

__version__ = "0.1.0"
