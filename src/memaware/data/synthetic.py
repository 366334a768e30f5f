"""Setup 2.1 of the paper: a core feature, a spurious feature scaled by gamma, and memorizable noise.

x = (x_y, gamma * x_a, eps) with x_y = s(y) (1 + jitter N(0,1)), x_a = s(a) (1 + jitter N(0,1)) and
eps ~ N(0, sigma^2 I_d). In the training split a == y for a fraction rho of the examples (the "majority"),
in validation/test for a fraction rho_eval (0.5: a independent of y). For binary problems s(.) is the sign
{0 -> -1, 1 -> +1} (one coordinate each for core and spurious); for K > 2 classes s(.) is the signed one-hot
vector 2 e_k - 1 in R^K (+1 on its own coordinate, -1 elsewhere; K coordinates each), and a minority
example's attribute is drawn uniformly among the other K - 1 values.

Proportions are exact per split (class sizes as equal as n allows, round((1 - rho) n) minority examples),
which removes sampling noise from rho without changing the model's view of the data.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..lazy import lazy_module
from .groups import TEST, TRAIN, VAL, GroupData

torch = lazy_module("torch")


def _signed_code(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(n,) labels -> (n, c) code: sign for K = 2 (c = 1), signed one-hot 2 e_y - 1 for K > 2 (c = K)."""
    if num_classes == 2:
        return (2.0 * labels.float() - 1.0).unsqueeze(1)
    return 2.0 * torch.nn.functional.one_hot(labels, num_classes).float() - 1.0


def _split(n: int, rho: float, num_classes: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels y with equal class sizes and attributes a with exactly round((1 - rho) n) minority (a != y)."""
    y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    n_minority = int(round((1.0 - rho) * n))
    minority = torch.randperm(n, generator=g)[:n_minority]
    a = y.clone()
    # a minority attribute is one of the other K - 1 values, uniformly
    offset = torch.randint(1, num_classes, (n_minority,), generator=g)
    a[minority] = (y[minority] + offset) % num_classes
    return y, a


def make_setup21(
    n_train: int = 1000,
    n_val: int = 1000,
    n_test: int = 1000,
    noise_dim: int = 1798,
    gamma: float = 5.0,
    sigma: float = 0.5,
    rho_train: float = 0.9,
    rho_eval: float = 0.5,
    jitter: float = 0.12,
    num_classes: int = 2,
    seed: int = 0,
) -> GroupData:
    """Generates Setup 2.1 (paper Sec. 2) as a ``GroupData`` with splits train/validation/test.

    Returns x of shape (n, c + c + noise_dim), c = 1 for two classes, K otherwise; the first c columns are the core
    feature x_y, the next c the scaled spurious feature gamma * x_a. The same ``seed`` gives the same labels,
    attributes, jitter and *standardized* noise for any ``sigma``, so runs that differ only in sigma see the same
    draw (the noise is sigma times a fixed N(0, I) sample).
    """
    if min(n_train, n_val, n_test) < 1:
        raise ConfigError(
            f"every split needs at least one example, got n_train={n_train}, n_val={n_val}, n_test={n_test}"
        )
    if noise_dim < 0:
        raise ConfigError(f"noise_dim must be >= 0, got {noise_dim}")
    if sigma < 0 or jitter < 0:
        raise ConfigError(f"sigma and jitter must be >= 0, got sigma={sigma}, jitter={jitter}")
    for name, rho in (("rho_train", rho_train), ("rho_eval", rho_eval)):
        if not 0.0 <= rho <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], got {rho}")
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    g = torch.Generator().manual_seed(int(seed))
    xs, ys, as_, splits = [], [], [], []
    for code, n, rho in ((TRAIN, n_train, rho_train), (VAL, n_val, rho_eval), (TEST, n_test, rho_eval)):
        y, a = _split(n, rho, num_classes, g)
        c = 1 if num_classes == 2 else num_classes
        x_y = _signed_code(y, num_classes) * (1.0 + jitter * torch.randn(n, c, generator=g))
        x_a = _signed_code(a, num_classes) * (1.0 + jitter * torch.randn(n, c, generator=g))
        eps = sigma * torch.randn(n, noise_dim, generator=g)
        xs.append(torch.cat([x_y, gamma * x_a, eps], dim=1))
        ys.append(y)
        as_.append(a)
        splits.append(torch.full((n,), code, dtype=torch.int8))
    return GroupData(
        x=torch.cat(xs).float(),
        y=torch.cat(ys).long(),
        a=torch.cat(as_).long(),
        split=torch.cat(splits),
        num_classes=num_classes,
        num_attrs=num_classes,
    )
