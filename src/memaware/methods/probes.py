"""Small pure pieces shared by the Table-1 baselines: the generalized cross-entropy of LC's biased branch, a
softmax linear probe stopped after a fixed number of steps (uLA's bias proxy) and the L1-penalised logistic
regression of DFR's last-layer retraining. All take tensors and return tensors; none reads files or knows a run.
"""

from __future__ import annotations

import math

from ..lazy import lazy_module

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")


def generalized_ce(logits: torch.Tensor, y: torch.Tensor, q: float) -> torch.Tensor:
    """(b,) generalized cross-entropy (1 - p_y^q) / q of (b, K) logits (Zhang & Sabuncu 2018; LC's biased branch).

    Its gradient in the logits is p_y^q (softmax(z) - e_y), cross-entropy's gradient weighted by p_y^q: examples the
    branch already fits well (the majority, which the shortcut explains) dominate, so the branch learns the shortcut.
    """
    p_y = logits.softmax(dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
    return (1.0 - p_y.clamp_min(1e-12) ** q) / q


def gce_weight(logits: torch.Tensor, y: torch.Tensor, q: float) -> torch.Tensor:
    """(b,) p_y^q: the factor by which GCE's logit gradient scales cross-entropy's (see ``generalized_ce``)."""
    return logits.softmax(dim=1).gather(1, y.unsqueeze(1)).squeeze(1) ** q


def standardize(train: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every tensor centred and scaled by ``train``'s per-column mean and std (constant columns: std 1)."""
    mean, std = train.mean(dim=0), train.std(dim=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple((t - mean) / std for t in (train, *others))


def fit_softmax_probe(
    feats: torch.Tensor, y: torch.Tensor, num_classes: int, steps: int, lr: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor]:
    """A multinomial logistic probe on frozen (n, d) features, full-batch Adam from zero for ``steps`` steps and
    stopped there (uLA's early-stopped bias proxy: the step count is the early stop). Features are used as given
    (standardise first). Deterministic (no draw). Returns (W (K, d), b (K,)) in float64."""
    x = feats.double()
    w = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(x @ w.t() + b, y).backward()
        opt.step()
    return w.detach(), b.detach()


def spectral_norm_sq(x: torch.Tensor, iters: int = 50) -> float:
    """||x||_2^2 (largest eigenvalue of x^T x) by power iteration from a fixed start, times 1.01: the iteration
    approaches it from below, and a step size from a slight overestimate stays safe. Far cheaper than an SVD
    for the wide matrices DFR meets (800 x 5000 TF-IDF: 0.1 s against 10 s)."""
    v = torch.ones(x.shape[1], dtype=x.dtype) / math.sqrt(x.shape[1])
    value = 0.0
    for _ in range(iters):
        u = x.t() @ (x @ v)
        value = float(u.norm())
        if value == 0.0:
            return 0.0
        v = u / value
    return 1.01 * value


def class_probs(z: torch.Tensor, binary: bool) -> torch.Tensor:
    """Class probabilities of (n, R) logits: sigmoid(z) when ``binary`` (R = 1: the logit of class 1 against a
    class 0 fixed at 0, i.e. softmax([0, z])[1]), else softmax over the R classes.

    Written out rather than ``z.softmax(dim=1)``: torch's softmax over a short innermost axis costs ~1 ms per call
    for n = 600 on a CPU (10x the elementwise form), and DFR's solver calls it thousands of times per run."""
    if binary:
        return torch.sigmoid(z)
    e = (z - z.amax(dim=1, keepdim=True)).exp()
    return e / e.sum(dim=1, keepdim=True)


def l1_logistic(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, C: float, intercept: bool = True, iters: int = 300,
    tol: float = 1e-5, init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L1-penalised logistic regression: argmin_W C * sum_i CE(W x_i + b, y_i) + ||W||_1 (liblinear's objective,
    as DFR's ``LogisticRegression(penalty='l1', C=C)``, except that the intercept is not penalised), by FISTA with
    gradient-based adaptive restart (O'Donoghue & Candes 2015), stopped when no coordinate moves more than ``tol``
    or after ``iters`` steps (the cap keeps a sweep's many fits cheap; predictions settle long before the objective).

    Two classes use one weight vector (logits (0, w.x + b): binary logistic regression, as liblinear); more classes a
    multinomial softmax. x (n, d), y (n,); ``init`` (W, b) in the returned layout warm-starts the solver (a path over
    C, or refits on resampled data). Returns (W (K, d), b (K,)) in float64.
    """
    x = x.double()
    n, d = x.shape
    rows = 1 if num_classes == 2 else num_classes
    # Lipschitz constant of the smooth part's gradient: C * ||[x, 1]||_2^2 * (1/4 binary, 1/2 softmax)
    xs = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], dim=1) if intercept else x
    lip = C * spectral_norm_sq(xs) * (0.25 if rows == 1 else 0.5)
    step = 1.0 / max(lip, 1e-12)
    if init is None:
        w = torch.zeros(rows, d, dtype=torch.float64)
        b = torch.zeros(rows, dtype=torch.float64)
    else:
        w, b = (init[0][1:], init[1][1:]) if rows == 1 else init
        w, b = w.double().clone(), b.double().clone()
    w_prev, b_prev, t = w.clone(), b.clone(), 1.0
    onehot = F.one_hot(y, num_classes).double()

    target = onehot[:, 1:] if rows == 1 else onehot

    for _ in range(iters):
        t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        mom = (t - 1.0) / t_next
        vw, vb = w + mom * (w - w_prev), b + mom * (b - b_prev)
        g = C * (class_probs(x @ vw.t() + (vb if intercept else 0.0), rows == 1) - target)  # d(C sum CE)/dz
        u = vw - step * (g.t() @ x)
        w_new = torch.sign(u) * (u.abs() - step).clamp_min(0.0)  # prox of step * ||.||_1
        b_new = vb - step * g.sum(dim=0) if intercept else vb
        # restart the momentum when it points against the step just taken
        if float(((vw - w_new) * (w_new - w)).sum() + ((vb - b_new) * (b_new - b)).sum()) > 0:
            t_next = 1.0
        change = max(float((w_new - w).abs().max()), float((b_new - b).abs().max()))
        w_prev, b_prev, w, b, t = w, b, w_new, b_new, t_next
        if change < tol:
            break
    if rows == 1:
        w = torch.cat([torch.zeros_like(w), w])
        b = torch.cat([torch.zeros_like(b), b])
    return w, b
