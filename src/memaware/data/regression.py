"""Setup C.1 of the paper (Appendix C): regression with a scalar core feature and memorizable input noise.

Training inputs x_i = (x_y,i, eps_i) with n evenly spaced x_y on [x_min, x_max], eps_i ~ N(0, sigma^2 I_m), and
targets y_i = f(x_y,i) + N(0, label_noise^2). Evaluation is on a dense clean sweep (eps = 0). The same seed gives
the same label noise and the same *standardized* input noise for any sigma, so runs differ only in sigma.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import ConfigError
from ..lazy import lazy_module
from .groups import GroupData

torch = lazy_module("torch")


def paper_function(x: torch.Tensor) -> torch.Tensor:
    """The authors' f(x) = tanh(x) + 0.5 tanh(-5x)."""
    return torch.tanh(x) + 0.5 * torch.tanh(-5.0 * x)


@dataclass(frozen=True)
class RegressionProblem:
    """x_train (n, 1 + m), y_train (n,), x_sweep (N, 1 + m) with zero noise, f_sweep (N,) = f on the sweep."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_sweep: torch.Tensor
    f_sweep: torch.Tensor
    sigma: float
    seed: int

    @property
    def x_train_clean(self) -> torch.Tensor:
        """Training inputs with their noise coordinates set to 0."""
        x = self.x_train.clone()
        x[:, 1:] = 0.0
        return x


def make_setup_c1(
    n: int = 20,
    noise_dim: int = 30,
    sigma: float = 1e-4,
    label_noise: float = 0.08,
    x_min: float = -1.5,
    x_max: float = 1.5,
    n_sweep: int = 1000,
    f: Callable[[torch.Tensor], torch.Tensor] = paper_function,
    seed: int = 0,
) -> RegressionProblem:
    """Generates Setup C.1; training inputs are the n evenly spaced points of the sweep (as the authors)."""
    if n < 1 or n_sweep < n:
        raise ConfigError(f"need 1 <= n <= n_sweep, got n={n}, n_sweep={n_sweep}")
    if noise_dim < 0 or sigma < 0 or label_noise < 0:
        raise ConfigError(
            f"noise_dim, sigma and label_noise must be >= 0, got {noise_dim}, {sigma}, {label_noise}"
        )
    if not x_min < x_max:
        raise ConfigError(f"need x_min < x_max, got {x_min}, {x_max}")
    g = torch.Generator().manual_seed(int(seed))
    grid = torch.linspace(x_min, x_max, n_sweep)
    idx = torch.linspace(0, n_sweep - 1, n).round().long()
    x_core = grid[idx]
    y = f(x_core) + label_noise * torch.randn(n, generator=g)
    eps = sigma * torch.randn(n, noise_dim, generator=g)
    x_sweep = torch.cat([grid[:, None], torch.zeros(n_sweep, noise_dim)], dim=1)
    return RegressionProblem(
        x_train=torch.cat([x_core[:, None], eps], dim=1),
        y_train=y,
        x_sweep=x_sweep,
        f_sweep=f(grid),
        sigma=sigma,
        seed=seed,
    )


def stack_problems(problems: Sequence[RegressionProblem]) -> GroupData:
    """E problems with the same shapes -> one GroupData with x (n, E, d) and float targets y (n, E).

    Every example is a training example (split 0); an ensemble model trains member e on problem e.
    """
    shapes = {tuple(p.x_train.shape) for p in problems}
    if len(shapes) != 1:
        raise ConfigError(f"problems to stack must share their shapes, got {sorted(shapes)}")
    n = problems[0].x_train.shape[0]
    return GroupData(
        x=torch.stack([p.x_train for p in problems], dim=1),
        y=torch.stack([p.y_train for p in problems], dim=1),
        a=torch.full((n,), -1, dtype=torch.long),
        split=torch.zeros(n, dtype=torch.int8),
        num_classes=1,
        num_attrs=1,
    )
