"""The ``loop.Steps`` of a batched program: every member's epoch of batches, one optimiser step of all members.

A step gathers each stream's batch once, computes every member's logits in one batched GEMM (``StackedNets``),
then takes the gradient either from the method's fast path (``Method.batched_loss``: dL/dlogits of all members at
once, and dW = dZ^T X by hand for linear heads) or, for a method without one, from each member's own ``loss`` on
its slice of the stacked logits through autograd (its ``after_step`` then runs member by member, with
``model=None``). The optimiser is ``engine.optim``'s, with per-member hyper-parameter tensors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ...methods import Batch
from ...methods.batched import BatchedLoss, StackedBatch
from ..batches import epoch_batches
from .layout import Layout
from .stacked import StackedNets


@dataclass(frozen=True)
class Payload:
    """One step of every stream: ``own`` (S, b) positions in the members' own training sets (CPU), ``pos`` (S, b)
    the same as shared positions and ``flat`` (S * b,) = s * n + pos (device), all None for the whole pool in
    order; ``uniforms`` (S, b) the stream generators' draws for a fast path that ``draws_uniforms``."""

    own: torch.Tensor | None
    pos: torch.Tensor | None
    flat: torch.Tensor | None
    uniforms: torch.Tensor | None


class ManySteps:
    """Steps every member of ``layout`` on ``x_train`` (n, d) / ``y_train`` (n,) (the shared pool, on the
    device) with ``optimizer`` over ``nets.leaves``; ``loss`` is the fast path, or None for the autograd path."""

    def __init__(
        self,
        layout: Layout,
        nets: StackedNets,
        optimizer,
        loss: BatchedLoss | None,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
    ):
        self.layout, self.nets, self.optimizer, self.loss = layout, nets, optimizer, loss
        self.x, self.y = x_train, y_train
        dev = x_train.device
        self.steps, self.epochs_drawn = 0, 0
        self.finished = [False] * layout.C  # set by the engine when a member ends (its epochs, a stop)
        self.stop_asked = [False] * layout.C
        self.offsets = (torch.arange(layout.S, device=dev) * layout.n).view(-1, 1)
        self.present = layout.presence(dev)
        self.loss_weights = layout.stacked_loss_weights(dev, x_train.dtype)
        self.x_buffer = x_train.new_empty((0, x_train.shape[1]))
        self.uniforms = loss is not None and loss.draws_uniforms
        # two classes, linear heads, a loss that sees logits through softmax only: half the GEMM work per step
        self.two_class = loss is not None and loss.shift_invariant and nets.linear and nets.num_classes == 2

    # ---- loop.Steps ----------------------------------------------------------------------------------------
    def epoch(self) -> list[Payload]:
        """Every stream's batches for the coming epoch (and a fast path's uniforms, drawn right after them from
        the same generator: fit's per-step draws in ``after_step`` give the same numbers, nothing else draws in
        between), as one payload per step."""
        lay, dev = self.layout, self.x.device
        self.epochs_drawn += 1
        drawn = [epoch_batches(st.size or lay.n, lay.bs, st.generator, st.weights, st.active) for st in lay.streams]
        if drawn[0][0] is None:  # the whole pool in order, one step
            u = None
            if self.uniforms:
                u = torch.stack([self._whole_pool_uniforms(st) for st in lay.streams]).to(dev)
            return [Payload(None, None, None, u)]
        sizes = [len(b) for b in drawn[0]]
        own = torch.stack([torch.cat(batches) for batches in drawn])  # (S, drawn)
        pos = torch.stack([own[s] if st.rows is None else st.rows[own[s]] for s, st in enumerate(lay.streams)])
        pos = pos.to(dev)
        flat = pos + self.offsets
        u = None
        if self.uniforms:
            u = torch.stack([torch.rand(own.shape[1], generator=st.generator) for st in lay.streams]).to(dev)
        out, start = [], 0
        for b in sizes:
            sl = slice(start, start + b)
            out.append(Payload(own[:, sl], pos[:, sl], flat[:, sl].reshape(-1), None if u is None else u[:, sl]))
            start += b
        return out

    def step(self, payload: Payload) -> None:
        self.steps += 1
        xb, x_all = self._rows(payload)
        if self.loss is not None:
            self._fast_step(payload, xb, x_all)
        else:
            self._autograd_step(payload, xb, x_all)

    def should_stop(self) -> bool:
        """True once every member has finished: its own epochs run, or (autograd path) its method asks to stop."""
        done = True
        for c, m in enumerate(self.layout.members):
            if self.finished[c]:
                continue
            if self.loss is None:
                self.stop_asked[c] = bool(m.method.should_stop())
            done = done and (self.stop_asked[c] or m.config.epochs <= self.epochs_drawn)
        return done

    # ---- one step ------------------------------------------------------------------------------------------
    def _whole_pool_uniforms(self, st) -> torch.Tensor:
        """(n,) a stream's draws for one step over the whole pool: one per own position, at its shared one."""
        if st.rows is None:
            return torch.rand(self.layout.n, generator=st.generator)
        u = torch.full((self.layout.n,), 2.0)  # never flips: the member holds no such example
        u[st.rows] = torch.rand(len(st.rows), generator=st.generator)
        return u

    def _rows(self, payload: Payload) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(gathered rows (S, b, d) or None, all rows (n, d) or None)."""
        if payload.pos is None:
            return None, self.x
        rows = payload.pos.reshape(-1)
        if len(self.x_buffer) < len(rows):  # one reused gather buffer: a fresh tensor per step costs page faults
            self.x_buffer = self.x.new_empty((len(rows), self.x.shape[1]))
        xb = torch.index_select(self.x, 0, rows, out=self.x_buffer[: len(rows)])
        return xb.view(*payload.pos.shape, -1), None

    def _fast_step(self, payload: Payload, xb: torch.Tensor | None, x_all: torch.Tensor | None) -> None:
        lay, nets = self.layout, self.nets
        y = self.y.expand(lay.S, lay.n) if payload.pos is None else self.y[payload.pos]
        batch = StackedBatch(payload.pos, payload.flat, y, lay.n, uniforms=payload.uniforms)
        if self.loss_weights is not None or self.present is not None:  # per-member weights / subsets at this step
            batch = dataclasses.replace(
                batch,
                weight=None if self.loss_weights is None else batch.take(self.loss_weights),
                present=None if self.present is None else batch.take(self.present),
            )
        if self.two_class:
            z = nets.two_class_logits(xb, x_all)
            nets.set_two_class_grad(self.loss.grad(z, batch), xb, x_all)
        elif nets.linear:
            with torch.no_grad():
                z = nets.forward(xb, x_all).permute(2, 3, 0, 4, 1).contiguous()  # (H, K, S, b, M)
            nets.set_linear_grad(self.loss.grad(z, batch), xb, x_all)
        else:  # autograd through the network, from the logits' gradient
            raw = nets.forward(xb, x_all)  # (S, M, H, K, b)
            z = raw.detach().permute(2, 3, 0, 4, 1).contiguous()
            self.optimizer.zero_grad()
            raw.backward(self.loss.grad(z, batch).permute(2, 4, 0, 1, 3))
        self.optimizer.step()
        self.loss.after_step(z, batch)

    def _autograd_step(self, payload: Payload, xb: torch.Tensor | None, x_all: torch.Tensor | None) -> None:
        """Each member's own ``loss`` on its slice of the stacked logits; one backward through all of them."""
        lay = self.layout
        raw = self.nets.forward(xb, x_all)  # (S, M, H, K, b)
        work = []
        for c, m in enumerate(lay.members):
            if self.finished[c]:
                continue
            s, j = lay.slot(c)
            logits = raw[s, j].permute(2, 0, 1)  # (b, H, K)
            lw = lay.loss_weights[c]
            if payload.pos is None:  # all of the member's positions, in order (fit's full batch)
                if m.rows is not None:
                    logits = logits[m.rows.to(logits.device)]
                n_c = len(logits)
                pos, y = torch.arange(n_c), self.y if m.rows is None else self.y[m.rows.to(self.y.device)]
            else:
                pos, y = payload.own[s], self.y[payload.pos[s]]
                if lw is not None and len(pos) != len(lw):
                    lw = lw[pos]
            batch = Batch(pos, y, None if lw is None else lw.to(logits.device))
            work.append((m.method, logits, batch, m.method.loss(logits, batch)))
        self.optimizer.zero_grad()
        if work:
            torch.stack([loss for *_, loss in work]).sum().backward()
        self.optimizer.step()
        for method, logits, batch, _ in work:
            method.after_step(logits.detach(), batch, None)
