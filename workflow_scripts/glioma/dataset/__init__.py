"""Slice dataset: Parquet shards per cohort, stable patient splits and a streaming torch loader.

Modules:
    shards: per-patient crops (``results/crops/{cohort}/{patient}.npz``) -> Parquet shards.
    splits: the split manifest ``results/splits.tsv`` (patient, cohort or slice level).
    loader: streaming ``torch`` dataset and ``DataLoader`` over the shards (imports torch).

Nothing is imported here so that ``shards`` and ``splits`` stay usable without torch.
"""
