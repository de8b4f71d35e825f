"""A single-node SLURM cluster on 127.0.0.1 for integration tests (root, Debian packages).

Starts munged, slurmctld and slurmd in the foreground as child processes, so the test stops
exactly the daemons it started (by PID). slurm.conf must be at /etc/slurm/slurm.conf because
the SLURM executor plugin's job step drops SLURM_CONF from the job's environment.
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


def missing_requirements() -> str | None:
    """Why a local cluster cannot start here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root to start munged/slurmd"
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        return f"SLURM/munge not installed (missing {', '.join(missing)}); .ci/run installs them"
    if CONF.exists() and not CONF.is_symlink():
        return f"{CONF} exists and is not ours; refusing to replace it"
    return None


def _node_line() -> tuple[str, str]:
    line = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    fields = [f for f in line.split() if not f.startswith("UpTime")]
    node = next(f for f in fields if f.startswith("NodeName=")).split("=", 1)[1]
    memory = next(int(f.split("=")[1]) for f in fields if f.startswith("RealMemory="))
    fields = [f for f in fields if not f.startswith("RealMemory=")]
    # Leave headroom so the node is not drained for reporting less memory than configured.
    return " ".join([*fields, f"RealMemory={int(memory * 0.9)}", "NodeAddr=127.0.0.1"]), node


def _write_conf(state: Path) -> None:
    node_line, node = _node_line()
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
MinJobAge=600
ReturnToService=2
SchedulerType=sched/backfill
{node_line} State=UNKNOWN
PartitionName=main Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""
    (state / "ctld").mkdir(parents=True, exist_ok=True)
    (state / "d").mkdir(parents=True, exist_ok=True)
    (state / "slurm.conf").write_text(conf)
    CONF.parent.mkdir(parents=True, exist_ok=True)
    if CONF.is_symlink():
        CONF.unlink()
    CONF.symlink_to(state / "slurm.conf")


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
def local_slurm(state: Path) -> Iterator[Path]:
    """Start munged, slurmctld and slurmd; yield the state folder; stop them by PID."""
    procs: list[subprocess.Popen] = []
    run_munge = Path("/run/munge")
    run_munge.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_munge, "munge", "munge")
    _write_conf(state)
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
        if CONF.is_symlink():
            CONF.unlink()
