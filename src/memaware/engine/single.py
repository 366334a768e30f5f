"""One model's steps for ``loop.run_epochs``: gather the batch, the method's forward and loss, one optimiser step
(or the Gram-matrix step of ``engine.dual``), the method's per-step hook, and the epoch's training accuracy and loss
per group (from the logits the step already computed: no extra forward pass)."""

from __future__ import annotations

import torch

from ..methods import Batch, Method
from .batches import epoch_batches
from .dual import DualSGD


class SingleRunSteps:
    """The ``loop.Steps`` of one model.

    ``x_train`` (n, ...), ``y_train`` (n,) on the run's device; ``groups`` (n,) group ids with unknown attributes
    mapped to the extra id G (or None for regression); ``weights`` (n,) float64 draw weights or None;
    ``loss_weights`` (n,) per-position loss weights (full batch) or None.
    """

    def __init__(
        self,
        method: Method,
        model: torch.nn.Module,
        optimizer,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        groups: torch.Tensor | None,
        num_groups: int,
        batch_size: int,
        generator: torch.Generator,
        weights: torch.Tensor | None,
        loss_weights: torch.Tensor | None,
        dual: DualSGD | None = None,
        schedule=None,
        clip_grad_norm: float = 0.0,
        analytic: bool = False,
        scaler: torch.amp.GradScaler | None = None,
    ):
        self.method, self.model, self.optimizer, self.dual, self.schedule = method, model, optimizer, dual, schedule
        self.analytic = analytic  # the hand-derived backward of engine.optimisation's "analytic" strategy
        self.clip_grad_norm = clip_grad_norm  # > 0: the gradient's L2 norm over all parameters is capped there
        self.scaler = scaler  # fp16 autocast: the loss scaled before backward, steps skipped on inf/nan gradients
        # an end-to-end model loads its batches ahead when told them (EndToEndNet.prefetch): rows on the CPU
        self.prefetch = getattr(model, "prefetch", None)
        self.x_host = x_train.cpu() if self.prefetch is not None else None
        self.images = 0  # training rows seen, for throughput
        self.last_loss: torch.Tensor | None = None
        self.x, self.y, self.groups, self.num_groups = x_train, y_train, groups, num_groups
        self.n, self.bs, self.generator = len(y_train), batch_size, generator
        self.weights, self.loss_weights = weights, loss_weights
        self.steps = 0
        self.all_pos = torch.arange(self.n)
        self.x_buffer = x_train.new_empty((0, *x_train.shape[1:]))
        self.hits = self.seen = None
        # this epoch's (loss, batch size) per step, summed when read: a step adds no kernel for the epoch's mean
        self.losses: list[tuple[torch.Tensor, int]] = []

    def epoch(self) -> list[torch.Tensor | None]:
        dev = self.x.device
        if self.groups is not None:  # per-group training accuracy of this epoch (+1 bucket: unknown attribute)
            self.hits = torch.zeros(self.num_groups + 1, device=dev)
            self.seen = torch.zeros(self.num_groups + 1, device=dev)
        self.losses = []
        batches = epoch_batches(self.n, self.bs, self.generator, self.weights, self.method.active_positions)
        if self.prefetch is not None:
            self.prefetch([self.x_host if pos is None else self.x_host[pos] for pos in batches])
        return batches

    def step(self, pos: torch.Tensor | None) -> None:
        self.steps += 1
        if pos is None:  # the whole training set in order
            xb, yb, pos, gb = self.x if self.x_host is None else self.x_host, self.y, self.all_pos, self.groups
        elif self.x_host is not None:
            # a model that loads its own input takes row indices on the host: reading them back from a GPU
            # would synchronise every step
            pos_d = pos.to(self.y.device)
            xb, yb = self.x_host[pos], self.y[pos_d]
            gb = None if self.groups is None else self.groups[pos_d]
        else:
            pos_d = pos.to(self.x.device)
            # gather into one reused buffer: a fresh (b, d) tensor per step costs an allocation + page faults
            if len(self.x_buffer) < len(pos_d):
                self.x_buffer = self.x.new_empty((len(pos_d), *self.x.shape[1:]))
            xb = torch.index_select(self.x, 0, pos_d, out=self.x_buffer[: len(pos_d)])
            yb = self.y[pos_d]
            gb = None if self.groups is None else self.groups[pos_d]
        lw = self.loss_weights
        if lw is not None and len(pos) != self.n:
            lw = lw[pos]
        batch = Batch(pos, yb, lw)
        if self.analytic:
            # the same gradients as loss.backward(), without building a graph. Inference mode, not no_grad: no
            # version counters or view tracking on the step's temporaries (~5 % of a Fig. 3 step); the method's
            # after_step runs inside it too, so tensors it keeps from a step are inference tensors
            with torch.inference_mode():
                logits, saved = self.model.forward_saving(xb)
                loss, grad_logits = self.method.loss_and_gradient(logits, batch)
                self.model.backward_into(saved, grad_logits)
                if self.clip_grad_norm:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
                self.optimizer.step()
                self.after_step(logits, loss, batch, yb, gb)
            return
        if self.dual is not None:  # the same iterates as a primal step, through the Gram matrix
            logits = self.dual.leaf_logits()
            loss = self.method.loss(logits, batch)
            loss.backward()
            self.dual.step(logits)
        else:
            logits = self.method.forward(self.model, xb)
            loss = self.method.loss(logits, batch)
            self.optimizer.zero_grad()
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                if self.clip_grad_norm:
                    self.scaler.unscale_(self.optimizer)  # clip the true gradient, not the scaled one
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                if self.clip_grad_norm:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
                self.optimizer.step()
            if self.schedule is not None:
                self.schedule.step()
        self.after_step(logits.detach(), loss.detach(), batch, yb, gb)

    def after_step(
        self, logits: torch.Tensor, loss: torch.Tensor, batch: Batch, yb: torch.Tensor, gb: torch.Tensor | None
    ) -> None:
        """The method's per-step hook on the (pre-step, detached) logits, and this epoch's accuracy and loss."""
        self.method.after_step(logits, batch, self.model)
        if gb is not None:
            self.hits.index_add_(0, gb, (self.method.predict_logits(logits).argmax(dim=1) == yb).float())
            self.seen.index_add_(0, gb, torch.ones_like(yb, dtype=self.seen.dtype))
        self.losses.append((loss, yb.shape[0]))
        self.images += yb.shape[0]
        self.last_loss = loss

    def should_stop(self) -> bool:
        return self.method.should_stop()

    def train_accuracy(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """This epoch's (hits (G,), drawn (G,)) per group, or (None, None) without groups."""
        if self.hits is None:
            return None, None
        return self.hits[: self.num_groups], self.seen[: self.num_groups]

    def mean_loss(self) -> torch.Tensor:
        total, drawn = torch.zeros((), device=self.x.device), 0
        for loss, size in self.losses:  # the running sum a step used to keep, in the same order
            total += loss * size
            drawn += size
        return total / max(1, drawn)
