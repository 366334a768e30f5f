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

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import Method, TrainContext
from .registry import register
from .xrm import TwinHeads, cross_mistake_groups, heldout_logits_pass, rows

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


@register
class MAT(Method):
    name = "mat"
    plain_linear_forward = True  # forward() returns model.heads(x) when the backbone is the identity

    def __init__(
        self,
        temperature: float = 0.1,
        mode: str = "two-phase",
        heldout_logits: torch.Tensor | None = None,
        val_inferred_groups: torch.Tensor | None = None,
        phase1: dict[str, Any] | None = None,
    ):
        if temperature <= 0:
            raise ConfigError(f"MAT temperature must be > 0, got {temperature}")
        if mode not in MODES:
            raise ConfigError(f"MAT mode must be one of {', '.join(MODES)}, got '{mode}'")
        if mode == "single-run" and heldout_logits is not None:
            raise ConfigError("single-run MAT computes its own held-out logits; do not pass heldout_logits")
        self.temperature, self.mode = temperature, mode
        self.heldout_logits, self.val_inferred_groups = heldout_logits, val_inferred_groups
        self.phase1_overrides = phase1 or {}
        self.phase1_summary: dict[str, Any] = {}

    @property
    def num_heads(self) -> int:  # type: ignore[override]
        return 3 if self.mode == "single-run" else 1

    # ---- set-up -------------------------------------------------------------------------------------------
    def prepare(self, ctx: TrainContext) -> None:
        y = ctx.y_train
        if self.mode == "single-run":
            self.twins = TwinHeads(ctx)
            self.heldout_buffer = torch.zeros(len(y), ctx.data.num_classes)  # uniform until the twins learn
            self.y_train = y
            return
        if self.heldout_logits is None:
            self._run_phase1(ctx)
        if self.heldout_logits.shape != (len(y), ctx.data.num_classes):
            raise ConfigError(
                f"heldout_logits must have shape (n_train, K) = ({len(y)}, {ctx.data.num_classes}), "
                f"got {tuple(self.heldout_logits.shape)}"
            )
        self.shift = mat_log_shift(self.heldout_logits.float(), y, self.temperature, ctx.data.num_classes)

    def _run_phase1(self, ctx: TrainContext) -> None:
        from ..train import fit  # the same loop trains phase 1

        cfg = dataclasses.replace(ctx.config, selection="last", history_splits=(), progress_label="XRM phase 1")
        cfg = dataclasses.replace(cfg, **self.phase1_overrides)
        path = ctx.checkpoint.with_name(ctx.checkpoint.stem + ".xrm.pt") if ctx.checkpoint else None
        result = fit(
            ctx.data, "xrm", cfg, model_kwargs=ctx.model_kwargs, model_factory=ctx.model_factory, checkpoint=path
        )
        self.heldout_logits = result.outputs["heldout_logits"]
        self.val_inferred_groups = result.val_inferred_groups
        self.phase1_summary = {"flipped_fraction": result.outputs["flipped_fraction"], "epochs": cfg.epochs}

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

    def loss(self, logits: torch.Tensor, pos: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.mode == "two-phase":
            return self.ce(logits[:, 0] + rows(self.shift, pos).to(logits.device), pos, y)
        logits_ab = logits[:, :2]
        heldout = self.twins.heldout(logits_ab, pos).detach()
        self.heldout_buffer[pos] = heldout.float().cpu()
        # p(y | yho) from the whole training set's current held-out logits, never from the batch alone
        shift = mat_log_shift(self.heldout_buffer, self.y_train, self.temperature, rows=pos).to(logits.device)
        return self.twins.loss(logits_ab, pos) + self.ce(logits[:, 2] + shift, pos, y)

    def state_dict(self) -> dict[str, Any]:
        if self.mode == "two-phase":
            return {}
        return {**self.twins.state_dict(), "heldout_buffer": self.heldout_buffer.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.mode == "single-run":
            self.twins.load_state_dict(state)
            self.heldout_buffer = state["heldout_buffer"].clone()

    @torch.no_grad()
    def after_step(self, logits: torch.Tensor, pos: torch.Tensor, y: torch.Tensor, model) -> None:
        if self.mode == "single-run":
            self.twins.flip(logits[:, :2], pos)

    # ---- prediction ---------------------------------------------------------------------------------------
    def predict_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1]  # the shift is a training device only: predict with f(x) alone

    def infer_groups(self, logits: torch.Tensor, y: torch.Tensor, split: str) -> torch.Tensor | None:
        if self.mode == "single-run":
            return cross_mistake_groups(logits[:, :2], y)
        return self.val_inferred_groups if split == "val" else None

    @torch.no_grad()
    def outputs(self, model, ctx: TrainContext) -> dict[str, Any]:
        if self.mode == "two-phase":
            return {"heldout_logits": self.heldout_logits, "phase1": self.phase1_summary}
        return {
            "heldout_logits": heldout_logits_pass(model, ctx, (0, 1), self.twins),
            **self.twins.summary(ctx.y_train),
        }

    def describe(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "mode": self.mode}
