"""XRM + GroupDRO (Pezeshki et al. 2023, the XRM paper's headline pipeline): XRM's twin nets discover groups, then
GroupDRO trains on the inferred *training* groups and the model is selected on inferred validation groups.

Phase 1 is the same XRM run MAT uses (``Phase("xrm", XRM())``). Inferred group of a training example:
y * 2 + m, where m marks a mistake of the twins on it against its original label. ``train_groups`` chooses m:

- ``cross-mistake`` (default, the authors' code: ``cross_mistakes`` on every split, train included): either twin
  mispredicts, the rule XRM applies to validation examples;
- ``held-out``: the twin that did not train on the example mispredicts (the held-out mistake of the XRM paper's
  text). For a twin that memorizes its half the held-in prediction is right, and the two rules agree.

GroupDRO (``memaware.methods.groupdro``: Sagawa et al.'s exponentiated-gradient weights, the same fast path) then
runs on those 2K groups; validation groups are XRM's cross-mistake groups (``val_gi_wga``) unless true ones exist.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..lazy import lazy_module, no_grad
from .base import Phase, TrainContext
from .groupdro import GroupDRO, MemberGroupDROGrad
from .registry import register
from .space import HParam
from .xrm import XRM, cross_mistake_groups

torch = lazy_module("torch")

TRAIN_GROUP_RULES = ("cross-mistake", "held-out")


def heldout_mistake_groups(heldout_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Inferred group y * 2 + [the held-out twin mispredicts]. heldout_logits (n, K), y (n,)."""
    return y * 2 + (heldout_logits.argmax(dim=1) != y).long()


@register
class XRMGroupDRO(GroupDRO):
    name = "xrm-groupdro"
    display_name = "XRM+GroupDRO"
    rank = 9
    summary = "GroupDRO on XRM-inferred training groups, selected on XRM-inferred validation groups"
    needs_train_groups = False
    infers_groups = True
    infers_train_groups = True  # the table's "~" in the e_tr column
    # each member's groups come from its own XRM phase: GroupDRO's fast path with a group indicator per member
    batched_loss = MemberGroupDROGrad
    hparams = {
        **GroupDRO.hparams,
        "train_groups": HParam(
            "cross-mistake", "XRM+GroupDRO: training groups from either twin's mistake (authors' code) or the "
            "held-out twin's", flag="--xrm-train-groups", choices=TRAIN_GROUP_RULES,
        ),
    }  # fmt: skip

    def __init__(self, phase1: dict[str, Any] | None = None, **hparams: Any):
        """``phase1``: TrainConfig fields that differ for the XRM phase (as MAT's)."""
        super().__init__(**hparams)
        self.phase1 = dict(phase1 or {})

    def phases(self) -> list[Phase]:
        return [Phase("xrm", XRM(), self.phase1, "XRM phase 1")]

    def prepare(self, ctx: TrainContext, earlier: dict) -> None:
        super().prepare(ctx, earlier)  # q, and groups replaced below
        if "xrm" not in earlier:
            raise ConfigError("xrm-groupdro needs its XRM phase (phases() was not run)")
        xrm = earlier["xrm"]
        y = ctx.y_train
        if self.train_groups == "held-out":
            self.groups = heldout_mistake_groups(xrm.outputs["heldout_logits"], y)
        else:
            from ..models import all_logits  # imports torch: here, not when the registry loads

            x = ctx.data.x[ctx.train_idx]
            logits_ab = all_logits(xrm.model, x, ctx.config.eval_batch_size, ctx.config.device).cpu()
            self.groups = cross_mistake_groups(logits_ab[:, :2], y)
        self.num_groups = 2 * ctx.data.num_classes
        self.q = torch.full((self.num_groups,), 1.0 / self.num_groups, dtype=torch.float64)
        self.val_groups = xrm.val_inferred_groups
        self.phase1_summary = {"flipped_fraction": xrm.outputs["flipped_fraction"], "epochs": xrm.epochs_run}

    def infer_groups(self, logits: torch.Tensor, y: torch.Tensor, split: str) -> torch.Tensor | None:
        return self.val_groups if split == "val" else None

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["train_groups"] = self.train_groups
        groups = getattr(self, "groups", None)
        if groups is not None:
            out["inferred_group_sizes"] = torch.bincount(groups, minlength=self.num_groups).tolist()
        return out

    @no_grad
    def outputs(self, model, ctx: TrainContext) -> dict[str, Any]:
        return {"train_inferred_groups": self.groups.clone(), "phase1": self.phase1_summary}

