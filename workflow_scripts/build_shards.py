"""Rule adapter: aggregate one cohort's slice crops into Parquet shards."""

from glioma.dataset.shards import build_shards
from glioma.logs import setup_logging


def main(smk) -> None:
    """Unpack the rule's input, output and params and build the cohort's shards."""
    setup_logging(smk.log[0])
    build_shards(
        list(smk.input.crops),
        dict(smk.params.classes),
        smk.output[0],
        cohort=smk.wildcards.cohort,
        config_hash=smk.params.preprocess_hash,
        image_size=smk.params.image_size,
    )


main(snakemake)
