"""What memaware asks of a Slurm cluster beyond submitit: the job options (``SlurmOptions``), whether any node of
the partition can ever run the requested job (read from ``sinfo``, checked before anything is submitted), and the
state of submitted jobs (read from ``squeue`` / ``scontrol``, which every cluster has; submitit's own watcher needs
``sacct``, i.e. an accounting database, and would wait forever for a job cancelled without one)."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

# pending reasons that no amount of waiting resolves: the job is cancelled and reported failed
NEVER_RUNS = ("PartitionConfig", "BadConstraints", "PartitionNodeLimit", "PartitionTimeLimit", "InvalidQOS")


@dataclass
class SlurmOptions:
    """Job resources for ``--executor slurm`` (``partition`` None: the cluster's default)."""

    partition: str | None = None
    time_min: int = 60
    gpus: int = 1
    cpus: int = 4
    mem_gb: float = 32.0
    folder: str | None = None  # submitit's logs and pickles; default DIR/submitit
    max_requeues: int = 10  # times a job that reaches its time limit is requeued (each resumes from checkpoints)
    poll_s: float = 10.0  # seconds between two looks at the queue
    extra: dict[str, Any] = field(default_factory=dict)  # further AutoExecutor parameters

    @property
    def signal_delay_s(self) -> int:
        """Seconds before the time limit at which Slurm is asked to send USR2 (submitit then checkpoints and
        requeues the job). slurmctld looks at time limits every 30 s and sends the signal up to 30 s early, so the
        job must be given time to start its handler first: 90 s (submitit's default) for limits of 3 minutes and
        more, the limit less 45 s below (15 s for a one-minute limit: the signal comes 15-45 s after the start)."""
        return int(max(5, min(90, self.time_min * 60 - 45)))


@dataclass(frozen=True)
class Node:
    """One node of a partition as ``sinfo`` reports it: CPUs, memory in MB, GPUs (from its gres)."""

    name: str
    partition: str
    default: bool  # the partition is the cluster's default
    cpus: int
    mem_mb: int
    gpus: int

    def describe(self) -> str:
        return f"{self.name} with {self.cpus} CPUs, {self.mem_mb / 1024:.1f} GB, {self.gpus} GPUs"


def _run(cmd: list[str], timeout: float = 20.0) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout
    except FileNotFoundError:
        raise ConfigError(f"--executor slurm: {cmd[0]} not found (run the sweep on a Slurm login node)") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(f"--executor slurm: {' '.join(cmd)} did not answer in {timeout:.0f} s") from None
    except subprocess.CalledProcessError as e:
        msg = (e.stderr or e.stdout or "").strip().splitlines()
        raise ConfigError(f"--executor slurm: {' '.join(cmd)} failed: {msg[-1] if msg else e.returncode}") from None


def gres_gpus(gres: str) -> int:
    """GPUs in a gres string: 'gpu:4', 'gpu:a100:2(S:0-1),shard:8', '(null)' -> 4, 2, 0."""
    total = 0
    for item in gres.split(","):
        m = re.match(r"gpu(?::[^:(]+)?:(\d+)", item.strip())
        if m:
            total += int(m.group(1))
    return total


def parse_sinfo(text: str) -> list[Node]:
    """Lines of ``sinfo -h -N -o '%P|%N|%c|%m|%G'`` -> nodes (a node appears once per partition)."""
    nodes = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5:
            continue
        part, name, cpus, mem, gres = parts
        try:
            mem_mb = int(re.sub(r"\D.*", "", mem))
            nodes.append(Node(name, part.rstrip("*"), part.endswith("*"), int(cpus), mem_mb, gres_gpus(gres)))
        except ValueError:
            continue
    return nodes


def partition_nodes(partition: str | None) -> tuple[str, list[Node]]:
    """(partition name, its nodes) for ``partition`` or, when None, the cluster's default partition."""
    nodes = parse_sinfo(_run(["sinfo", "-h", "-N", "-o", "%P|%N|%c|%m|%G"]))
    names = sorted({n.partition for n in nodes})
    if partition is None:
        default = [n.partition for n in nodes if n.default]
        if not default:
            raise ConfigError(
                f"--executor slurm: the cluster has no default partition; give --partition ({', '.join(names)})"
            )
        partition = default[0]
    mine = [n for n in nodes if n.partition == partition]
    if not mine:
        raise ConfigError(f"--partition {partition}: no such partition (sinfo lists {', '.join(names) or 'none'})")
    return partition, mine


def check_request(partition: str | None, cpus: int, mem_gb: float, gpus: int) -> str:
    """Raises a one-line ``ConfigError`` when no node of the partition can ever give a job ``cpus`` CPUs,
    ``mem_gb`` GB and ``gpus`` GPUs (Slurm would leave it pending forever); returns the partition's name."""
    name, nodes = partition_nodes(partition)
    mem_mb = mem_gb * 1024  # submitit asks for mem_gb as "<n>GB", and Slurm's GB are 1024 MB
    if any(n.cpus >= cpus and n.mem_mb >= mem_mb and n.gpus >= gpus for n in nodes):
        return name
    largest = max(nodes, key=lambda n: (n.gpus, n.cpus, n.mem_mb))
    raise ConfigError(
        f"--cpus {cpus} --mem-gb {mem_gb:g} --gpus {gpus}: no node of partition '{name}' can ever run such a job "
        f"(largest node: {largest.describe()}, from sinfo); lower the request or choose another --partition"
    )


REQUEUING = "DUE TO JOB REQUEUE"  # slurmstepd's last line in the log of a job that Slurm is requeuing


def queue_states(job_ids: list[str]) -> dict[str, tuple[str, str]] | None:
    """{job id: (state, reason)} of those of ``job_ids`` still in the queue (array tasks as '123_4'); None when
    squeue does not answer (then nothing can be concluded)."""
    if not job_ids:
        return {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i|%T|%r"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return None
    states = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = (parts[1], parts[2])
    return states


def ended_reason(job_id: str, stderr_log: Path | None = None) -> str:
    """Why a job left the queue without results: its state from ``scontrol show job`` (kept MinJobAge seconds) and
    the job's own last word from its log (e.g. '*** JOB 12 ON node CANCELLED AT ... ***')."""
    state = ""
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=20)
        m = re.search(r"JobState=(\S+)", out.stdout)
        r = re.search(r"Reason=(\S+)", out.stdout)
        if m:
            state = m.group(1) + (f" (reason {r.group(1)})" if r and r.group(1) != "None" else "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    last = ""
    if stderr_log is not None:
        try:
            lines = [ln.strip() for ln in stderr_log.read_text(errors="replace").splitlines() if ln.strip()]
            slurm_lines = [ln for ln in lines if "***" in ln or "slurmstepd" in ln]
            last = (slurm_lines or lines or [""])[-1][:300]
        except OSError:
            pass
    text = f"job {job_id} ended {state or 'without results'}"
    return text + (f": {last}" if last else "")


def cancel(job_id: str) -> None:
    subprocess.run(["scancel", job_id], capture_output=True, timeout=30, check=False)


class QueueWatch:
    """Tells, from squeue, which submitit jobs left the queue without writing their result (``ended``: handle ->
    why, for the sweep's report) and cancels jobs Slurm says can never start.

    A job being requeued (submitit's answer to a time limit) passes through a terminal state (e.g. FAILED) for a
    moment, when squeue does not list it, before Slurm queues it again: only a job unlisted for ``grace_s`` has
    really left. A job whose log ends with Slurm's '... CANCELLED ... DUE TO JOB REQUEUE' line is on its way back
    and gets ``requeue_grace_s`` instead (on a loaded machine the controller may take longer than ``grace_s``)."""

    def __init__(self, grace_s: float = 15.0, requeue_grace_s: float = 180.0) -> None:
        self.grace_s, self.requeue_grace_s = grace_s, requeue_grace_s
        self.ended: dict[Any, str] = {}
        self._absent_since: dict[Any, float] = {}

    def look(self, handles: list[Any]) -> None:
        states = queue_states([h.job_id for h in handles])
        if states is None:  # squeue did not answer: conclude nothing this time
            return
        for h in handles:
            if h in self.ended:
                continue
            state, reason = states.get(h.job_id, (None, ""))
            if state is None and not h.paths.result_pickle.exists():  # unlisted (pickle checked after squeue)
                absent = time.monotonic() - self._absent_since.setdefault(h, time.monotonic())
                if absent >= self.grace_s:
                    why = ended_reason(h.job_id, h.paths.stderr)
                    if REQUEUING not in why or absent >= self.requeue_grace_s:
                        self.ended[h] = why
                continue
            self._absent_since.pop(h, None)
            if state == "PENDING" and reason in NEVER_RUNS:
                cancel(h.job_id)
                self.ended[h] = f"job {h.job_id} cancelled: Slurm says it can never start ({reason})"


__all__ = [
    "SlurmOptions", "NEVER_RUNS", "Node", "gres_gpus", "parse_sinfo", "partition_nodes", "check_request",
    "queue_states", "ended_reason", "cancel", "QueueWatch",
]  # fmt: skip
