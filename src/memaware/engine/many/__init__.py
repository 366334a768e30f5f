"""Many runs at once: the engine's batched mode, driven by the same ``Method`` objects as ``engine.fit``.

A sweep trains one method on the same features many times (hyper-parameter combinations x seeds); the memorization
audit trains K models on K halves of the training set. One at a time, each run of a head pays the whole per-step
cost of ``engine.fit`` (Python, dispatch, a small GEMM) for a few thousand flops. Here C runs ("members") step
together through the engine's one loop (``engine.loop.run_epochs``):

* ``train_members(data, [Member(method, config, model_kwargs, rows, external_groups), ...])`` returns one
  ``FitResult`` per member, each equal to ``fit`` of the same run (on float64 data to the last bits that matter:
  the same selected epoch, criterion and reports, weights within 1e-9; tests/test_vectorized.py). Phases (MAT's
  XRM, JTT's ERM) train first as batched members, each distinct phase run once; every member's own method is then
  prepared on its own context (``members``).
* Data order (``layout``): member c draws exactly what ``fit`` draws from ``Generator().manual_seed(seed_c)``;
  members with equal draws share one stream (one gathered batch for all of them, one GEMM).
* Steps (``steps``): the method's fast path (``Method.batched_loss``, in the method's own module: dL/dlogits of all
  members at once, pinned to autograd of the method's ``loss``), or each member's own ``loss`` through autograd on
  its slice of the stacked logits: any classification method with the plain forward (a plug-in
  ``package.module:Class`` too) trains batched. Models are stacked copies of ``build_model``'s (``stacked``);
  the optimiser is ``engine.optim``'s with per-member tensors.
* Evaluation and selection (``program``, ``selection``): each member's logs (``EvalLog.append_many``), online best
  checkpoint and criteria reports from ``memaware.selection``.
* Specs (``api``): ``train_many(data, specs)`` / ``execute_many(specs, run_dirs)`` are the batched counterparts of
  ``runner.execute`` (same results dicts and files, evaluations.npz included); ``group_key`` says which specs can
  share a program, ``supported`` which can be batched at all.
"""

from .api import DATA_KEYS, SHAPE_KEYS, execute_many, group_key, supported, train_many
from .members import Member, fast_path, train_members, trainable

__all__ = [
    "train_many", "execute_many", "group_key", "supported", "SHAPE_KEYS", "DATA_KEYS", "Member", "train_members",
    "fast_path", "trainable",
]  # fmt: skip
