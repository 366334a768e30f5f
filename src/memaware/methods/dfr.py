"""Deep Feature Reweighting (Kirichenko et al., ICLR 2023, "Last layer re-training is sufficient for robustness to
spurious correlations"), the DFR^Val_Tr protocol of the authors' ``dfr_evaluate_spurious.py``.

Phase ``erm`` trains ERM with the run's settings. Its last layer is then replaced by an L1-penalised logistic
regression on the ERM model's features phi(x) of group-balanced validation data:

    min_{W, b}  C * sum_i CE(W z_i + b, y_i) + ||W||_1,   z_i = (phi(x_i) - mu) / sigma

with mu, sigma the training split's feature mean and std (the authors' scaler in their final fit). C is tuned on
the validation set cut into two random halves: fit on the first half subsampled to equal group sizes, score
worst-group accuracy on the second (grid ``C_GRID``, the authors' ``C_OPTIONS``; ties: the larger C, as their
argmax over that list). The final layer is the average of ``retrains`` fits with the chosen C, each on the whole
validation set subsampled to equal group sizes (a fresh draw each time). Needs validation group labels; trains on
no training group label. Nothing is trained by the loop: the model is the ERM model with this last layer.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..lazy import lazy_module, no_grad
from ..metrics import worst_group_acc
from .base import Batch, Method, Phase, TrainContext
from .erm import ERM
from .probes import l1_logistic
from .registry import register
from .space import HParam

torch = lazy_module("torch")

C_GRID = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)


def balanced_subset(groups: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Sorted positions keeping min-count examples of every group present in ``groups`` (n,), drawn without
    replacement (DFR's group-balanced subsample)."""
    counts = torch.bincount(groups)
    smallest = int(counts[counts > 0].min())
    keep = []
    for g in torch.nonzero(counts).squeeze(1).tolist():
        members = torch.nonzero(groups == g).squeeze(1)
        keep.append(members[torch.randperm(len(members), generator=generator)[:smallest]])
    return torch.cat(keep).sort().values


def split_halves(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit positions, tuning positions): a random permutation of 0..n-1 cut in two, the tuning half n // 2 long."""
    perm = torch.randperm(n, generator=generator)
    return perm[n // 2 :], perm[: n // 2]


@no_grad
def model_features(model: torch.nn.Module, x: torch.Tensor, batch_size: int, device: str) -> torch.Tensor:
    """(n, d_feat) float64 features phi(x) the model's last layer reads, in eval mode, batched."""
    was = model.training
    model.eval()
    out = torch.cat([model.features(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])
    model.train(was)
    return out.double()


@register
class DFR(Method):
    name = "dfr"
    display_name = "DFR"
    rank = 10
    summary = "ERM, then its last layer retrained on group-balanced validation data (Kirichenko et al.)"
    needs_val_groups = True  # fit refuses data without them; the table's e_va is a tick whatever the criterion
    trains = False  # the loop takes no step: the model is set in init_model
    # forward is model(x), but the batched mode must not train it as a plain linear head: it trains nothing
    plain_linear_forward = False
    hparams = {
        "retrains": HParam(20, "DFR: balanced validation subsamples averaged in the final last layer (authors: 20)",
                           flag="--dfr-retrains", low=1, low_inclusive=True),
    }  # fmt: skip

    def phases(self) -> list[Phase]:
        return [Phase("erm", ERM(), {}, "DFR: ERM")]

    def prepare(self, ctx: TrainContext, earlier: dict) -> None:
        from ..data.groups import VAL

        data, cfg = ctx.data, ctx.config
        val = data.indices(VAL)
        if len(val) == 0 or not bool((data.a[val] >= 0).all()):  # fit checks it first; prepare alone too
            raise ConfigError("method 'dfr' needs validation group labels (field 'a' >= 0 on split 1)")
        self.erm = earlier["erm"].model
        bias = getattr(getattr(self.erm, "heads", None), "linear", None)
        self.intercept = bias is not None and bias.bias is not None
        train_feats = model_features(self.erm, data.x[ctx.train_idx], cfg.eval_batch_size, cfg.device)
        mean, std = train_feats.mean(dim=0), train_feats.std(dim=0)
        self.std = torch.where(std > 0, std, torch.ones_like(std))
        self.mean = mean if self.intercept else torch.zeros_like(mean)  # no intercept: scale only
        z = (model_features(self.erm, data.x[val], cfg.eval_batch_size, cfg.device) - self.mean) / self.std
        y, g, k = data.y[val], data.group[val], data.num_classes
        gen = torch.Generator().manual_seed(int(cfg.seed))
        fit_half, tune_half = split_halves(len(val), gen)
        fit_rows = fit_half[balanced_subset(g[fit_half], gen)]
        self.tuning: dict[float, float] = {}
        path: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}
        fit = None
        for c in sorted(C_GRID):  # a warm-started path from the sparsest fit up
            fit = path[c] = l1_logistic(z[fit_rows], y[fit_rows], k, c, self.intercept, init=fit)
            pred = (z[tune_half] @ fit[0].t() + fit[1]).argmax(dim=1)
            self.tuning[c] = worst_group_acc(pred == y[tune_half], g[tune_half], data.num_groups)
        self.C = max(C_GRID, key=lambda c: (self.tuning[c], -C_GRID.index(c)))
        fits: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}
        weights, biases = [], []
        for _ in range(self.retrains):
            r = balanced_subset(g, gen)
            key = r.numpy().tobytes()  # already balanced data draws the same subset every time: one fit serves
            if key not in fits:
                fits[key] = l1_logistic(z[r], y[r], k, self.C, self.intercept, init=path[self.C])
            weights.append(fits[key][0])
            biases.append(fits[key][1])
        self.weight = torch.stack(weights).mean(dim=0)
        self.bias = torch.stack(biases).mean(dim=0)

    def init_model(self, model: torch.nn.Module) -> None:
        """The ERM model with head 0 set to the retrained layer, standardisation folded in: W / sigma and
        b - (W / sigma) mu."""
        model.load_state_dict(self.erm.state_dict())
        linear = model.heads.linear
        k = self.weight.shape[0]
        w = self.weight / self.std
        with torch.no_grad():
            linear.weight[:k] = w.to(linear.weight)
            if linear.bias is not None:
                linear.bias[:k] = (self.bias - w @ self.mean).to(linear.bias)

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.ce(logits[:, 0], batch)  # never called: DFR takes no step

    def forward(self, model, x: torch.Tensor) -> torch.Tensor:
        return model(x)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"retrains": self.retrains}
        if hasattr(self, "C"):
            out["C"] = self.C
            out["tuning_worst_group_acc"] = {str(c): v for c, v in self.tuning.items()}
        return out
