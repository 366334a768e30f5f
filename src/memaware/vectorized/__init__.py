"""Many runs of a head on features in ONE batched tensor program: ``train_many(data, specs)``.

A sweep trains the same method on the same features many times (hyper-parameter combinations x seeds). One at a
time, each run of a linear head pays the whole per-step cost of ``memaware.train.fit`` (Python, dispatch, a small
GEMM) for a few thousand flops. Here C runs ("members") step together:

* Every spec of a call shares the method, the data and the *shape* hyper-parameters (``SHAPE_KEYS``: batch size,
  epochs, max_steps, optimizer, hidden, bias, class_balanced, eval_every); each member has its own seed, lr,
  weight decay, momentum and method hyper-parameters (MAT temperature, GroupDRO eta, JTT T and lambda_up).
* Data order. Member c draws its batches exactly as ``fit`` does with ``torch.Generator().manual_seed(seed_c)``:
  ``method.prepare``'s draws first (XRM's ``random_halves``, SUBG's ``subsample_to_smallest``), then per epoch
  ``train._batches(...)``, then XRM's label-flip uniforms (``torch.rand``, one per drawn example, drawn per step
  by ``fit``; drawn here once per epoch, right after the epoch's batches: the same numbers, because nothing else
  consumes the generator in between and ``torch.rand`` fills element by element).
  Members whose draws are identical (same seed, same sampling weights) share one *stream*: with S streams of at
  most M members each, a step gathers S x b rows of x once and multiplies them with the M members' weights in one
  batched GEMM, so 10 combinations x 3 seeds gather 3 batches, not 30. (JTT's second model samples with its own
  error-set weights: one stream per member.) Slots of a short stream are padded with inert members (lr 0, loss
  weight 0).
* Parameters, all views of one flat tensor. A linear head is ``W`` (S, M, H*K, d) (nn.Linear's layout per slot,
  H heads: 1, XRM 2) and ``b`` (S, M, H*K); with one hidden layer ``W`` (S, M, h, d), ``b`` (S, M, h), ``W2``
  (S, M, H*K, h), ``b2`` (S, M, H*K). Member c's initial weights are ``build_model(..., seed=seed_c)``'s.
  Logits are computed as W X^T, (S, M, H, K, b): with a few outputs per member, (M H K, d) x (d, b) GEMMs are several
  times faster on CPU than (b, d) x (d, M H K) ones.
* Loss. Each member's loss is its method's loss on its own batch, L_m = sum_i w_i CE_i with the method's example
  weights (1/b; class-balanced held-in weights for XRM; q_g / n_g for GroupDRO; loss weights in full batch), so
  dL_m/dz_i = w_i (softmax(z_i) - onehot(y_i)) is written out, and for a linear head dW = dZ^T X too (an MLP
  backpropagates from the logits with autograd). The optimiser step follows ``memaware.optim``'s formulas with
  per-member lr / weight decay / momentum as broadcast tensors.
* Evaluation every ``eval_every`` epochs (and at the last / stopping epoch) as in ``fit``: validation and test
  logits of all members in one GEMM each, every selection criterion of ``tracking.Selector`` per member with the
  same formulas (ties: the later epoch wins) and the ``metrics.group_report`` of each criterion's best epoch.

Methods: erm, rwg, subg, groupdro (q per member), jtt (first phase: ERM for T_c epochs, one program for all
members, error sets read off at each member's own T; members with the same seed, lr, weight decay and momentum
share it), xrm (twin heads, class-balanced held-in loss, per-member label flipping), mat two-phase (a batched XRM
phase 1 with the spec's own settings, as ``MAT._run_phase1`` reuses ``ctx.config``, shared by members that differ
only in temperature; then the shifted cross-entropy of paper eq. 7; predict with f alone; ``val_gi_wga`` uses phase
1's cross-mistake groups).

A member's result equals ``runner.execute``'s for the same spec up to float rounding: the same batches, the same
flips' uniforms, the same initial weights and the same update rules, but GEMMs blocked differently, so logits differ
in the last bits and a near-tie (an argmax, a flip threshold) can occasionally go the other way
(tests/test_vectorized.py measures both exact agreement and agreement in distribution).

``execute_many(specs, run_dirs)`` is the file-level counterpart of ``runner.execute``: it writes each run's
``results.json`` (+ ``inferred_groups.npz``, ``model.pt``) and trains unsupported specs one at a time.
"""

from ._common import DATA_KEYS, SHAPE_KEYS, SUPPORTED_METHODS
from .api import execute_many, group_key, supported, train_many
from .selection import _argmax, _Reports

__all__ = [
    "train_many",
    "execute_many",
    "group_key",
    "supported",
    "SUPPORTED_METHODS",
    "SHAPE_KEYS",
    "DATA_KEYS",
    "_argmax",
    "_Reports",
]
