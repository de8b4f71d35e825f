"""Start training as the job's GPUs allow: in this process, or one process per GPU under torchrun.

The count is decided inside the job, where the GPUs it was given are visible (a SLURM job with
``gpu: 4`` sees four), so the rule needs no GPU count of its own: ``model.processes`` 0 means
one process per visible GPU, and any other value forces that many (on the CPU with the gloo
backend when no GPU is visible). One process trains here, exactly as before; several run
``python -m torch.distributed.run --standalone ... -m glioma.model.train_cli``, whose output is
copied line by line into this process's log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

import glioma
from glioma.model.training import train_classifier, write_config

log = logging.getLogger(__name__)


def count_processes(setting: int, device: str | None = None) -> int:
    """Return how many training processes to start.

    Args:
        setting: ``model.processes``: 0 = one per visible GPU (at least one), N = N.
        device: ``cpu`` ignores the GPUs; None or ``cuda`` uses them when visible.

    Raises:
        ValueError: more processes than visible GPUs (NCCL needs one GPU per process).
    """
    on_cpu = device is not None and torch.device(device).type == "cpu"
    gpus = 0 if on_cpu else torch.cuda.device_count()
    if setting == 0:
        return max(1, gpus)
    if gpus and setting > gpus:
        raise ValueError(
            f"model.processes is {setting}, but the job sees {gpus} GPUs: one process per GPU "
            "(ask the profile for more GPUs, or set model.processes to 0)"
        )
    return setting


def torchrun_command(
    processes: int,
    shard_dirs: Sequence[str | Path],
    splits_path: str | Path,
    out_dir: str | Path,
    config_path: str | Path,
    *,
    state_path: str | Path | None = None,
    device: str | None = None,
    threads: int = 1,
) -> list[str]:
    """Return the torchrun command line that trains with ``processes`` ranks on this node."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "glioma.model.train_cli",
        "--shards",
        *map(str, shard_dirs),
        "--splits",
        str(splits_path),
        "--out",
        str(out_dir),
        "--config",
        str(config_path),
        "--threads",
        str(threads),
    ]
    if state_path:
        command += ["--state", str(state_path)]
    if device:
        command += ["--device", device]
    return command


def launch_training(
    shard_dirs: Sequence[str | Path],
    splits_path: str | Path,
    out_dir: str | Path,
    config: Mapping[str, Any],
    *,
    state_path: str | Path | None = None,
    threads: int = 1,
    device: str | None = None,
) -> None:
    """Train the classifier with as many processes as ``model.processes`` and the GPUs allow.

    Args:
        shard_dirs, splits_path, out_dir, config, state_path, device: see
            :func:`glioma.model.training.train_classifier`.
        threads: CPU threads of the job, shared among the processes.

    Raises:
        RuntimeError: torchrun failed (the ranks' messages are in the log above).
    """
    processes = count_processes(int(config["model"]["processes"]), device)
    if processes == 1:
        torch.set_num_threads(threads)
        train_classifier(
            shard_dirs, splits_path, out_dir, config, state_path=state_path, device=device
        )
        return
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / "config.yaml"  # an output anyway; the ranks read the config from it
    write_config(config, config_path)
    command = torchrun_command(
        processes,
        shard_dirs,
        splits_path,
        out_dir,
        config_path,
        state_path=state_path,
        device=device,
        threads=max(1, threads // processes),
    )
    log.info("training with %d processes: %s", processes, shlex.join(command))
    run_logged(command, _child_environment(max(1, threads // processes)))


def _child_environment(threads: int) -> dict[str, str]:
    """This environment, with the glioma package importable and the thread count set."""
    package_root = str(Path(glioma.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": package_root + (os.pathsep + path if path else ""),
        "OMP_NUM_THREADS": str(threads),
        "PYTHONUNBUFFERED": "1",
    }


def run_logged(command: Sequence[str], env: Mapping[str, str]) -> None:
    """Run ``command``, logging each line of its output; stop it if this process is stopped.

    Raises:
        RuntimeError: the command exited with a non-zero status.
    """
    with _sigterm_as_exit():
        process = subprocess.Popen(
            command, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            for line in process.stdout:
                if line.strip():  # progress bars end their updates with blank lines
                    log.info("%s", line.rstrip())
            status = process.wait()
        finally:
            _stop(process)
    if status != 0:
        raise RuntimeError(f"training under torchrun failed with exit status {status}")


def _stop(process: subprocess.Popen) -> None:
    """Terminate ``process`` (torchrun passes it on to the ranks) if it still runs."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM (Snakemake or SLURM cancelling the job) into SystemExit, so cleanup runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
