"""Bounded-memory sampling of a slice stream: window shuffle and class-balanced reservoirs.

Class balance keeps one reservoir per class (``capacity`` slices in all) and, for every slice
read, owes one draw to a class picked uniformly among the stream's classes; owed draws are paid
with replacement from that class's reservoir. Minority slices are repeated and majority slices
thinned, and the stream keeps its length. Emission starts once ``capacity`` slices were read, and
a class whose first slice comes late is paid its owed draws then. Each DataLoader worker balances
its own stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from glioma.dataset.rowgroups import Rows

# One slice in flight: (float16 image (4, H, W), label, patient, cohort, slice_index).
Item = tuple[torch.Tensor, int, str, str, int]


def slices(rows: Iterable[Rows], *, copy: bool) -> Iterator[Item]:
    """Yield the slices of each row group in order; ``copy`` detaches them from the row group."""
    for group in rows:
        for i in range(len(group.patients)):
            yield (
                group.images[i].clone() if copy else group.images[i],
                int(group.labels[i]),
                group.patients[i],
                group.cohorts[i],
                int(group.slice_index[i]),
            )


def windowed(rows: Iterable[Rows], capacity: int, rng: np.random.Generator) -> Iterator[Item]:
    """Yield slices in random order within windows of whole row groups of >= ``capacity`` slices.

    With the row-group order already shuffled, this mixes about as well as a ``capacity``-slice
    shuffle buffer, without copying any slice.
    """
    window: list[Rows] = []
    held = 0
    for group in rows:
        window.append(group)
        held += len(group.patients)
        if held >= capacity:
            yield from _mix(window, rng)
            window, held = [], 0
    yield from _mix(window, rng)


def _mix(window: list[Rows], rng: np.random.Generator) -> Iterator[Item]:
    """Yield every slice of ``window`` once, in random order."""
    index = [(g, i) for g, group in enumerate(window) for i in range(len(group.patients))]
    for k in rng.permutation(len(index)) if index else []:
        g, i = index[k]
        group = window[g]
        yield (
            group.images[i],
            int(group.labels[i]),
            group.patients[i],
            group.cohorts[i],
            int(group.slice_index[i]),
        )


def balanced(
    items: Iterator[Item], capacity: int, rng: np.random.Generator, classes: Sequence[int]
) -> Iterator[Item]:
    """Yield one class-balanced draw per item read, from per-class reservoirs.

    Args:
        items: the slice stream.
        capacity: slices held in all reservoirs together; emission starts after that many reads.
        rng: random generator.
        classes: the labels the stream holds (known before reading, so a class that first appears
            late still gets its share: its draws are owed until its first slice arrives).
    """
    classes = sorted(classes)
    pools: dict[int, list[Item]] = {label: [] for label in classes}
    owed = dict.fromkeys(classes, 0)
    per_class = max(1, capacity // max(1, len(classes)))
    for seen, item in enumerate(items, start=1):
        pool = pools.setdefault(item[1], [])
        if len(pool) < per_class:
            pool.append(item)
        else:
            pool[int(rng.integers(per_class))] = item
        owed[classes[int(rng.integers(len(classes)))]] += 1
        if seen >= capacity:
            yield from _pay(pools, owed, rng)
    # Draws owed to classes that never came (filtered out) go to the classes that did.
    ready = [label for label in classes if pools[label]]
    for label in [label for label in classes if not pools[label]]:
        for _ in range(owed.pop(label)):
            owed[ready[int(rng.integers(len(ready)))]] += 1
    yield from _pay(pools, owed, rng)


def _pay(pools: dict[int, list[Item]], owed: dict[int, int], rng: np.random.Generator):
    """Emit the owed draws of every class that has slices, in random order."""
    labels = [label for label, count in owed.items() if pools[label] for _ in range(count)]
    for label in rng.permutation(labels) if labels else []:
        pool = pools[int(label)]
        owed[int(label)] -= 1
        yield pool[int(rng.integers(len(pool)))]
