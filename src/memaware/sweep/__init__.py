"""Hyper-parameter sweeps (paper Table 1): draws from the methods' declarations (``hparams``), planning and the
run directories (``plan``), executors (``executors``: in process, local pool, Slurm through submitit), scheduling and
the manifest (``schedule``), one run per JSON spec (``runner``) and the Table 1 report (``table``)."""

from .executors import EXECUTORS, SlurmOptions, run_batch
from .plan import DataSource, Run, check_specs, plan_sweep
from .schedule import SweepSummary, describe, make_batches, run_sweep

__all__ = [
    "DataSource", "Run", "SlurmOptions", "SweepSummary", "EXECUTORS", "plan_sweep", "run_sweep", "run_batch",
    "make_batches", "check_specs", "describe",
]  # fmt: skip
