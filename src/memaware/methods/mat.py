"""Memorization-Aware Training (paper Appendix A, eq. 7).

The held-out logits h_i of an XRM-style model (one that never saw example i) estimate which spurious path the
training distribution offers for x_i. With temperature tau (DESIGN.md, "MAT"):

    p(yho | x_i)  = softmax(h_i / tau)
    p(y, yho)     = (1/n) sum_i p(yho | x_i) [y_i = y]          (over the whole training set, once)
    p(y | yho)    = p(y, yho) / sum_y p(y, yho)
    p_ho(y | x_i) = sum_yho p(yho | x_i) p(y | yho)            (the correction p_a^tr(y | x) of eq. 7)

and f is trained with CE(softmax(f(x_i) + log(p_ho(. | x_i) + 1e-6)), y_i); predictions use f(x) alone.

Two forms: ``two-phase`` (XRM to the end, then MAT on its held-out logits: the authors' code) and ``single-run``
(heads A, B, C on one backbone updated in the same step: A and B are XRM's twins on detached features, C takes the
shifted loss and trains the backbone: the paper's Appendix A description).
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..lazy import lazy_module, no_grad
from .base import Batch, Method, Phase, TrainContext
from .batched import CrossEntropyGrad, MemberStack, StackedBatch
from .registry import register
from .space import Choice, HParam
from .xrm import XRM, TwinHeads, cross_mistake_groups, heldout_logits_pass, rows

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")

SHIFT_EPS = 1e-6
MODES = ("two-phase", "single-run")


def label_given_heldout(p_heldout: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """p(y | yho) as a (K_ho, K) matrix from p(yho | x_i) (n, K_ho) and labels y (n,)."""
    joint = p_heldout.t() @ F.one_hot(y, num_classes).to(p_heldout.dtype) / len(y)  # p(yho, y)
    # a held-out class that no example predicts has a zero row; it contributes nothing either way
    return joint / joint.sum(dim=1, keepdim=True).clamp_min(1e-30)


def mat_log_shift(
    heldout_logits: torch.Tensor,
    y: torch.Tensor,
    temperature: float,
    num_classes: int | None = None,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """log(p_ho(y | x_i) + 1e-6) for every training example (or only ``rows``): (n, K), eq. 7's logit shift.

    ``heldout_logits`` (n, K) are aligned with ``y`` (n,); p(y | yho) uses all n examples.
    """
    k = num_classes or heldout_logits.shape[1]
    p_heldout = (heldout_logits / temperature).softmax(dim=1)
    cond = label_given_heldout(p_heldout, y, k)
    if rows is not None:
        p_heldout = p_heldout[rows]
    return torch.log(p_heldout @ cond + SHIFT_EPS)


class ShiftedCrossEntropyGrad(CrossEntropyGrad):
    """Two-phase MAT's fast path: ``Method.ce`` of head 0 on the shifted logits z_i + log(p_ho(. | x_i) + 1e-6)
    (eq. 7; each member's own ``shift``), so dL/dz_i = w_i (softmax(z_i + s_i) - e_{y_i}) as for ERM."""

    def __init__(self, members: MemberStack):
        super().__init__(members)
        self.shifts = members.per_example(lambda m: m.shift, dtype=members.dtype)  # (S, n, M, K)

    @classmethod
    def applies(cls, method: Method) -> bool:
        return getattr(method, "mode", "") == "two-phase"

    def shift(self, batch: StackedBatch) -> torch.Tensor:
        return batch.take(self.shifts).permute(3, 0, 1, 2)


@register
class MAT(Method):
    name = "mat"
    rank = 6
    summary = "memorization-aware training on XRM's held-out logits"
    infers_groups = True
    batched_loss = ShiftedCrossEntropyGrad
    plain_linear_forward = True  # forward() returns model.heads(x) when the backbone is the identity
    hparams = {
        "temperature": HParam(
            0.1, "MAT temperature on held-out logits (the authors' grid)", search={"*": Choice((0.001, 0.01, 0.1))},
            low=0.0,
        ),
        "mode": HParam(
            "two-phase", "MAT form: XRM then MAT (authors' code), or three heads in one run (paper Appendix A)",
            flag="--mat-mode", choices=MODES,
        ),
    }  # fmt: skip

    def __init__(
        self,
        heldout_logits: torch.Tensor | None = None,
        val_inferred_groups: torch.Tensor | None = None,
        phase1: dict[str, Any] | None = None,
        **hparams: Any,
    ):
        """``heldout_logits`` (n_train, K) and ``val_inferred_groups`` (n_val,): a finished XRM run's outputs (skip
        phase 1); ``phase1``: TrainConfig fields that differ for phase 1."""
        super().__init__(**hparams)
        if self.mode == "single-run" and heldout_logits is not None:
            raise ConfigError("single-run MAT computes its own held-out logits; do not pass heldout_logits")
        self.heldout_logits, self.val_inferred_groups = heldout_logits, val_inferred_groups
        self.phase1 = dict(phase1 or {})

    @property
    def num_heads(self) -> int:  # type: ignore[override]
        return 3 if self.mode == "single-run" else 1

    # ---- set-up -------------------------------------------------------------------------------------------
    def model_parts(self) -> tuple[str, ...]:
        # single-run: heads A and B see detached features, so the model must expose features and heads apart
        return ("features", "heads", "backbone_parameters") if self.mode == "single-run" else ()

    def phases(self) -> list[Phase]:
        if self.mode == "single-run" or self.heldout_logits is not None:
            return []
        return [Phase("xrm", XRM(), self.phase1, "XRM phase 1")]

    def prepare(self, ctx: TrainContext, earlier: dict) -> None:
        y = ctx.y_train
        self.phase1_summary: dict[str, Any] = {}
        if self.mode == "single-run":
            self.twins = TwinHeads(ctx)
            self.heldout_buffer = torch.zeros(len(y), ctx.data.num_classes)  # uniform until the twins learn
            self.y_train = y
            return
        heldout, self.val_groups = self.heldout_logits, self.val_inferred_groups
        if "xrm" in earlier:
            xrm = earlier["xrm"]
            heldout, self.val_groups = xrm.outputs["heldout_logits"], xrm.val_inferred_groups
            self.phase1_summary = {"flipped_fraction": xrm.outputs["flipped_fraction"], "epochs": xrm.epochs_run}
        if heldout.shape != (len(y), ctx.data.num_classes):
            raise ConfigError(
                f"heldout_logits must have shape (n_train, K) = ({len(y)}, {ctx.data.num_classes}), "
                f"got {tuple(heldout.shape)}"
            )
        self.used_heldout = heldout
        self.shift = mat_log_shift(heldout.float(), y, self.temperature, ctx.data.num_classes)

    # ---- training -----------------------------------------------------------------------------------------
    def forward(self, model, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "two-phase":
            return model(x)
        feats = model.features(x)
        logits_c = model.heads(feats)
        if not model.backbone_parameters():
            return logits_c  # linear model: nothing to shield, one matmul serves all three heads
        # heads A and B must not train the backbone: they see detached features (paper Appendix A)
        logits_ab = model.heads(feats.detach())
        return torch.cat([logits_ab[:, :2], logits_c[:, 2:]], dim=1)

    def _single_run_buffer(self, logits_ab: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The training set's held-out logits with this batch's entries replaced by the twins' current ones."""
        buffer = self.heldout_buffer.clone()
        buffer[pos] = self.twins.heldout(logits_ab, pos).detach().float().cpu()
        return buffer

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        if self.mode == "two-phase":
            return self.ce(logits[:, 0] + rows(self.shift, batch.pos).to(logits.device), batch)
        logits_ab = logits[:, :2]
        buffer = self._single_run_buffer(logits_ab, batch.pos)
        # p(y | yho) from the whole training set's current held-out logits, never from the batch alone
        shift = mat_log_shift(buffer, self.y_train, self.temperature, rows=batch.pos).to(logits.device)
        return self.twins.loss(logits_ab, batch.pos) + self.ce(logits[:, 2] + shift, batch)

    def state_dict(self) -> dict[str, Any]:
        if self.mode == "two-phase":
            return {}
        return {**self.twins.state_dict(), "heldout_buffer": self.heldout_buffer.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.mode == "single-run":
            self.twins.load_state_dict(state)
            self.heldout_buffer = state["heldout_buffer"].clone()

    @no_grad
    def after_step(self, logits: torch.Tensor, batch: Batch, model) -> None:
        if self.mode == "single-run":
            self.heldout_buffer = self._single_run_buffer(logits[:, :2], batch.pos)
            self.twins.flip(logits[:, :2], batch.pos)

    # ---- prediction ---------------------------------------------------------------------------------------
    def predict_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1]  # the shift is a training device only: predict with f(x) alone

    def infer_groups(self, logits: torch.Tensor, y: torch.Tensor, split: str) -> torch.Tensor | None:
        if self.mode == "single-run":
            return cross_mistake_groups(logits[:, :2], y)
        return self.val_groups if split == "val" else None

    @no_grad
    def outputs(self, model, ctx: TrainContext) -> dict[str, Any]:
        if self.mode == "two-phase":
            return {"heldout_logits": self.used_heldout, "phase1": self.phase1_summary}
        return {
            "heldout_logits": heldout_logits_pass(model, ctx, (0, 1), self.twins),
            **self.twins.summary(ctx.y_train),
        }
