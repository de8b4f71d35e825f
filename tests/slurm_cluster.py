"""A single-node SLURM cluster on 127.0.0.1 for integration tests (root, Debian packages).

Starts munged, slurmctld and slurmd in the foreground as child processes, so the test stops
exactly the daemons it started (by PID). slurm.conf must be at /etc/slurm/slurm.conf because
the SLURM executor plugin's job step drops SLURM_CONF from the job's environment.

The node can declare more than the machine has (SlurmdParameters=config_overrides, meant for
testing): CPUs and memory up to the largest job a profile asks for, and GPUs as a fake GRES
(`Name=gpu File=/dev/null`, no device behind it), so that a job asking for a GPU partition and
``--gpus=1`` is accepted and scheduled, then runs on the CPU. Nothing enforces the declared
sizes (no cgroups): jobs share the machine's real cores and memory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue")
CONF = Path("/etc/slurm/slurm.conf")
#: slurmd reads gres.conf beside /etc/slurm/slurm.conf (not beside the link's target).
GRES_CONF = CONF.with_name("gres.conf")


def missing_requirements() -> str | None:
    """Why a local cluster cannot start here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root to start munged/slurmd"
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        return f"SLURM/munge not installed (missing {', '.join(missing)}); .ci/run installs them"
    for conf in (CONF, GRES_CONF):
        if conf.exists() and not conf.is_symlink():
            return f"{conf} exists and is not ours; refusing to replace it"
    return None


def _node_line(cpus: int, memory_mb: int, gpus: int) -> tuple[str, str]:
    """This machine's node line (``slurmd -C``), raised to ``cpus``, ``memory_mb`` and ``gpus``."""
    line = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    found = dict(f.split("=", 1) for f in line.split() if "=" in f)
    node = found["NodeName"]
    # Below the real memory, so that the node is not drained for reporting less than configured.
    memory = max(int(int(found["RealMemory"]) * 0.9), memory_mb)
    cpus = max(int(found["CPUs"]), cpus)
    fields = [
        f"NodeName={node}",
        f"CPUs={cpus}",
        "Boards=1",
        "SocketsPerBoard=1",
        f"CoresPerSocket={cpus}",
        "ThreadsPerCore=1",
        f"RealMemory={memory}",
        *([f"Gres=gpu:{gpus}"] if gpus else []),
        "NodeAddr=127.0.0.1",
    ]
    return " ".join(fields), node


def _write_conf(
    state: Path, partitions: tuple[str, ...], cpus: int, memory_mb: int, gpus: int
) -> None:
    node_line, node = _node_line(cpus, memory_mb, gpus)
    host = socket.gethostname()
    conf = f"""ClusterName=testcluster
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/d
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MinJobAge=3600
ReturnToService=2
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
{"GresTypes=gpu" if gpus else ""}
{node_line} State=UNKNOWN
"""
    for number, partition in enumerate(partitions):
        default = "YES" if number == 0 else "NO"
        conf += f"PartitionName={partition} Nodes={node} Default={default} MaxTime=INFINITE\n"
    # A GPU that is not there: slurmd accepts a device file without checking it is a GPU.
    gres = f"AutoDetect=off\nNodeName={node} Name=gpu Count={gpus} File=/dev/null\n"
    (state / "ctld").mkdir(parents=True, exist_ok=True)
    (state / "d").mkdir(parents=True, exist_ok=True)
    (state / "slurm.conf").write_text(conf)
    (state / "gres.conf").write_text(gres if gpus else "")
    CONF.parent.mkdir(parents=True, exist_ok=True)
    for link in (CONF, GRES_CONF):
        if link.is_symlink():
            link.unlink()
        link.symlink_to(state / link.name)


def _wait(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError(f"local SLURM: {what} not ready after {timeout:.0f} s")


def _ok(*command: str) -> bool:
    return subprocess.run(command, capture_output=True, text=True).returncode == 0


def _node_idle() -> bool:
    out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout
    return out.strip() in {"idle", "mix"}


@contextlib.contextmanager
def local_slurm(
    state: Path,
    partitions: tuple[str, ...] = ("main",),
    cpus: int = 0,
    memory_mb: int = 0,
    gpus: int = 0,
) -> Iterator[Path]:
    """Start munged, slurmctld and slurmd; yield the state folder; stop them by PID.

    The one node is in every partition of ``partitions`` (the first is the default) and
    declares at least ``cpus`` CPUs, ``memory_mb`` MB and ``gpus`` fake GPUs.
    """
    procs: list[subprocess.Popen] = []
    run_munge = Path("/run/munge")
    run_munge.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_munge, "munge", "munge")
    _write_conf(state, partitions, cpus, memory_mb, gpus)
    logs = state / "daemons.log"
    try:
        with logs.open("ab") as log:
            munged = ["runuser", "-u", "munge", "--", "munged", "--foreground", "--force"]
            procs.append(subprocess.Popen(munged, stdout=log, stderr=log))
            _wait(lambda: _ok("bash", "-c", "munge -n | unmunge"), "munge")
            procs.append(subprocess.Popen(["slurmctld", "-D", "-i"], stdout=log, stderr=log))
            _wait(lambda: _ok("scontrol", "ping"), "slurmctld")
            procs.append(subprocess.Popen(["slurmd", "-D"], stdout=log, stderr=log))
            _wait(_node_idle, "slurmd node")
        yield state
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for link in (CONF, GRES_CONF):
            if link.is_symlink():
                link.unlink()
