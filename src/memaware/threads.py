"""Thread policy for experiments made of many small, independent trainings (Fig. 1's runs, Fig. 3's MLPs).

Such trainings are latency-bound: one intra-op thread each, several runs side by side on Python threads, beats
two-core ops run one after the other (BENCHMARKS.md), and is far more robust when other processes share the cores.
The CLI commands switch torch to one intra-op thread for the rest of the process and never switch back: with
torch 2.13's CPU build, calling ``torch.set_num_threads(n)`` with n >= 2 makes later batched ``torch.linalg.solve``
calls fail inside MKL ("Pivots given to lu_solve must all be greater or equal to 1", seen here), so a library
function must not "restore" a thread count. Library callers keep their own setting; with more than one intra-op
thread the experiments simply run their trainings one after the other.
"""

from __future__ import annotations

from .lazy import lazy_module

torch = lazy_module("torch")


def use_one_intraop_thread() -> None:
    """For CLI commands only: one intra-op thread for the rest of the process (see the module docstring)."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def worker_count(requested: int) -> int:
    """How many trainings to run side by side: ``requested`` when torch uses one intra-op thread, else 1."""
    return max(1, requested) if torch.get_num_threads() == 1 else 1
