"""One batched program: C members of one method phase stepping together (see ``memaware.vectorized``)."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from tqdm.auto import tqdm

from ..data.groups import TRAIN, GroupData
from ..errors import ConfigError
from ..methods.balancing import subsample_to_smallest
from ..methods.xrm import flip_probability, random_halves
from ..models import build_model
from ..train import epoch_batches, sampling_weights
from ._common import _EVAL_FLOATS


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
            w = sampling_weights(stub, cfg, y_cpu)  # type: ignore[arg-type]
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
        per_stream = [epoch_batches(self.n, self.bs, st.generator, st.weights, st.active) for st in self.streams]
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
