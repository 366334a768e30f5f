"""Unsupervised Logit Adjustment (Tsirigotis et al., NeurIPS 2023, "Group robust classification without any group
information").

The bias proxy is a linear probe on frozen features (on a features file: the features themselves; end to end: the
backbone's initial, pretrained features, the authors' SSL backbone) trained on the labels and stopped early, after
``probe_steps`` full-batch steps (the authors' ``gen0_max_steps``). With its tempered prediction
p_b(. | x) = softmax(g(x) / tau_b) and b_i = argmax_k g(x_i)_k:

    J[k, y]     = (1/n) sum_i p_b(k | x_i) [y_i = y]                   (over the training set)
    p(y | b)    = J[b, y] / sum_y' J[b, y']
    L_uLA       = CE(f(x_i) + eta * log(p(. | b_i) + 1e-6), y_i)       (predict with f alone)

The authors average J over batches with momentum 0.999; with a frozen proxy that average converges to the
training-set J computed here once. Validation groups for model selection without any group label are the pseudo
groups (label, proxy prediction): ``infer_groups`` returns y * K + b on the validation split, read by
``val_gi_wga`` (the authors' u_worst) and ``val_bias_unsup`` (their u_balanced, the mean over pseudo groups).
"""

from __future__ import annotations

from typing import Any

from ..lazy import lazy_module, no_grad
from .base import Batch, Method, TrainContext
from .mat import ShiftedCrossEntropyGrad, label_given_heldout
from .probes import fit_softmax_probe, standardize
from .registry import register
from .space import Choice, HParam
from .xrm import rows

torch = lazy_module("torch")

SHIFT_EPS = 1e-6
PROBE_LR = 0.01


def ula_log_shift(bias_logits: torch.Tensor, y: torch.Tensor, num_classes: int, tau: float, eta: float) -> torch.Tensor:
    """(n, K) eta * log(p(. | b_i) + 1e-6) from the proxy's training logits (n, K) and labels y (n,)."""
    p_bias = (bias_logits.double() / tau).softmax(dim=1)
    cond = label_given_heldout(p_bias, y, num_classes)  # (K_b, K): p(y | b), J over the whole training set
    return eta * torch.log(cond[p_bias.argmax(dim=1)] + SHIFT_EPS)


@no_grad
def frozen_features(ctx: TrainContext, index: torch.Tensor) -> torch.Tensor:
    """(len(index), d) the features a linear probe reads: the input itself on a features file, else the initial
    (pretrained) backbone's features, computed in eval mode."""
    x = ctx.data.x[index]
    if ctx.model_factory is None:
        return x.double()
    model = ctx.model_factory(1).to(ctx.config.device).eval()
    bs = ctx.config.eval_batch_size
    return torch.cat([model.features(x[i : i + bs].to(ctx.config.device)).cpu() for i in range(0, len(x), bs)]).double()


class ULAShiftGrad(ShiftedCrossEntropyGrad):
    """uLA's fast path: ERM's gradient on the shifted logits z_i + s_i with each member's fixed ``shift``."""

    @classmethod
    def applies(cls, method: Method) -> bool:
        return True


@register
class ULA(Method):
    name = "ula"
    display_name = "uLA"
    rank = 8
    summary = "logit adjustment by an early-stopped linear probe on frozen features (Tsirigotis et al. 2023)"
    infers_groups = True
    batched_loss = ULAShiftGrad
    hparams = {
        "probe_steps": HParam(100, "uLA: full-batch steps of the bias proxy (its early stop)",
                              search={"*": Choice((25, 50, 100, 200, 400))}, low=1, low_inclusive=True),
        "eta": HParam(1.0, "uLA: scale of the logit adjustment (authors' student temperature)",
                      flag="--ula-eta", search={"*": Choice((0.5, 1.0, 1.5))}, low=0.0),
        "bias_tau": HParam(1.0, "uLA: temperature of the proxy's softmax (authors' teacher temperature)",
                           flag="--ula-tau", low=0.0),
    }  # fmt: skip

    def prepare(self, ctx: TrainContext, earlier: dict) -> None:
        from ..data.groups import VAL

        k = ctx.data.num_classes
        val_idx = ctx.data.indices(VAL)
        train_feats, val_feats = standardize(frozen_features(ctx, ctx.train_idx), frozen_features(ctx, val_idx))
        w, b = fit_softmax_probe(train_feats, ctx.y_train, k, self.probe_steps, PROBE_LR)
        bias_train = train_feats @ w.t() + b
        self.shift = ula_log_shift(bias_train, ctx.y_train, k, self.bias_tau, self.eta).float()
        self.bias_val_pred = (val_feats @ w.t() + b).argmax(dim=1)
        self.val_groups = ctx.data.y[val_idx] * k + self.bias_val_pred
        self.proxy_train_acc = float((bias_train.argmax(dim=1) == ctx.y_train).double().mean())

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.ce(logits[:, 0] + rows(self.shift, batch.pos).to(logits), batch)

    def infer_groups(self, logits: torch.Tensor, y: torch.Tensor, split: str) -> torch.Tensor | None:
        return self.val_groups if split == "val" else None

    def describe(self) -> dict[str, Any]:
        out = {key: getattr(self, key) for key in self.hparams}
        if hasattr(self, "proxy_train_acc"):
            out["proxy_train_acc"] = self.proxy_train_acc
        return out

    @no_grad
    def outputs(self, model, ctx: TrainContext) -> dict[str, Any]:
        return {"proxy_train_acc": self.proxy_train_acc}

