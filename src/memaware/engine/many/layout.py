"""How the members of one batched program are laid out: S streams (members that draw the same batches) x M slots.

Member c draws its batches exactly as ``engine.fit`` does from ``torch.Generator().manual_seed(seed_c)``: the
method's ``prepare`` draws first (XRM's halves, SUBG's subset), then per epoch ``engine.batches.epoch_batches``.
Members whose generators are in the same state after ``prepare`` and whose draw weights, active subsets and
training positions are equal draw identical batches: they share one stream (one generator, one gathered batch
multiplied with all its members' weights in one GEMM), so 10 combinations x 3 seeds gather 3 batches per step,
not 30. A short stream is padded with inert slots (the stream's first member repeated, lr 0, never written back).
A method without a fast path draws from its own generator in ``after_step`` too, so each of its members is a
stream of its own.

Positions: every member trains on a subset ``rows`` of the shared pool of n training positions (default: all, in
order); its own position p is shared position rows[p]. Members of one program must draw equally long epochs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from ...errors import ConfigError
from ...methods import Method, TrainContext
from ...methods.batched import MemberStack
from ..batches import sampling_weights
from ..config import TrainConfig


@dataclass
class Prepared:
    """A member ready to train: its prepared method, config, context (``ctx.generator`` is its run's generator),
    and its training positions ``rows`` (n_c,) in the shared pool (None: all n)."""

    method: Method
    config: TrainConfig
    ctx: TrainContext
    rows: torch.Tensor | None = None


@dataclass
class Stream:
    """Members that draw the same batches: one generator, draw weights, active subset and positions."""

    generator: torch.Generator
    weights: torch.Tensor | None  # (n_s,) float64 draw weights in the members' own positions, or None
    active: torch.Tensor | None  # (pool,) the members' active positions (SUBG), or None
    rows: torch.Tensor | None  # (n_s,) shared positions of the members' own positions, or None (identity)
    members: list[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        """n_s, the members' own number of training positions (0: the whole pool)."""
        return 0 if self.rows is None else len(self.rows)


def _digest(t: torch.Tensor | None) -> str | None:
    return None if t is None else hashlib.sha1(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


class Layout:
    """Streams and slots of ``members`` on a pool of ``n`` positions with labels ``y_train`` (n,).

    ``share``: members may share streams (a fast path draws nothing in ``after_step`` from the members' own
    generators); otherwise every member is a stream. ``dtype``: the loss weights' float type (the data's).
    """

    def __init__(self, members: list[Prepared], y_train: torch.Tensor, share: bool, dtype: torch.dtype):
        n = len(y_train)
        self.n, self.C = n, len(members)
        self.loss_weights: list[torch.Tensor | None] = []
        shapes, fulls, streams = set(), [], {}
        for c, m in enumerate(members):
            y = y_train if m.rows is None else y_train[m.rows]
            active = m.method.active_positions
            pool = len(y) if active is None else len(active)
            bs = m.config.batch_size if 0 < m.config.batch_size < pool else pool
            shapes.add((pool, bs))
            fulls.append(active is None and bs >= pool)  # one step per epoch: all its positions, in order
            weights = sampling_weights(m.method, m.config, y)
            lw = None
            if weights is not None and bs >= pool:  # as fit: full batch takes the weights through the loss
                lw, weights = (weights / weights.sum() * len(y)).to(dtype), None
            self.loss_weights.append(lw)
            key = (
                (_digest(m.ctx.generator.get_state()), _digest(weights), _digest(active), _digest(m.rows))
                if share
                else c
            )
            if key not in streams:
                streams[key] = Stream(m.ctx.generator, weights, active, m.rows)
            streams[key].members.append(c)
        # all full batch: every step is the whole pool in order, and members on subsets keep their own rows
        # (``presence``); otherwise every member must draw the same number and sizes of batches
        self.whole_pool = all(fulls)
        if self.whole_pool:
            self.pool = self.bs = n
        elif any(fulls) or len(shapes) != 1:
            raise ConfigError(f"members of one batched program must draw equally long epochs, got {sorted(shapes)}")
        else:
            self.pool, self.bs = shapes.pop()
        self.streams = list(streams.values())
        self.S, self.M = len(self.streams), max(len(st.members) for st in self.streams)
        self.source = torch.empty(self.S, self.M, dtype=torch.long)  # the member whose settings fill each slot
        self.real = torch.zeros(self.S, self.M, dtype=torch.bool)
        self.slot_of = torch.empty(self.C, dtype=torch.long)  # member -> s * M + j
        for s, st in enumerate(self.streams):
            for j in range(self.M):
                real = j < len(st.members)
                c = st.members[j] if real else st.members[0]
                self.source[s, j], self.real[s, j] = c, real
                if real:
                    self.slot_of[c] = s * self.M + j
        self.members = members

    def slot(self, c: int) -> tuple[int, int]:
        """Member c's (stream, slot)."""
        return divmod(int(self.slot_of[c]), self.M)

    def per_slot(self, values: list[float]) -> torch.Tensor:
        """(S, M) float64 per-slot copies of per-member ``values`` (0 on pads)."""
        t = torch.tensor(values, dtype=torch.float64)[self.source]
        return t * self.real.double()

    def stack(self, device: torch.device, dtype: torch.dtype) -> MemberStack:
        """The members as a fast path reads them (slot grid of prepared methods)."""
        methods = [[self.members[int(c)].method for c in row] for row in self.source]
        real = [[bool(r) for r in row] for row in self.real]
        return MemberStack(methods, real, [st.rows for st in self.streams], self.n, device, dtype)

    def presence(self, device: torch.device) -> torch.Tensor | None:
        """(S, n, M) bool: slot (s, j)'s member trains on shared position i, when members see the whole pool and
        some train on subsets; else None."""
        if not self.whole_pool or all(st.rows is None for st in self.streams):
            return None
        present = torch.zeros(self.S, self.n, dtype=torch.bool)
        for s, st in enumerate(self.streams):
            if st.rows is None:
                present[s] = True
            else:
                present[s, st.rows] = True
        return present.unsqueeze(-1).expand(self.S, self.n, self.M).contiguous().to(device)

    def stacked_loss_weights(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        """(S, n, M) each slot's full-batch loss weights at its shared positions (1 for a member without, 0 where
        it has no example), or None when no member has any."""
        if all(lw is None for lw in self.loss_weights):
            return None
        out = torch.zeros(self.S, self.n, self.M, dtype=dtype)
        for s, st in enumerate(self.streams):
            for j in range(self.M):
                c = int(self.source[s, j])
                lw = self.loss_weights[c]
                lw = torch.ones(st.size or self.n, dtype=dtype) if lw is None else lw
                if st.rows is None:
                    out[s, :, j] = lw
                else:
                    out[s, st.rows, j] = lw
        return out.to(device)
