"""Logit Correction (Liu et al., ICLR 2023, "Avoiding spurious correlations via logit correction").

Two heads train together. Head 1, the biased branch f_b, minimises the generalized cross-entropy
GCE_q(f_b(x), y) = (1 - p_b(y | x)^q) / q, which weighs cross-entropy's gradient by p_b(y | x)^q and so learns the
shortcut. Its tempered prediction p_b(. | x) = softmax(f_b(x) / tau) estimates the spurious attribute,
a_hat = argmax p_b. Per batch, M[y, a] = mean of p_b(y_i | x_i) over the batch's examples with (y_i, a_hat_i) =
(y, a), averaged over steps with ``ema``, and p(y | a) = M[y, a] / sum_y' M[y', a] (``estimator='authors'``, their
code; the default ``counts`` takes M[y, a] = the share of the batch in cell (y, a), the paper's empirical
count(y, a) / count(a), which stays the class prior when the branch predicts one class only). Head 0, the main branch f,
minimises the logit-corrected loss

    L_LC = CE(f(x_i) + log(p(. | a_hat_i) + 1e-4), y_i)        (LC eq. 3; the authors' 1e-4)

and the total loss is L_LC + lambda * GCE_q. Predictions use f alone. Group MixUp (``mixup``): each example is mixed
with a random example of its class whose a_hat differs from its label (a presumed minority example), with ratio
lam ~ U(1 - 2 alpha, 1 - alpha) and alpha ramping up to 0.5 (exp(-5 (1 - t/T)^2), the authors' ramp); logits and
corrections are mixed with the same lam. Mixing the head's logits equals mixing the features the linear head reads
(the authors mix BERT's pooled features, or the images). No group labels are used for training.

Choices where the paper is silent (docs/methods.md cites the authors' code for each): both branches share one
optimiser (the authors give f_b a tenth of the learning rate and no weight decay); end to end, f_b is a head on the
main backbone's detached features (the authors train a second network).
"""

from __future__ import annotations

import math
from typing import Any

from ..lazy import lazy_module, no_grad
from .base import Batch, Method, TrainContext
from .probes import generalized_ce
from .registry import register
from .space import Choice, HParam

torch = lazy_module("torch")

CORRECTION_EPS = 1e-4  # the authors' LogitCorrectionLoss and correction-matrix guards
MIXUP_RAMPUP = 0.5
ESTIMATORS = ("counts", "authors")  # alpha reaches 0.5 after this fraction of the run's steps


def batch_bias_matrix(p_bias: torch.Tensor, y: torch.Tensor, a_hat: torch.Tensor, estimator: str) -> torch.Tensor:
    """(K, K) M[y, a] of one batch. ``counts``: the share of the batch with (y_i, a_hat_i) = (y, a) (the paper's
    empirical counts); ``authors``: the mean of p_b(y_i | x_i) over those examples (0 for an empty cell: the
    authors' code). p_bias (b, K), y (b,), a_hat (b,)."""
    k = p_bias.shape[1]
    cell = y * k + a_hat
    counts = torch.bincount(cell, minlength=k * k).to(p_bias.dtype)
    if estimator == "counts":
        return (counts / len(y)).view(k, k)
    p_y = p_bias.gather(1, y.unsqueeze(1)).squeeze(1)
    sums = torch.zeros(k * k, dtype=p_bias.dtype, device=p_bias.device).index_add(0, cell, p_y)
    return (sums / (counts + CORRECTION_EPS)).view(k, k)


def label_given_bias(matrix: torch.Tensor) -> torch.Tensor:
    """(K, K) p(y | a): ``matrix`` normalised over y (dim 0) in every column a."""
    return matrix / (matrix.sum(dim=0, keepdim=True) + CORRECTION_EPS)


def logit_correction(cond: torch.Tensor, a_hat: torch.Tensor) -> torch.Tensor:
    """(b, K) log(p(. | a_hat_i) + 1e-4): the correction added to the main branch's logits (LC eq. 3)."""
    return torch.log(cond[:, a_hat].t() + CORRECTION_EPS)


def mixup_partners(y: torch.Tensor, a_hat: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(b,) for each example a random partner of the same class with a_hat != y (any of its class if none)."""
    partner = torch.arange(len(y))
    for k in torch.unique(y).tolist():
        members = torch.nonzero(y == k).squeeze(1)
        pool = members[a_hat[members] != k]
        pool = pool if len(pool) else members
        partner[members] = pool[torch.randint(len(pool), (len(members),), generator=generator)]
    return partner


def mixup_alpha(step: int, rampup_steps: int) -> float:
    """0.5 exp(-5 (1 - t/T)^2) for t < T, then 0.5 (the authors' sigmoid_rampup times 0.5)."""
    if rampup_steps <= 0:
        return 0.5
    phase = 1.0 - min(step, rampup_steps) / rampup_steps
    return 0.5 * math.exp(-5.0 * phase * phase)


@register
class LC(Method):
    name = "lc"
    display_name = "LC"
    rank = 7
    summary = "logit correction from a GCE-trained biased branch (Liu et al. 2023)"
    num_heads = 2
    plain_linear_forward = True  # forward() is model(x) when the backbone is the identity
    hparams = {
        "q": HParam(0.8, "LC: GCE exponent of the biased branch (authors: 0.8 Waterbirds, 0.7 CivilComments)",
                    search={"*": Choice((0.7, 0.8))}, low=0.0),
        "tau": HParam(0.1, "LC: temperature of the biased branch's softmax (authors: 0.1 Waterbirds, 1 CivilComments)",
                      flag="--lc-tau", search={"*": Choice((0.1, 0.5, 1.0))}, low=0.0),
        "lambda_bias": HParam(2.0, "LC: weight of the biased branch's GCE loss (authors: 2 Waterbirds, 0.1 Civil)",
                              search={"*": Choice((0.1, 0.5, 1.0, 2.0))}, low=0.0, low_inclusive=True),
        "ema": HParam(0.0, "LC: moving average of the correction matrix over steps (0: this batch's, authors' WB)",
                      flag="--lc-ema", search={"*": Choice((0.0, 0.5, 0.9))}, low=0.0, low_inclusive=True),
        "estimator": HParam("counts", "LC: p(y | a) from counts of (y, a_hat) (the paper) or from mean p_b(y | x) "
                            "per cell (the authors' code)", flag="--lc-estimator", choices=ESTIMATORS),
        "mixup": HParam(False, "LC: group MixUp of each example with a presumed minority example of its class",
                        flag="--lc-mixup"),
    }  # fmt: skip

    def prepare(self, ctx: TrainContext, earlier: dict) -> None:
        k = ctx.data.num_classes
        self.num_classes = k
        self.matrix = torch.zeros(k, k, dtype=torch.float64)
        self.step = 0
        self.seed = int(ctx.config.seed)
        n, cfg = len(ctx.train_idx), ctx.config
        bs = cfg.batch_size if 0 < cfg.batch_size < n else n
        total = cfg.max_steps or cfg.epochs * -(-n // bs)
        self.rampup_steps = round(MIXUP_RAMPUP * total)

    def forward(self, model, x: torch.Tensor) -> torch.Tensor:
        if not model.backbone_parameters():
            return model(x)  # heads on the input: the branches are two independent linear models
        feats = model.features(x)
        # the biased branch must not train the main backbone: it reads detached features
        return torch.cat([model.heads(feats)[:, :1], model.heads(feats.detach())[:, 1:]], dim=1)

    def _matrix(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the correction matrix after this batch (K, K) float64, a_hat (b,)): the same for loss and after_step."""
        p_bias = (logits[:, 1].detach().double() / self.tau).softmax(dim=1)
        a_hat = p_bias.argmax(dim=1)
        batch = batch_bias_matrix(p_bias, y, a_hat, self.estimator)
        return self.ema * self.matrix.to(batch.device) + (1.0 - self.ema) * batch, a_hat

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        matrix, a_hat = self._matrix(logits, batch.y)
        shift = logit_correction(label_given_bias(matrix), a_hat).to(logits.dtype)
        z = logits[:, 0]
        if self.mixup:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.step)
            alpha = mixup_alpha(self.step, self.rampup_steps)
            lam = float(torch.empty(()).uniform_(1.0 - 2.0 * alpha, 1.0 - alpha, generator=gen))
            partner = mixup_partners(batch.y.cpu(), a_hat.cpu(), gen).to(z.device)
            z = lam * z + (1.0 - lam) * z[partner]  # the partner has the same label: one CE term
            shift = lam * shift + (1.0 - lam) * shift[partner]
        gce = generalized_ce(logits[:, 1], batch.y, self.q)
        if batch.weight is not None:
            w = batch.weight.to(gce.device)
            gce_mean = (gce * w).sum() / w.sum()
        else:
            gce_mean = gce.mean()
        return self.ce(z + shift, batch) + self.lambda_bias * gce_mean

    @no_grad
    def after_step(self, logits: torch.Tensor, batch: Batch, model) -> None:
        self.matrix = self._matrix(logits, batch.y)[0].cpu()
        self.step += 1

    def state_dict(self) -> dict[str, Any]:
        return {"matrix": self.matrix.clone(), "step": torch.tensor(self.step)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.matrix, self.step = state["matrix"].clone(), int(state["step"])

    def predict_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, 0]  # the correction is a training device: predict with f alone

    def describe(self) -> dict[str, Any]:
        out = {key: getattr(self, key) for key in self.hparams}
        matrix = getattr(self, "matrix", None)
        if matrix is not None and self.step:
            out["label_given_bias"] = label_given_bias(matrix).tolist()
        return out
