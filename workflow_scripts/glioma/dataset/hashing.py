"""Stable hashes (standard library only, so that rule files can import them cheaply)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

#: ``preprocess`` keys that change how the work is split into jobs, never the images.
NOT_HASHED = frozenset({"jobs"})


def preprocess_hash(preprocess: Mapping) -> str:
    """Return a SHA-256 hex digest of the preprocessing config (key order does not matter).

    Keys in ``NOT_HASHED`` are left out: ``preprocess.jobs`` writes the same files either way.
    """
    kept = {key: value for key, value in preprocess.items() if key not in NOT_HASHED}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stable_fraction(seed: int, *parts: object) -> float:
    """Map (seed, *parts) to [0, 1) by SHA-256: the same inputs give the same number everywhere."""
    text = "\x1f".join(str(part) for part in (seed, *parts))
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
