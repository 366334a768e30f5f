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

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .data.groups import TEST, TRAIN, VAL, GroupData, group_name
from .errors import ConfigError
from .methods import Method, make_method
from .methods.balancing import inverse_frequency_weights, subsample_to_smallest
from .methods.jtt import upweight
from .methods.mat import mat_log_shift
from .methods.xrm import cross_mistake_groups, flip_probability, random_halves
from .models import build_model
from .tracking import CRITERIA, Selector
from .train import TrainConfig, _batches, _sampling_weights

SUPPORTED_METHODS = ("erm", "xrm", "mat", "groupdro", "rwg", "subg", "jtt")
# hyper-parameters every member of one program shares (they fix the program's shape and schedule)
SHAPE_KEYS = ("batch_size", "epochs", "max_steps", "optimizer", "hidden", "bias", "class_balanced", "eval_every")
DATA_KEYS = ("data", "dataset", "data_dir", "backbone", "weights", "image_size")
_EVAL_FLOATS = 1 << 24  # bound an evaluation chunk's (rows x members x outputs) to ~64 MB


# ---- which specs can share a program ---------------------------------------------------------------------------
def _hparams(spec: dict[str, Any]) -> dict[str, Any]:
    from .runner import resolve_hparams  # lazy: runner imports train, keep this module importable on its own

    return resolve_hparams(spec.get("method", ""), spec.get("hparams"))


def group_key(spec: dict[str, Any]) -> tuple:
    """What specs must share to be trained by one ``train_many`` call: method, data, device, shape hyper-parameters
    (``SHAPE_KEYS``) and MAT's mode. Seeds, lr, weight decay, momentum and method hyper-parameters may differ."""
    method = spec.get("method")
    try:
        hp = _hparams(spec)
    except ConfigError:
        hp = dict(spec.get("hparams") or {})
    shape = tuple(json.dumps(hp.get(k), sort_keys=True) for k in SHAPE_KEYS)
    data = tuple(json.dumps(spec.get(k)) for k in DATA_KEYS)
    return (method, data, spec.get("device") or "cpu", shape, hp.get("mode"))


def supported(spec: dict[str, Any]) -> bool:
    """Whether ``train_many`` can train ``spec``: a supported method on a features file (``data``), a linear head
    or one hidden layer, MAT in two-phase form without given held-out logits, valid hyper-parameters, an available
    device. Anything else goes through ``runner.execute``."""
    method = spec.get("method")
    if method not in SUPPORTED_METHODS or spec.get("dataset") is not None:
        return False
    try:
        hp = _hparams(spec)
    except ConfigError:
        return False
    hidden = hp.get("hidden") or []
    if not isinstance(hidden, list | tuple) or len(hidden) > 1:
        return False
    if method == "mat" and hp.get("mode", "two-phase") != "two-phase":
        return False
    device = spec.get("device") or "cpu"
    return device == "cpu" or (device.startswith("cuda") and torch.cuda.is_available())


# ---- one program: C members of one method phase ------------------------------------------------------------------
@dataclass(frozen=True)
class _Shape:
    """The settings every member of a program shares."""

    epochs: int
    max_steps: int
    optimizer: str
    batch_size: int
    class_balanced: bool
    eval_every: int
    hidden: tuple[int, ...]
    bias: bool
    device: str


@dataclass
class _Member:
    """One member's own settings; ``example_weights`` (n_train,) float64 (RWG, JTT), ``shift`` (n_train, K) (MAT)."""

    seed: int
    lr: float
    weight_decay: float
    momentum: float
    eta: float = 0.01
    example_weights: torch.Tensor | None = None
    shift: torch.Tensor | None = None


@dataclass
class _Stream:
    """Members that draw the same batches: one generator, one sampling-weight vector, one active subset."""

    seed: int
    generator: torch.Generator
    weights: torch.Tensor | None  # (n_train,) float64 draw weights, or None
    active: torch.Tensor | None  # (pool,) SUBG's kept positions, or None
    members: list[int] = field(default_factory=list)


def _clone(generator: torch.Generator) -> torch.Generator:
    g = torch.Generator()
    g.set_state(generator.get_state())
    return g


def _digest(t: torch.Tensor | None) -> str | None:
    return None if t is None else hashlib.sha1(t.contiguous().numpy().tobytes()).hexdigest()


class _Program:
    """C members of one method phase trained in one batched tensor program.

    ``loss``: "ce" (head 0; MAT's shift and RWG/JTT full-batch loss weights optional), "groupdro" or "xrm" (two
    heads). ``prepare``: None, "xrm" (held-in halves per seed) or "subg" (kept subset per seed). Layout: S streams
    x M slots; slot (s, m) holds member ``streams[s].members[m]`` or an inert pad (a copy of the stream's first
    member with lr 0 and no gradient).
    """

    def __init__(
        self,
        data: GroupData,
        shape: _Shape,
        members: Sequence[_Member],
        loss: str,
        prepare: str | None = None,
        num_heads: int = 1,
    ):
        self.shape, self.loss_kind, self.num_heads = shape, loss, num_heads
        dev = torch.device(shape.device)
        train_idx = data.indices(TRAIN)
        self.n, self.k, self.dim = len(train_idx), data.num_classes, data.dim
        self.num_groups = data.num_groups
        self.x_train = data.x[train_idx].to(dev)
        y_cpu = data.y[train_idx]
        self.y_train = y_cpu.to(dev)
        group_cpu = data.group[train_idx]
        self.g_train = group_cpu.to(dev)
        self.members = list(members)

        # method.prepare's draws, once per seed, from the generator fit seeds with it (train.fit, then prepare)
        per_seed: dict[int, tuple[torch.Generator, torch.Tensor | None, torch.Tensor | None]] = {}
        for seed in dict.fromkeys(m.seed for m in self.members):
            g = torch.Generator().manual_seed(int(seed))
            halves = random_halves(self.n, g) if prepare == "xrm" else None
            active = subsample_to_smallest(group_cpu, g) if prepare == "subg" else None
            per_seed[seed] = (g, halves, active)
        pools = {self.n if a is None else len(a) for _, _, a in per_seed.values()}
        if len(pools) != 1:  # cannot happen: the subset size depends on the group counts only
            raise ConfigError("members of one program must draw equally long epochs")
        pool = pools.pop()
        self.bs = shape.batch_size if 0 < shape.batch_size < pool else pool
        cfg = SimpleNamespace(class_balanced=shape.class_balanced)

        # sampling weights per member exactly as train._sampling_weights; full batch: loss weights instead
        streams: dict[tuple, _Stream] = {}
        loss_weights: list[torch.Tensor | None] = []
        for c, m in enumerate(self.members):
            g, _, active = per_seed[m.seed]
            stub = SimpleNamespace(example_weights=m.example_weights, active_positions=active)
            w = _sampling_weights(stub, cfg, y_cpu)  # type: ignore[arg-type]
            lw = None
            if w is not None and self.bs >= pool:  # train.fit: the same expected loss, through the loss
                lw, w = (w / w.sum() * self.n).float(), None
            loss_weights.append(lw)
            key = (m.seed, _digest(w))
            if key not in streams:
                streams[key] = _Stream(m.seed, _clone(g), w, active)
            streams[key].members.append(c)
        self.streams = list(streams.values())
        S, M = len(self.streams), max(len(s.members) for s in self.streams)
        self.S, self.M, self.C = S, M, len(self.members)
        slot = torch.empty(self.C, dtype=torch.long)
        source = torch.empty(S, M, dtype=torch.long)  # the member whose settings fill a slot (pads: the first)
        mask = torch.zeros(S, M)
        for s, st in enumerate(self.streams):
            for j in range(M):
                c = st.members[j] if j < len(st.members) else st.members[0]
                source[s, j] = c
                if j < len(st.members):
                    slot[c], mask[s, j] = s * M + j, 1.0
        self.slot, self.mask = slot.to(dev), mask.to(dev)

        def per_slot(values: list[float], dtype: torch.dtype = torch.float64) -> torch.Tensor:
            t = torch.tensor(values, dtype=dtype)[source]
            return t * mask.to(dtype) if dtype.is_floating_point else t

        self.lr = per_slot([m.lr for m in self.members])  # (S, M) float64, 0 on pads
        self.wd = per_slot([m.weight_decay for m in self.members])
        self.mom = per_slot([m.momentum for m in self.members])
        self.eta = torch.tensor([m.eta for m in self.members], dtype=torch.float64)[source].to(dev).unsqueeze(-1)

        # per-stream / per-slot per-example state, indexed [s, position, m]
        if prepare == "xrm":
            self.held_in = torch.stack([per_seed[st.seed][1] for st in self.streams]).to(dev)  # (S, n)
            self.labels = self.y_train.view(1, -1, 1).expand(S, self.n, M).clone()  # (S, n, M) flipped labels
        self.loss_weights = None
        if any(lw is not None for lw in loss_weights):
            ones = torch.ones(self.n)
            lw_all = torch.stack([lw if lw is not None else ones for lw in loss_weights])  # (C, n)
            self.loss_weights = lw_all[source].permute(0, 2, 1).contiguous().to(dev)  # (S, n, M)
        self.shift = None
        if any(m.shift is not None for m in self.members):
            zeros = torch.zeros(self.n, self.k)
            sh = torch.stack([m.shift.float() if m.shift is not None else zeros for m in self.members])
            self.shift = sh[source].permute(0, 2, 1, 3).contiguous().to(dev)  # (S, n, M, K)
        if loss == "groupdro":
            self.q = torch.full((S, M, self.num_groups), 1.0 / self.num_groups, dtype=torch.float64, device=dev)
        self.offsets = (torch.arange(S) * self.n).view(S, 1).to(dev)
        self.classes = torch.arange(self.k, device=dev).view(-1, 1, 1, 1)
        self.group_ids = torch.arange(self.num_groups, device=dev)

        self._init_params(source, dev)
        self._init_optimizer(dev)
        self.steps = 0
        self.x_buffer = self.x_train.new_empty((0, self.dim))

    # ---- parameters --------------------------------------------------------------------------------------
    def _init_params(self, source: torch.Tensor, dev: torch.device) -> None:
        """W (S, M, P, d) [+ b (S, M, P)] (nn.Linear's layout per slot); with a hidden layer of width h (P = h)
        also W2 (S, M, H*K, h) [+ b2 (S, M, H*K)]."""
        S, M, d = self.S, self.M, self.dim
        hidden = self.shape.hidden
        built: dict[int, list[torch.Tensor]] = {}
        for c in dict.fromkeys(source.flatten().tolist()):
            net = build_model(d, self.k, self.num_heads, hidden, self.shape.bias, seed=self.members[c].seed)
            built[c] = [p.detach() for p in net.parameters()]  # [W1, b1, W2, b2] or [W, b] (bias optional)

        def stack(i: int) -> torch.Tensor:  # parameter i of every slot, (S, M, *shape)
            return torch.stack([torch.stack([built[int(c)][i] for c in row]) for row in source])

        self.hidden_width = hidden[0] if hidden else 0
        params: list[tuple[str, torch.Tensor, tuple[int, ...]]] = []
        params.append(("w1", stack(0), (S, M, 1, 1)))  # (S, M, P, d)
        if hidden:
            params.append(("b1", stack(1), (S, M, 1)))
            params.append(("w2", stack(2), (S, M, 1, 1)))  # (S, M, H*K, h)
            if self.shape.bias:
                params.append(("b2", stack(3), (S, M, 1)))
        else:
            if self.shape.bias:
                params.append(("b1", stack(1), (S, M, 1)))
        # one flat leaf holds every parameter (one optimiser update of a few ops per step); views give the shapes
        self.names = [name for name, _, _ in params]
        self.shapes = [tuple(p.shape) for _, p, _ in params]
        self.sizes = [p.numel() for _, p, _ in params]
        self.hp_shapes = [hs for _, _, hs in params]  # how an (S, M) per-slot value broadcasts onto each
        self.flat = torch.cat([p.reshape(-1) for _, p, _ in params]).to(dev).requires_grad_(bool(hidden))
        self._views = None if hidden else self._split(self.flat)  # autograd needs fresh views each step

    def _split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        views = flat.split(self.sizes)
        return {n: v.view(shape) for n, v, shape in zip(self.names, views, self.shapes, strict=True)}

    def per_element(self, values: torch.Tensor) -> torch.Tensor:
        """(S, M) per-slot values -> (N,) along the flat parameters."""
        parts = [values.view(hs).expand(sh).reshape(-1) for hs, sh in zip(self.hp_shapes, self.shapes, strict=True)]
        return torch.cat(parts).to(self.flat.device)

    @property
    def p(self) -> dict[str, torch.Tensor]:
        """The parameters as views of the flat leaf: w1 (S, M, P, d), b1 (S, M, P), w2 (S, M, H*K, h), b2."""
        return self._views if self._views is not None else self._split(self.flat)

    def _init_optimizer(self, dev: torch.device) -> None:
        """Per-element copies of the per-slot settings (memaware.optim's rules, per member)."""
        opt = self.shape.optimizer
        self.decoupled = opt == "adamw"
        self.any_wd = bool((self.wd > 0).any())
        self.any_mom = opt == "sgd" and bool((self.mom > 0).any())
        self.lr_e = self.per_element(self.lr.float())  # (N,)
        self.wd_e = self.per_element(self.wd.float())
        self.mom_e = self.per_element(self.mom.float())
        # AdamW: p <- p (1 - lr wd), the factor computed in float64 as optim.Adam does with Python floats
        self.decay_e = self.per_element((1 - self.lr * self.wd).float())
        self.t = 0
        zeros = torch.zeros_like(self.flat, requires_grad=False)
        self.buf = zeros.clone() if self.any_mom else None
        if opt != "sgd":
            self.m, self.v, self.update = zeros.clone(), zeros.clone(), zeros.clone()
            self.m_parts = list(self._split(self.m).values())
            self.update_parts = list(self._split(self.update).values())

    @torch.no_grad()
    def _linear_grad(self, dz: torch.Tensor, xb: torch.Tensor | None) -> torch.Tensor:
        """The flat gradient (N,) of linear heads from dL/dlogits ``dz`` (H, K, S, b, M): dW_s = dZ_s^T X_s,
        db_s = sum_i dZ_s[i] (what autograd would give through the GEMM, without its bookkeeping). Pad slots
        get none."""
        S, M, d = self.S, self.M, self.dim
        H, K, _, b, _ = dz.shape
        dzt = torch.empty(S, M, H, K, b, dtype=dz.dtype, device=dz.device)
        torch.mul(dz.permute(2, 4, 0, 1, 3), self.mask.view(S, M, 1, 1, 1), out=dzt)
        grad = torch.empty_like(self.flat, requires_grad=False)
        views = grad.split(self.sizes)
        if xb is not None:
            torch.bmm(dzt.view(S, M * H * K, b), xb, out=views[0].view(S, M * H * K, d))  # (S, M P, b) x (S, b, d)
        else:
            torch.mm(dzt.view(S * M * H * K, b), self.x_train, out=views[0].view(S * M * H * K, d))
        if len(views) > 1:
            torch.sum(dzt.view(S, M * H * K, b), dim=2, out=views[1].view(S, M * H * K))
        return grad

    @torch.no_grad()
    def _optimizer_step(self, g: torch.Tensor) -> None:
        """SGD: b <- mom b + (g + wd p) (b_0 = 0, i.e. b_1 = g + wd p), p <- p - lr b. Adam / AdamW as
        memaware.optim.Adam (coupled / decoupled decay, bias-corrected moments). ``g`` (N,) flat gradient."""
        p = self.flat
        if self.shape.optimizer == "sgd":
            d = g + self.wd_e * p if self.any_wd else g
            if self.any_mom:
                d = self.buf.mul_(self.mom_e).add_(d)
            p.sub_(self.lr_e * d)
            return
        self.t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        if self.any_wd:
            if self.decoupled:
                p.mul_(self.decay_e)
            else:
                g = g + self.wd_e * p
        self.m.lerp_(g, 1 - b1)
        self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (self.v / bc2).sqrt_().add_(eps)
        # p <- p - ((lr / bc1) m) / denom, lr / bc1 per member in float64 then float32 (as optim.Adam's scalar)
        step = (self.lr / bc1).float().to(p.device)
        for m_part, u_part, hs in zip(self.m_parts, self.update_parts, self.hp_shapes, strict=True):
            torch.mul(m_part, step.view(hs), out=u_part)
        p.sub_(self.update.div_(denom))

    # ---- forward -----------------------------------------------------------------------------------------
    def _forward(self, xb: torch.Tensor | None, x: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (S, M, H, K, b) of gathered rows ``xb`` (S, b, d), or of shared rows ``x`` (b, d). Computed as
        W X^T: with few outputs per member, (M P, d) x (d, b) GEMMs are several times faster on CPU than
        (b, d) x (d, M P) ones."""
        S, M, d, H, K = self.S, self.M, self.dim, self.num_heads, self.k
        params = self.p
        w1, b1 = params["w1"], params.get("b1")
        width = w1.shape[2]
        if xb is not None:  # S GEMMs (M P, d) x (d, b): every member of a stream at once
            b = xb.shape[1]
            w, xt = w1.view(S, M * width, d), xb.transpose(1, 2)
            z = torch.bmm(w, xt) if b1 is None else torch.baddbmm(b1.view(S, M * width, 1), w, xt)
        else:  # one GEMM (S M P, d) x (d, b)
            b = x.shape[0]
            w, xt = w1.view(S * M * width, d), x.t()
            z = w @ xt if b1 is None else torch.addmm(b1.view(-1, 1), w, xt)
            z = z.view(S, M * width, b)
        if self.hidden_width:
            h = self.hidden_width
            act = torch.relu(z).reshape(S * M, h, b)
            w2, b2 = params["w2"].view(S * M, H * K, h), params.get("b2")
            z = torch.bmm(w2, act) if b2 is None else torch.baddbmm(b2.view(S * M, H * K, 1), w2, act)
        return z.view(S, M, H, K, b)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (C, H, K, n) logits of every member (in member order), in row chunks. Examples last: argmax
        over a short class axis is much faster when it is not the innermost one."""
        width = self.shapes[0][2]
        chunk = max(1, _EVAL_FLOATS // max(1, self.S * self.M * max(width, self.num_heads * self.k)))
        x = x.to(self.x_train.device)
        raw = torch.cat([self._forward(None, x[i : i + chunk]) for i in range(0, len(x), chunk)], dim=4)
        return raw.view(self.S * self.M, self.num_heads, self.k, len(x)).index_select(0, self.slot)

    # ---- per-example state ---------------------------------------------------------------------------------
    @staticmethod
    def _take(values: torch.Tensor, flat: torch.Tensor | None, S: int, b: int) -> torch.Tensor:
        """values (S, n, ...) -> (S, b, ...) at the step's positions (``flat`` = s * n + position), or all."""
        if flat is None:
            return values
        return values.view(-1, *values.shape[2:]).index_select(0, flat).view(S, b, *values.shape[2:])

    # ---- one step ----------------------------------------------------------------------------------------
    def _cross_entropy(self, z: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-example cross-entropy of logits z (K, S, b, M) against ``target`` (S, b, M) or (S, b, 1): returns
        ce (S, b, M), its gradient softmax(z) - onehot(target) (K, S, b, M) and the one-hot (K, S, b, M or 1).
        The class axis comes first: torch's (log_)softmax over a short last axis is several times slower."""
        logp = z.log_softmax(dim=0)
        onehot = (target.unsqueeze(0) == self.classes).to(logp.dtype)
        ce = -(logp * onehot).sum(dim=0)
        return ce, logp.exp_().sub_(onehot), onehot

    def _loss_grad(
        self, z: torch.Tensor, y: torch.Tensor, g: torch.Tensor | None, flat: torch.Tensor | None
    ) -> tuple[torch.Tensor, tuple | None]:
        """dL_m/dlogits (H, K, S, b, M) of every member's loss on its batch, from logits ``z`` (H, K, S, b, M)
        (the loss itself is never needed), and for XRM what its label flips need. As in methods/:
        L_m = sum_i w_i CE_i with per-member example weights w."""
        H, K, S, b, M = z.shape
        if self.loss_kind == "xrm":
            # XRM (Pezeshki et al. 2023; methods/xrm.py): each head's class-balanced CE on the examples it holds in,
            # L_m = sum_k mean_{i held in, label_i = k} CE_i, so w_i = 1 / |{j in batch : label_j = label_i}|
            sel = self._take(self.held_in, flat, S, b).bool().view(S, b, 1)
            labels = self._take(self.labels, flat, S, b)  # (S, b, M) current (flipped) labels
            _, dz, onehot = self._cross_entropy(torch.where(sel, z[1], z[0]), labels)
            w = (onehot / onehot.sum(dim=2, keepdim=True).clamp_min_(1.0)).sum(dim=0)  # (S, b, M)
            held_in = torch.stack([~sel, sel]).to(dz.dtype).unsqueeze(1)  # (2, 1, S, b, 1): head i holds in
            return (dz * w).unsqueeze(0) * held_in, (sel, z, labels)
        zc = z[0]
        if self.shift is not None:  # MAT, paper eq. 7: CE(softmax(f(x_i) + log(p_ho(. | x_i) + 1e-6)), y_i)
            zc = zc + self._take(self.shift, flat, S, b).permute(3, 0, 1, 2)
        ce, dz, _ = self._cross_entropy(zc, y.unsqueeze(2))
        if self.loss_kind == "groupdro":
            # GroupDRO (Sagawa et al. 2020, Alg. 1; methods/groupdro.py): l_g the batch's group means,
            # q_g <- q_g exp(eta l_g) (groups in the batch), renormalised; L = sum_g q_g l_g
            onehot = (g.unsqueeze(-1) == self.group_ids).to(ce.dtype)  # (S, b, G)
            n_g = onehot.sum(dim=1).unsqueeze(1)  # (S, 1, G)
            counts = n_g.clamp_min(1.0)
            means = torch.bmm(ce.transpose(1, 2), onehot) / counts  # (S, M, G)
            q = self.q * torch.exp(self.eta * means.double() * (n_g > 0))
            self.q = q / q.sum(dim=-1, keepdim=True)
            w = torch.bmm(onehot, (self.q.to(ce.dtype) / counts).transpose(1, 2))  # (S, b, M): q_g(i) / n_g(i)
        elif self.loss_weights is not None:  # full batch with RWG / JTT / class-balance weights (Method.ce)
            lw = self._take(self.loss_weights, flat, S, b)
            w = lw / lw.sum(dim=1, keepdim=True)
        else:  # mean cross-entropy
            w = torch.full((), 1.0 / b, dtype=ce.dtype, device=ce.device)
        return (dz * w).unsqueeze(0), None

    def _step(self, pos: torch.Tensor | None, flat: torch.Tensor | None, u: torch.Tensor | None) -> None:
        """One optimiser step of every member. ``pos`` (S, b) training positions (None: all, in order),
        ``flat`` = pos + s * n, ``u`` (S, b) XRM's flip uniforms."""
        S, K, M = self.S, self.k, self.M
        xb = None
        if pos is None:
            b = self.n
            y = self.y_train.expand(S, b)
            g = self.g_train.expand(S, b)
        else:
            b = pos.shape[1]
            rows = pos.reshape(-1)
            if len(self.x_buffer) < len(rows):  # one reused gather buffer, as train.fit
                self.x_buffer = self.x_train.new_empty((len(rows), self.dim))
            xb = torch.index_select(self.x_train, 0, rows, out=self.x_buffer[: len(rows)]).view(S, b, self.dim)
            y = self.y_train.index_select(0, rows).view(S, b)
            g = self.g_train.index_select(0, rows).view(S, b) if self.loss_kind == "groupdro" else None
        x_shared = self.x_train if xb is None else None
        if self.hidden_width:  # autograd through the MLP, from the logits' gradient
            self.flat.grad = None
            raw = self._forward(xb, x_shared)  # (S, M, H, K, b)
            dz, flips = self._loss_grad(raw.detach().permute(2, 3, 0, 4, 1).contiguous(), y, g, flat)
            raw.backward(dz.permute(2, 4, 0, 1, 3) * self.mask.view(S, M, 1, 1, 1))  # pads learn nothing
            grad = self.flat.grad
        else:  # linear heads: dW = dZ^T X by hand
            with torch.no_grad():
                z = self._forward(xb, x_shared).permute(2, 3, 0, 4, 1).contiguous()  # (H, K, S, b, M)
            dz, flips = self._loss_grad(z, y, g, flat)
            grad = self._linear_grad(dz, xb)
        self._optimizer_step(grad)
        if flips is not None:  # after the step, with the pre-step logits (train.fit -> XRM.after_step)
            sel, z, labels = flips
            heldout = torch.where(sel, z[0], z[1])  # (K, S, b, M)
            p_max, y_ho = heldout.softmax(dim=0).max(dim=0)
            flip = u.unsqueeze(-1) < flip_probability(p_max, K)  # (p_ho - 1/K) K / (K - 1), methods/xrm.py
            new = torch.where(flip, y_ho, labels)
            if flat is None:
                self.labels = new.contiguous()
            else:
                self.labels.view(-1, M).index_copy_(0, flat, new.reshape(-1, M))

    # ---- the loop ----------------------------------------------------------------------------------------
    def _draw_epoch(self) -> tuple[torch.Tensor | None, list[int], torch.Tensor | None]:
        """Every stream's epoch: positions (S, drawn) or None (full batch in order), batch sizes, XRM uniforms."""
        per_stream = [_batches(self.n, self.bs, st.generator, st.weights, st.active) for st in self.streams]
        first = per_stream[0]
        if first[0] is None:
            sizes, pos = [self.n], None
        else:
            sizes = [len(p) for p in first]
            pos = torch.stack([torch.cat(b) for b in per_stream])
        u = None
        if self.loss_kind == "xrm":
            total = sum(sizes)
            u = torch.stack([torch.rand(total, generator=st.generator) for st in self.streams])
        dev = self.x_train.device
        return (None if pos is None else pos.to(dev)), sizes, (None if u is None else u.to(dev))

    def run(
        self,
        epochs: int | None = None,
        on_eval: Callable[[int], None] | None = None,
        on_epoch: Callable[[int, bool], None] | None = None,
        label: str = "",
        progress: bool = False,
    ) -> int:
        """The loop of ``train.fit`` for every member at once; returns the last epoch run.

        ``on_eval(epoch)`` where fit evaluates (every eval_every epochs, the last one, a stop);
        ``on_epoch(epoch, last)`` after every epoch.
        """
        total = epochs or self.shape.epochs
        max_steps, epoch = self.shape.max_steps, 0
        show = progress and sys.stderr.isatty()
        for epoch in tqdm(range(1, total + 1), desc=label, disable=not show, leave=False):
            pos, sizes, u = self._draw_epoch()
            flat_all = None if pos is None else pos + self.offsets
            start = 0
            for b in sizes:
                if max_steps and self.steps >= max_steps:
                    break
                self.steps += 1
                if pos is None:
                    self._step(None, None, u)
                else:
                    end = start + b
                    u_b = None if u is None else u[:, start:end]
                    self._step(pos[:, start:end], flat_all[:, start:end].reshape(-1), u_b)
                    start = end
            stop = bool(max_steps and self.steps >= max_steps)
            if on_epoch is not None:
                on_epoch(epoch, stop or epoch == total)
            if on_eval is not None and not (epoch % self.shape.eval_every and epoch != total and not stop):
                on_eval(epoch)
            if stop:
                break
        return epoch

    def member_state(self, c: int) -> dict[str, torch.Tensor]:
        """Member c's parameters as a ``MultiHeadNet`` state dict (CPU)."""
        s, j = divmod(int(self.slot[c]), self.M)
        p = {k: v.detach() for k, v in self.p.items()}
        if not self.hidden_width:
            out = {"heads.linear.weight": p["w1"][s, j].cpu().clone()}
            if "b1" in p:
                out["heads.linear.bias"] = p["b1"][s, j].cpu().clone()
            return out
        out = {
            "backbone.0.weight": p["w1"][s, j].cpu().clone(),
            "backbone.0.bias": p["b1"][s, j].cpu().clone(),
            "heads.linear.weight": p["w2"][s, j].cpu().clone(),
        }
        if "b2" in p:
            out["heads.linear.bias"] = p["b2"][s, j].cpu().clone()
        return out

    def member_q(self, c: int) -> torch.Tensor:
        s, j = divmod(int(self.slot[c]), self.M)
        return self.q[s, j].cpu()


# ---- group reports and selection, vectorized over members --------------------------------------------------
def _worst(correct: torch.Tensor, group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """(C, n) float correctness, (n,) or (C, n) ids in 0..G-1 (< 0 ignored) -> (C,) minimum over the groups present
    of hits / counts, in float32 as ``metrics.group_correct`` (nan where no group is present)."""
    C = correct.shape[0]
    if group.dim() == 1:
        keep = group >= 0
        g, kept = (group, correct) if bool(keep.all()) else (group[keep], correct[:, keep])
        hits = torch.zeros(C, num_groups, device=correct.device).index_add_(1, g, kept)
        counts = torch.bincount(g, minlength=num_groups).float().expand(C, num_groups)
    else:
        hits = torch.zeros(C, num_groups, device=correct.device).scatter_add_(1, group, correct)
        counts = torch.zeros(C, num_groups, device=correct.device).scatter_add_(1, group, torch.ones_like(correct))
    ratio = torch.where(counts > 0, hits / counts, torch.full_like(hits, float("inf")))
    worst = ratio.min(dim=1).values
    return torch.where(torch.isinf(worst), torch.full_like(worst, float("nan")), worst)


class _Reports:
    """``metrics.group_report`` of C prediction vectors (C, n) against one split, built lazily per member with the
    same float32 arithmetic (the same numbers as calling group_report member by member)."""

    def __init__(self, pred: torch.Tensor, y: torch.Tensor, a: torch.Tensor, num_classes: int, num_attrs: int):
        correct = (pred == y).float()
        G = num_classes * num_attrs
        g = torch.where(a >= 0, y * num_attrs + a, torch.full_like(y, -1))
        keep = g >= 0
        g_kept, kept = (g, correct) if bool(keep.all()) else (g[keep], correct[:, keep])
        hits = torch.zeros(correct.shape[0], G, device=correct.device).index_add_(1, g_kept, kept)
        counts = torch.bincount(g_kept, minlength=G).float()
        self.counts = counts.tolist()
        self.acc = (hits / counts).tolist()  # (C, G), float32 division as float(hits[i] / counts[i])
        self.avg = correct.mean(dim=1).tolist() if len(y) else [float("nan")] * correct.shape[0]
        self.worst_group = _worst(correct, g, G).tolist()
        self.worst_class = _worst(correct, y, num_classes).tolist()
        self.num_attrs = num_attrs

    def __getitem__(self, c: int) -> dict[str, Any]:
        groups = {
            group_name(i, self.num_attrs): {"n": int(n), "acc": self.acc[c][i]}
            for i, n in enumerate(self.counts)
            if n > 0
        }
        return {
            "avg_acc": self.avg[c],
            "worst_group_acc": self.worst_group[c],
            "worst_class_acc": self.worst_class[c],
            "groups": groups,
        }


def _argmax(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t.argmax(dim)`` (the first maximum on ties) for a short class axis that is not the innermost one, by K - 1
    comparisons: torch's argmax over such an axis is two orders of magnitude slower on CPU."""
    parts = t.unbind(dim)
    best, index = parts[0], torch.zeros(parts[0].shape, dtype=torch.long, device=t.device)
    for k, part in enumerate(parts[1:], start=1):
        better = part > best
        best = torch.where(better, part, best)
        index.masked_fill_(better, k)
    return index


def _predict(method: str, logits: torch.Tensor) -> torch.Tensor:
    """(C, H, K, n) -> (C, n) predicted classes: XRM averages its twins, the others use their (last) head."""
    # argmax of the heads' sum = of their mean (division by H = 2 is exact)
    out = logits.sum(dim=1) if method == "xrm" else logits[:, -1]
    return _argmax(out, dim=1)


class _Selection:
    """``tracking.Selector`` for C members: every criterion's best epoch (later wins ties) with its reports."""

    def __init__(self, data: GroupData, runs: list[_Run], method: str, keep_state: bool):
        self.data, self.method, self.keep_state = data, method, keep_state
        self.criteria = [r.selector.criterion for r in runs]
        # validation groups for val_wga (None when a training group has no validation example): data-level
        self.group = next((r.selector.group for r in runs if r.selector.criterion != "last"), None)
        self.external = [r.external if r.selector.criterion != "last" else None for r in runs]
        val, test = data.indices(VAL), data.indices(TEST)
        self.val = (data.x[val], data.y[val], data.a[val])
        self.test = (data.x[test], data.y[test], data.a[test])
        C = len(runs)
        self.best: list[dict[str, dict[str, Any]]] = [{} for _ in range(C)]
        self.best_epoch: list[int | None] = [None] * C
        self.inferred: list[torch.Tensor | None] = [None] * C
        self.best_state: list[dict[str, torch.Tensor] | None] = [None] * C

    def inferred_groups(self, val_logits: torch.Tensor, phase1: list[torch.Tensor | None] | None) -> list:
        """Per member: the method's own inferred validation groups (XRM: cross-mistakes now; MAT: phase 1's),
        else the external ones (an XRM run's), else None."""
        if self.method == "xrm":
            y = self.val[1].to(val_logits.device)
            wrong = (_argmax(val_logits, dim=2) != y.view(1, 1, -1)).any(dim=1)  # xrm.cross_mistake_groups
            return list((y * 2 + wrong.long()).cpu().unbind(0))
        if phase1 is not None:
            return list(phase1)
        return list(self.external)

    def update(
        self,
        epoch: int,
        program: _Program,
        phase1: list[torch.Tensor | None] | None = None,
    ) -> None:
        active = [c for c, crit in enumerate(self.criteria) if crit != "last"]
        if not active:
            return
        x_val, y_val, a_val = self.val
        val_logits = program.logits(x_val)
        pred = _predict(self.method, val_logits).cpu()
        inferred = self.inferred_groups(val_logits, phase1)
        correct = (pred == y_val).float()
        k, a = self.data.num_classes, self.data.num_attrs
        scores: dict[str, list[float]] = {}
        if self.group is not None:
            scores["val_wga"] = _worst(correct, self.group, self.data.num_groups).tolist()
        have = [c for c in range(len(pred)) if inferred[c] is not None]
        if have:
            groups = torch.stack([inferred[c] for c in have])
            gi = _worst(correct[have], groups, int(groups.max()) + 1).tolist()
            # a member's own number of groups is int(max) + 1: larger ids have no examples, which changes nothing
            scores["val_gi_wga"] = [float("nan")] * len(pred)
            for i, c in enumerate(have):
                scores["val_gi_wga"][c] = gi[i]
        scores["val_worst_class"] = _worst(correct, y_val, k).tolist()
        scores["val_avg"] = correct.mean(dim=1).tolist()
        reports: dict[str, Any] = {}
        for c in active:
            if self.criteria[c] == "val_gi_wga" and inferred[c] is None:
                self.criteria[c] = "val_avg"  # no validation attributes and no inferred groups anywhere
            mine = {crit: v[c] for crit, v in scores.items() if crit != "val_gi_wga" or inferred[c] is not None}
            best = self.best[c]
            improved = [crit for crit, v in mine.items() if v >= best.get(crit, {}).get("val_score", -float("inf"))]
            if not improved:
                continue
            if not reports:
                reports["val"] = _Reports(pred, y_val, a_val, k, a)
                x_test, y_test, a_test = self.test
                reports["test"] = _Reports(_predict(self.method, program.logits(x_test)).cpu(), y_test, a_test, k, a)
            val_report, test_report = reports["val"][c], reports["test"][c]
            for crit in improved:
                best[crit] = {"epoch": epoch, "val_score": mine[crit], "val": val_report, "test": test_report}
            if self.criteria[c] in improved:
                self.best_epoch[c], self.inferred[c] = epoch, inferred[c]
                if self.keep_state:
                    self.best_state[c] = program.member_state(c)


# ---- the runs of one call ----------------------------------------------------------------------------------
@dataclass
class _Run:
    spec: dict[str, Any]
    hp: dict[str, Any]
    cfg: TrainConfig
    method: Method
    selector: Selector  # shared by the runs with the same criterion: only its resolved criterion and groups are read
    external: torch.Tensor | None  # (n_val,) XRM-inferred validation groups for val_gi_wga, or None


def _config(spec: dict[str, Any], hp: dict[str, Any]) -> TrainConfig:
    """The TrainConfig ``runner.execute`` builds for ``spec`` (its checks included)."""
    device = spec.get("device") or "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device}: CUDA is not available on this machine")
    return TrainConfig(
        epochs=int(hp["epochs"]),
        max_steps=int(hp["max_steps"]),
        lr=float(hp["lr"]),
        optimizer=hp["optimizer"],
        momentum=float(hp["momentum"]),
        weight_decay=float(hp["weight_decay"]),
        batch_size=int(hp["batch_size"]),
        class_balanced=bool(hp["class_balanced"]),
        seed=int(spec.get("seed", 0)),
        selection=spec.get("selection") or "auto",
        eval_every=int(hp["eval_every"]),
        device=device,
    )


def _make_run(
    data: GroupData,
    spec: dict[str, Any],
    inferred_groups: dict[int, torch.Tensor] | None,
    selectors: dict[str, Selector],
) -> _Run:
    from .runner import METHOD_HPARAMS, SPEC_KEYS, _inferred_groups

    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"run spec has unknown key(s) {', '.join(unknown)}")
    name = spec.get("method")
    hp = _hparams(spec)
    cfg = _config(spec, hp)
    method = make_method(name, **{k: hp[k] for k in METHOD_HPARAMS.get(name, {})})
    if method.needs_train_groups and not data.has_attrs(TRAIN):
        raise ConfigError(f"method '{name}' needs training group labels (field 'a' >= 0 on split 0), the data has none")
    if inferred_groups is not None and cfg.seed in inferred_groups:
        external = torch.as_tensor(inferred_groups[cfg.seed]).long()
    else:
        external = _inferred_groups(spec.get("inferred_groups"), data)
    # the Selector's checks and its resolution of "auto", once per criterion (building one copies the splits)
    if cfg.selection not in selectors:
        selectors[cfg.selection] = Selector(cfg.selection, data)
    selector = selectors[cfg.selection]
    n_val = len(selector.y)
    if selector.criterion != "last" and external is not None and len(external) != n_val:
        raise ConfigError(f"inferred validation groups have {len(external)} entries, the validation split {n_val}")
    return _Run(spec, hp, cfg, method, selector, external)


def _shape_of(run: _Run) -> _Shape:
    cfg, hp = run.cfg, run.hp
    return _Shape(
        epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        optimizer=cfg.optimizer,
        batch_size=cfg.batch_size,
        class_balanced=cfg.class_balanced,
        eval_every=cfg.eval_every,
        hidden=tuple(int(h) for h in hp["hidden"]),
        bias=bool(hp["bias"]),
        device=cfg.device,
    )


def _phase1_keys(runs: list[_Run]) -> tuple[list[tuple], list[int]]:
    """Distinct (seed, lr, weight decay, momentum) of the runs and each run's index into them: runs that differ only
    in method hyper-parameters train the same first phase (MAT's XRM, JTT's ERM)."""
    keys: dict[tuple, int] = {}
    index = []
    for r in runs:
        key = (r.cfg.seed, r.cfg.lr, r.cfg.weight_decay, r.cfg.momentum)
        index.append(keys.setdefault(key, len(keys)))
    return list(keys), index


def _member(key: tuple, **extra: Any) -> _Member:
    seed, lr, wd, mom = key
    return _Member(seed=seed, lr=lr, weight_decay=wd, momentum=mom, **extra)


def _mat_phase1(data: GroupData, shape: _Shape, runs: list[_Run], progress: bool) -> None:
    """XRM to the end for every distinct (seed, lr, wd, momentum), as ``MAT._run_phase1``; sets each run's
    ``heldout_logits``, ``val_inferred_groups`` and ``shift`` (paper eq. 7, per member temperature)."""
    keys, index = _phase1_keys(runs)
    prog = _Program(data, shape, [_member(k) for k in keys], "xrm", prepare="xrm", num_heads=2)
    prog.run(label="XRM phase 1 (vectorized)", progress=progress)
    train_idx, val_idx = data.indices(TRAIN), data.indices(VAL)
    logits = prog.logits(data.x[train_idx]).cpu()  # (C1, 2, K, n)
    val_logits = prog.logits(data.x[val_idx]).cpu()
    held_out = 1 - prog.held_in.cpu()  # (S, n) per stream
    rows = torch.arange(len(train_idx))
    y = data.y[train_idx]
    for c, run in enumerate(runs):
        i = index[c]
        s = int(prog.slot[i]) // prog.M
        run.method.heldout_logits = logits[i].permute(2, 0, 1)[rows, held_out[s]].float()  # heldout_logits_pass
        run.method.val_inferred_groups = cross_mistake_groups(val_logits[i].permute(2, 0, 1), data.y[val_idx])
        run.method.shift = mat_log_shift(run.method.heldout_logits, y, run.method.temperature, data.num_classes)


def _jtt_phase1(data: GroupData, shape: _Shape, runs: list[_Run], progress: bool) -> None:
    """ERM for T_c epochs per run (one program to the largest T; each run's error set read off at its own T, or
    where max_steps stops the loop first), as ``JTT.prepare``; sets each run's ``errors``."""
    keys, index = _phase1_keys(runs)
    wanted: dict[int, set[int]] = {}
    for c, run in enumerate(runs):
        wanted.setdefault(index[c], set()).add(run.method.T)
    prog = _Program(data, shape, [_member(k) for k in keys], "ce")
    train_idx = data.indices(TRAIN)
    y = data.y[train_idx]
    errors: dict[tuple[int, int], torch.Tensor] = {}

    def snapshot(epoch: int, last: bool) -> None:
        due = [(i, t) for i, ts in wanted.items() for t in ts if t == epoch or (last and t > epoch)]
        if not due:
            return
        wrong = _argmax(prog.logits(data.x[train_idx])[:, 0], dim=1).cpu() != y  # (C1, n)
        for i, t in due:
            errors[(i, t)] = wrong[i].clone()

    epochs = max(r.method.T for r in runs)
    prog.run(epochs=epochs, on_epoch=snapshot, label="JTT identification (vectorized)", progress=progress)
    for c, run in enumerate(runs):
        run.method.errors = errors[(index[c], run.method.T)]


def _main_members(data: GroupData, runs: list[_Run]) -> list[_Member]:
    members = []
    group_train = data.group[data.indices(TRAIN)]
    for r in runs:
        m = _member((r.cfg.seed, r.cfg.lr, r.cfg.weight_decay, r.cfg.momentum))
        name = r.method.name
        if name == "rwg":  # Idrissi et al. 2022: draw with probability 1 / |group|
            m.example_weights = inverse_frequency_weights(group_train)
        elif name == "jtt":  # Liu et al. 2021: the error set upweighted by lambda_up
            m.example_weights = upweight(r.method.errors, r.method.lambda_up)
        elif name == "groupdro":
            m.eta = float(r.method.eta)
        elif name == "mat":
            m.shift = r.method.shift
        members.append(m)
    return members


def train_many(
    data: GroupData,
    specs: list[dict[str, Any]],
    inferred_groups: dict[int, torch.Tensor] | None = None,
    progress: bool = False,
    *,
    with_inferred_groups: bool = False,
    keep_models: bool = False,
) -> list[dict[str, Any]] | list[tuple[dict[str, Any], torch.Tensor | None, dict[str, torch.Tensor] | None]]:
    """Trains ``specs`` (all with the same ``group_key``, each ``supported``) on ``data`` in one batched program.

    Returns per spec the dict ``runner.execute`` returns (results.json's keys: spec, method, uses_train_groups,
    uses_val_groups, selection, selected_epoch, val, test, criteria, hparams, data, epochs_run, resumed_from=None,
    seconds = the batch's wall time / len(specs)) plus ``"vectorized": True``. ``inferred_groups`` maps a seed to
    (n_val,) XRM-inferred validation groups for the ``val_gi_wga`` criterion of methods that infer none (else a
    spec's ``inferred_groups`` file is read, as the runner does). With ``with_inferred_groups`` each item is
    (result, val_inferred_groups (n_val,) or None, model state dict or None (``keep_models``: the selected
    checkpoint as a ``MultiHeadNet`` state dict)), the extra outputs ``runner.execute`` writes to files.
    """
    if not specs:
        return []
    t0 = time.perf_counter()
    for spec in specs:
        if not supported(spec):
            raise ConfigError(f"train_many cannot train spec {json.dumps(spec, sort_keys=True)[:200]}")
    keys = {group_key(s) for s in specs}
    if len(keys) != 1:
        raise ConfigError("train_many needs specs of one method, data and shape (see vectorized.group_key)")
    selectors: dict[str, Selector] = {}
    runs = [_make_run(data, spec, inferred_groups, selectors) for spec in specs]
    name, shape = runs[0].method.name, _shape_of(runs[0])
    if name == "mat":
        _mat_phase1(data, shape, runs, progress)
    elif name == "jtt":
        _jtt_phase1(data, shape, runs, progress)
    loss = {"xrm": "xrm", "groupdro": "groupdro"}.get(name, "ce")
    prepare = {"xrm": "xrm", "subg": "subg"}.get(name)
    prog = _Program(data, shape, _main_members(data, runs), loss, prepare, num_heads=2 if name == "xrm" else 1)
    selection = _Selection(data, runs, name, keep_models)
    phase1 = [r.method.val_inferred_groups for r in runs] if name == "mat" else None
    epoch = prog.run(
        on_eval=lambda e: selection.update(e, prog, phase1),
        label=f"{name} x{len(runs)} (vectorized)",
        progress=progress,
    )
    return _results(data, runs, prog, selection, phase1, epoch, t0, with_inferred_groups, keep_models)


def _results(
    data: GroupData,
    runs: list[_Run],
    prog: _Program,
    selection: _Selection,
    phase1: list[torch.Tensor | None] | None,
    epoch: int,
    t0: float,
    with_inferred_groups: bool,
    keep_models: bool,
) -> list:
    from .runner import _describe_data

    name = runs[0].method.name
    k, a = data.num_classes, data.num_attrs
    final: dict[str, Any] = {}

    def final_eval() -> dict[str, Any]:  # the last epoch's model, for runs without a chosen checkpoint
        if not final:
            for split, idx in (("val", data.indices(VAL)), ("test", data.indices(TEST))):
                logits = prog.logits(data.x[idx])
                final[split + "_logits"] = logits
                final[split] = _Reports(_predict(name, logits).cpu(), data.y[idx], data.a[idx], k, a)
        return final

    seconds = (time.perf_counter() - t0) / len(runs)
    out = []
    for c, run in enumerate(runs):
        criterion = selection.criteria[c]
        reports = {crit: selection.best[c][crit] for crit in CRITERIA if crit in selection.best[c]}
        chosen = reports.get(criterion)
        if name == "groupdro":
            run.method.q = prog.member_q(c)
        elif name == "subg":
            s = int(prog.slot[c]) // prog.M
            run.method.active_positions = prog.streams[s].active
        res = {
            "spec": run.spec,
            "method": name,
            "uses_train_groups": bool(run.method.needs_train_groups),
            "uses_val_groups": criterion == "val_wga",
            "selection": criterion,
            "selected_epoch": selection.best_epoch[c] or epoch,
            "val": chosen["val"] if chosen else final_eval()["val"][c],
            "test": chosen["test"] if chosen else final_eval()["test"][c],
            "criteria": reports,
            "hparams": {**run.hp, **run.method.describe()},
            "data": _describe_data(run.spec, data, None),
            "epochs_run": epoch,
            "resumed_from": None,
            "seconds": seconds,
            "vectorized": True,
        }
        if not with_inferred_groups:
            out.append(res)
            continue
        inferred = selection.inferred[c]
        has_best = selection.best_epoch[c] is not None
        if inferred is None and name == "xrm":  # fit: infer from the model it ends with
            logits = final_eval()["val_logits"][c] if not has_best else None
            y_val = data.y[data.indices(VAL)]
            inferred = None if logits is None else cross_mistake_groups(logits.cpu().permute(2, 0, 1), y_val)
        if inferred is None and phase1 is not None:
            inferred = phase1[c]
        state = None
        if keep_models:
            state = selection.best_state[c] if has_best else prog.member_state(c)
        out.append((res, inferred, state))
    return out


# ---- files: the counterpart of runner.execute for many runs ---------------------------------------------------
def execute_many(
    specs: Sequence[dict[str, Any]], run_dirs: Sequence[str | Path], progress: bool = False
) -> list[dict[str, Any]]:
    """Trains every run ``specs[i]`` into ``run_dirs[i]`` like ``runner.execute`` (results.json, inferred_groups.npz,
    model.pt with ``save_model``), the supported ones batched by ``group_key`` through ``train_many``, the others one
    at a time. Runs whose results.json exists are returned as they are. Every batch is attempted; the first error is
    raised at the end."""
    from .artifacts import atomic_writer, write_json
    from .runner import CHECKPOINTS, execute, load_spec_data

    if len(specs) != len(run_dirs):
        raise ConfigError(f"{len(specs)} specs but {len(run_dirs)} run directories")
    dirs = [Path(d) for d in run_dirs]
    results: list[dict[str, Any] | None] = [None] * len(specs)
    batches: dict[tuple, list[int]] = {}
    error: BaseException | None = None
    for i, (spec, d) in enumerate(zip(specs, dirs, strict=True)):
        if (d / "results.json").exists():
            results[i] = json.loads((d / "results.json").read_text())
        elif supported(spec):
            batches.setdefault(group_key(spec), []).append(i)
        else:
            try:
                results[i] = execute(spec, d, progress=progress)
            except Exception as e:  # the other runs still train
                error = error or e
    cache: dict[str, GroupData] = {}
    for idx in batches.values():
        try:
            spec0 = specs[idx[0]]
            source = json.dumps([spec0.get(k) for k in DATA_KEYS])
            if source not in cache:
                cache[source] = load_spec_data(spec0)[0]
            trained = train_many(
                cache[source],
                [specs[i] for i in idx],
                progress=progress,
                with_inferred_groups=True,
                keep_models=any(specs[i].get("save_model") for i in idx),
            )
        except Exception as e:  # the other batches still train
            error = error or e
            continue
        for i, (res, inferred, state) in zip(idx, trained, strict=True):
            d = dirs[i]
            if inferred is not None:
                groups = inferred.numpy().astype(np.int64)
                atomic_writer(d / "inferred_groups.npz", lambda p, g=groups: np.savez(p, val_groups=g), ".npz")
            if specs[i].get("save_model") and state is not None:
                atomic_writer(d / "model.pt", lambda p, s=state: torch.save(s, p), ".pt")
            write_json(d / "results.json", res)
            for ckpt in CHECKPOINTS:
                (d / ckpt).unlink(missing_ok=True)
            results[i] = res
    if error is not None:
        raise error
    return [r for r in results if r is not None]


__all__ = ["train_many", "execute_many", "group_key", "supported", "SHAPE_KEYS", "SUPPORTED_METHODS"]
