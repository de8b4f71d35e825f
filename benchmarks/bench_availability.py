"""How the network should be told a sequence is absent: fill value alone, or fill + mask.

A synthetic task where one sequence carries the class the way a real contrast can: class 1 has a
bright blob in channel 1, class 0 has none (channel 1 is then plain tissue, 0 after z-scoring,
which is also the fill value of an absent sequence). A small CNN is trained with sequence dropout
(rate 0.3) under two input designs, over several seeds:

- ``fill``: absent channels hold :data:`glioma.model.availability.FILL` and nothing else, so an
  absent channel 1 looks exactly like a real one without a blob, i.e. like class 0;
- ``mask``: the same plus one availability plane per sequence (what the workflow does).

Test slices are scored with channel 1 present and absent: AUC (discrimination) and log loss
(whether the probabilities admit that nothing is left to decide by; 0.693 is a coin's). Results
go to ``benchmarks/availability.md``'s table by hand from this script's output.

    python benchmarks/bench_availability.py --seeds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from sklearn.metrics import log_loss, roc_auc_score
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow_scripts"))

from glioma.model.availability import FILL, drop_sequences, hide, network_input

CHANNELS, SIZE = 4, 16


def cohort(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise slices; class 1 has a bright central blob in channel 1, class 0 has none."""
    labels = torch.arange(n) % 2
    images = torch.randn(n, CHANNELS, SIZE, SIZE, generator=generator) * 0.5
    blob = torch.zeros(SIZE, SIZE)
    blob[5:11, 5:11] = 1.5
    images[:, 1] += labels.float()[:, None, None] * blob
    return images, labels


def fill_only(images: torch.Tensor) -> torch.Tensor:
    """The ``fill`` design's network input: absent (NaN) channels filled, no mask."""
    return torch.nan_to_num(images, nan=FILL)


def train(design: str, seed: int, steps: int = 80, rate: float = 0.3) -> nn.Module:
    """A small CNN trained with sequence dropout under one input design."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    prepare = network_input if design == "mask" else fill_only
    width = 2 * CHANNELS if design == "mask" else CHANNELS
    model = nn.Sequential(
        nn.Conv2d(width, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 2),
    )  # fmt: skip
    model.register_forward_pre_hook(lambda _, args: (prepare(args[0]),))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    images, labels = cohort(256, generator)
    for _ in range(steps):
        batch = drop_sequences(images, rate, generator)
        loss = nn.functional.cross_entropy(model(batch), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model


def score(model: nn.Module, seed: int) -> dict[str, float]:
    """AUC and log loss on fresh slices, channel 1 present and absent."""
    images, labels = cohort(400, torch.Generator().manual_seed(1000 + seed))
    out = {}
    for name, hidden in (("present", False), ("absent", True)):
        mask = torch.zeros(len(labels), CHANNELS, dtype=torch.bool)
        mask[:, 1] = hidden
        with torch.no_grad():
            probs = model(hide(images, mask)).softmax(1)[:, 1].numpy()
        out[f"auc_{name}"] = roc_auc_score(labels.numpy(), probs)
        out[f"logloss_{name}"] = log_loss(labels.numpy(), probs, labels=[0, 1])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    keys = ("auc_present", "auc_absent", "logloss_present", "logloss_absent")
    print("| design | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for design in ("fill", "mask"):
        runs = [score(train(design, seed), seed) for seed in range(args.seeds)]
        cells = []
        for key in keys:
            values = [run[key] for run in runs]
            cells.append(f"{statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})")
        print(f"| {design} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
