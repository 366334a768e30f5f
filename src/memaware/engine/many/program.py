"""One batched program: prepared members of one method stepping together through ``engine.loop.run_epochs``.

Set-up (layout, stacked models, per-member optimiser settings), the end-of-epoch work (each member's evaluation
where ``loop.evaluation_due`` says so for its own epochs, and members that finish: their epochs run, a stop), and
the members' ``FitResult``s. A member that finishes before the others keeps its weights (its lr becomes 0) and its
method state (a snapshot), and is neither evaluated nor stepped by the autograd path again.
"""

from __future__ import annotations

import time

import torch

from ...data.groups import TEST, TRAIN, VAL, GroupData
from ...methods import Method
from ...methods.batched import BatchedLoss
from ...models import all_logits, build_model, init_heads_
from ..loop import evaluation_due, run_epochs, step_evaluation_due
from ..optimisation import build_members
from ..result import FitResult
from .layout import Layout, Prepared
from .selection import ManySelection
from .stacked import StackedNets
from .steps import ManySteps


class Program:
    """``prepared`` members on ``data`` (all of one method class, architecture ``model_kwargs`` and step shape);
    ``fast``: the method's fast path, or None (each member's own loss through autograd)."""

    def __init__(
        self,
        data: GroupData,
        prepared: list[Prepared],
        model_kwargs: dict,
        fast: type[BatchedLoss] | None,
        externals: list[torch.Tensor | None],
    ):
        self.data, self.prepared, self.model_kwargs, self.fast = data, prepared, model_kwargs, fast
        cfg = prepared[0].config
        self.device = torch.device(cfg.device)
        train_idx = data.indices(TRAIN)
        x_train = data.x[train_idx].to(self.device)
        self.dtype = x_train.dtype
        self.layout = lay = Layout(prepared, data.y[train_idx], share=fast is not None, dtype=self.dtype)
        self.num_heads = prepared[0].method.num_heads
        grid = [[self._model(prepared[int(c)]) for c in row] for row in lay.source]
        self.nets = StackedNets(grid, self.dtype, self.device)
        # each member's own model object, loaded with its selected weights at the end
        self.models = [grid[s][j] for s, j in map(lay.slot, range(len(prepared)))]
        per_member = lambda values: self.nets.per_member(lay.per_slot(values))  # noqa: E731  (S M, 1) float64
        self.lr = per_member([p.config.lr for p in prepared])
        optimizer = build_members(
            cfg.optimizer,
            self.nets.leaves,
            self.lr,
            per_member([p.config.momentum for p in prepared]),
            per_member([p.config.weight_decay for p in prepared]),
        )
        self.loss = fast(lay.stack(self.device, self.dtype)) if fast is not None else None
        self.steps = ManySteps(lay, self.nets, optimizer, self.loss, x_train, data.y[train_idx].to(self.device))
        self.selection = ManySelection(
            data, [p.config.selection for p in prepared], externals, [p.method for p in prepared]
        )
        val, test = data.indices(VAL), data.indices(TEST)
        self.x_val, self.y_val, self.x_test = data.x[val].to(self.device), data.y[val], data.x[test].to(self.device)
        C = len(prepared)
        self.epochs_run: list[int] = [0] * C
        self.final_state: list[dict[str, torch.Tensor] | None] = [None] * C
        self.method_state: list[dict | None] = [None] * C

    def _model(self, member: Prepared) -> torch.nn.Module:
        """A member's initial model: ``build_model``'s with its heads' ``init`` and its method's ``init_model``, as
        ``fit`` builds it (the data's float type)."""
        cfg = member.config
        model = build_model(self.data.dim, self.data.num_classes, self.num_heads, seed=cfg.seed, **self.model_kwargs)
        init_heads_(model, cfg.init)
        model = model if self.dtype == torch.float32 else model.to(dtype=self.dtype)
        member.method.init_model(model)  # a method fitted before the loop (DFR) writes its weights here
        return model

    # ---- training ------------------------------------------------------------------------------------------
    def run(self, label: str = "", progress: bool = False) -> None:
        cfg = self.prepared[0].config
        run_epochs(
            self.steps,
            first=1,
            epochs=max(p.config.epochs for p in self.prepared),
            # a method that takes no step (DFR): one evaluation of init_model's model, as fit does
            max_steps=cfg.max_steps if self.prepared[0].method.trains else -1,
            eval_every=cfg.eval_every,
            eval_every_steps=cfg.eval_every_steps,
            on_step_eval=self._step_evaluation,
            on_epoch_end=self._end_of_epoch,
            label=label,
            progress=progress,
        )

    def _step_evaluation(self, epoch: int) -> None:
        """Mid-epoch (``eval_every_steps``): evaluates every member still training that logs evaluations."""
        due = [c for c in range(len(self.prepared)) if not self.steps.finished[c] and self.selection.evaluated(c)]
        if due:
            self._evaluate(epoch, due)

    def _end_of_epoch(self, epoch: int, stop: bool) -> None:
        """Evaluates the members due (their own epochs, ``loop.evaluation_due``) and finishes those that end."""
        due, done = [], []
        for c, p in enumerate(self.prepared):
            if self.steps.finished[c]:
                continue
            ends = stop or self.steps.stop_asked[c] or epoch >= p.config.epochs
            every_steps = p.config.eval_every_steps
            just = step_evaluation_due(self.steps.steps, every_steps)
            if self.selection.evaluated(c) and evaluation_due(
                epoch, p.config.epochs, p.config.eval_every, ends, every_steps, just
            ):
                due.append(c)
            if ends:
                done.append(c)
        if due:
            self._evaluate(epoch, due)
        everyone = len(done) == sum(not f for f in self.steps.finished)  # the program ends here
        for c in done:
            self._finish(c, epoch, last=everyone)

    @torch.no_grad()
    def _evaluate(self, epoch: int, due: list[int]) -> None:
        """Validation and test predictions of the members ``due`` from one GEMM per split; each member's own
        ``infer_groups``; one ``ManySelection.update``."""
        slots = self.layout.slot_of[due].to(self.device)
        val_rows = self._rows(self.nets.logits(self.x_val).index_select(0, slots))  # (D, n_val, H, K)
        test_rows = self._rows(self.nets.logits(self.x_test).index_select(0, slots))
        methods = [self.prepared[c].method for c in due]
        y_val = self.y_val.to(self.device)
        logged, inferred = [], []
        for method, rows in zip(methods, val_rows, strict=True):
            groups = method.infer_groups(rows, y_val, "val")
            inferred.append(groups)
            logged.append(groups if method.infers_groups else None)
        self.selection.update(
            epoch, self.steps.steps, due, self._predict(methods, val_rows), self._predict(methods, test_rows),
            logged, inferred, lambda c: self.nets.state(*self.layout.slot(c)),
        )  # fmt: skip

    @staticmethod
    def _rows(logits: torch.Tensor) -> torch.Tensor:
        """(D, H, K, n) -> (D, n, H, K) contiguous: each member's logits as its method reads them."""
        return logits.permute(0, 3, 1, 2).contiguous()

    def _predict(self, methods: list, rows: torch.Tensor) -> torch.Tensor:
        """(D, n) predicted classes: each member's ``predict_logits`` (a fast path's method predicts row by row and
        alike for every member: one call on all members' rows)."""
        D, n, H, K = rows.shape
        if self.fast is not None:
            return methods[0].predict_logits(rows.view(D * n, H, K)).argmax(dim=1).view(D, n)
        return torch.stack([m.predict_logits(r).argmax(dim=1) for m, r in zip(methods, rows, strict=True)])

    def _finish(self, c: int, epoch: int, last: bool) -> None:
        """Member c ends at ``epoch``: its weights and (fast path, others still training) method state are kept,
        its lr becomes 0 so that the others' steps leave it where it is."""
        s, j = self.layout.slot(c)
        self.epochs_run[c] = epoch
        self.final_state[c] = self.nets.state(s, j)
        self.steps.finished[c] = True
        if last:
            return
        if self.loss is not None:
            self.loss.store()
            self.method_state[c] = self.prepared[c].method.state_dict()
        self.lr[s * self.layout.M + j] = 0.0

    # ---- results -------------------------------------------------------------------------------------------
    def results(self, phases: list[dict[str, FitResult]], with_outputs: bool, t0: float) -> list[FitResult]:
        """Each member's ``FitResult``, as ``fit`` returns it (the model holds the selected checkpoint; no history
        curves)."""
        if self.loss is not None:
            self.loss.store()
        seconds = (time.perf_counter() - t0) / len(self.prepared)
        val = self.data.indices(VAL)
        out = []
        for c, p in enumerate(self.prepared):
            if self.method_state[c] is not None:
                p.method.load_state_dict(self.method_state[c])
            sel = self.selection
            model = self.models[c].to(self.device)
            model.load_state_dict(sel.best_state[c] if sel.best_state[c] is not None else self.final_state[c])
            model.eval()
            inferred = sel.inferred[c]
            if inferred is None and type(p.method).infer_groups is not Method.infer_groups:
                # as fit: the groups of the model it ends with (the base method infers none, whatever the logits)
                logits = all_logits(model, self.data.x[val], p.config.eval_batch_size, p.config.device).cpu()
                inferred = p.method.infer_groups(logits, self.data.y[val], "val")
            out.append(
                FitResult(
                    model=model,
                    method=p.method,
                    config=p.config,
                    selection=sel.criterion[c] or "last",
                    selected_epoch=sel.best_epoch[c] or self.epochs_run[c],
                    epochs_run=self.epochs_run[c],
                    history={},
                    outputs=p.method.outputs(model, p.ctx) if with_outputs else {},
                    val_inferred_groups=inferred,
                    seconds=seconds,
                    selection_reports=sel.reports(c),
                    resumed_from=None,
                    phases=phases[c],
                    evaluations=sel.logs[c],
                )
            )
        return out
