"""The engine's small parts: which optimiser strategy a run gets (``engine.optimisation``), ``fit``'s steps used on
their own, and the lazy imports (``memaware.lazy``) that keep the command line free of torch."""

import dataclasses
import subprocess
import sys

import pytest
import torch

from memaware import TrainConfig, make_setup21
from memaware.engine.dual import DualSGD
from memaware.engine.fitting import check_run, fit, fresh_method, set_up
from memaware.engine.optim import SGD, Adam
from memaware.engine.optimisation import build_members, build_single, strategy_for
from memaware.errors import ConfigError
from memaware.lazy import lazy_module, no_grad
from memaware.methods import ERM, make_method
from memaware.models import EnsembleMLP, build_model


@pytest.fixture(scope="module")
def wide():
    """n = 60 training examples in d = 202 dimensions: the Gram matrix is the cheaper path."""
    return make_setup21(n_train=60, n_val=40, n_test=40, noise_dim=200, sigma=0.5, seed=1)


class Tempered(ERM):
    """A user's method whose forward is not ``model(x)``: the Gram path, which only sees W x, must not apply."""

    def forward(self, model, x: torch.Tensor) -> torch.Tensor:
        return model(x) / 2


def _strategy(data, cfg, method=None, end_to_end=False, **model_kwargs):
    model = build_model(data.dim, data.num_classes, seed=0, **model_kwargs)
    return strategy_for(cfg, method or ERM(), model, data.x[data.split == 0], end_to_end)


def test_each_run_gets_its_strategy(wide):
    full_sgd = TrainConfig(epochs=2, optimizer="sgd")
    assert _strategy(wide, full_sgd) == "gram"  # Fig. 1: linear, no bias, full-batch SGD, n < d
    assert _strategy(wide, full_sgd, end_to_end=True) == "torch"  # a backbone is fine-tuned
    assert _strategy(wide, dataclasses.replace(full_sgd, optimizer="adam")) == "rules"
    assert _strategy(wide, dataclasses.replace(full_sgd, batch_size=16)) == "rules"  # mini-batches
    assert _strategy(wide, dataclasses.replace(full_sgd, dual=False)) == "rules"
    assert _strategy(wide, full_sgd, bias=True) == "rules"  # W = s W0 + C^T X has no bias term
    assert _strategy(wide, full_sgd, method=Tempered()) == "rules"
    assert _strategy(wide, full_sgd, method=make_method("mat")) == "gram"  # declares a plain linear forward
    adam = TrainConfig(epochs=2, optimizer="adam")
    mlp = EnsembleMLP(wide.dim, [0], hidden=(8,))
    assert strategy_for(adam, make_method("mse"), mlp, wide.x, False) == "analytic"  # Fig. 3: hand-derived backward
    assert strategy_for(dataclasses.replace(adam, analytic=False), make_method("mse"), mlp, wide.x, False) == "rules"
    gelu = EnsembleMLP(wide.dim, [0], hidden=(8,), activation="gelu")  # its backward needs the pre-activation
    assert strategy_for(adam, make_method("mse"), gelu, wide.x, False) == "rules"
    assert strategy_for(adam, ERM(), mlp, wide.x, False) == "rules"  # no closed-form output gradient


def test_build_single_and_members_objects(wide):
    cfg = TrainConfig(epochs=2, optimizer="sgd")
    model = build_model(wide.dim, wide.num_classes, seed=0)
    opt = build_single(cfg, make_method("erm"), model, wide.x[wide.split == 0], 1, end_to_end=False)
    assert opt.strategy == "gram" and isinstance(opt.dual, DualSGD) and isinstance(opt.optimizer, SGD)
    assert opt.schedule is None
    leaves = [torch.zeros(3, 4, requires_grad=True)]
    lr = torch.tensor([[1e-3], [1e-2], [1e-1]], dtype=torch.float64)
    members = build_members("adam", leaves, lr, torch.zeros(3, 1), torch.zeros(3, 1))
    assert isinstance(members, Adam) and members.lr is lr  # per-member hyper-parameters, kept as tensors


def test_fit_steps_used_alone(wide):
    """``fresh_method`` never trains the caller's instance; ``check_run`` refuses before any work; ``set_up``
    builds the run ``fit`` would drive (the Gram path here)."""
    given = make_method("jtt")
    assert fresh_method(given, {}) is not given
    with pytest.raises(ConfigError, match="hyper-parameters go into the method"):
        fresh_method(given, {"lambda_up": 3})
    no_groups = dataclasses.replace(wide, a=torch.full_like(wide.a, -1))
    with pytest.raises(ConfigError, match="needs training group labels"):
        check_run(make_method("groupdro"), no_groups, TrainConfig(), None, None)
    with pytest.raises(ConfigError, match="checkpoint_every"):
        check_run(make_method("erm"), wide, TrainConfig(), None, 0)
    cfg = TrainConfig(epochs=3, seed=4)
    run = set_up(wide, make_method("erm"), cfg, None, {}, None, None, {})
    assert run.classify and run.steps.dual is not None and run.steps.steps == 0
    # the same run through fit takes exactly its epochs
    assert fit(wide, "erm", cfg).epochs_run == 3


def test_lazy_module_imports_at_first_attribute():
    """In a fresh interpreter: binding the stand-in imports nothing; the first attribute imports the module; after
    that, attributes come from the stand-in's own dictionary (no per-access import machinery)."""
    code = (
        "import sys\n"
        "from memaware.lazy import lazy_module\n"
        "m = lazy_module('colorsys')\n"
        "assert 'colorsys' not in sys.modules\n"
        "assert m.rgb_to_hsv(1.0, 0.0, 0.0) == (0.0, 1.0, 1.0)\n"
        "assert 'colorsys' in sys.modules and 'rgb_to_hsv' in vars(m)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_lazy_module_errors_and_no_grad():
    missing = lazy_module("memaware_no_such_module")
    with pytest.raises(ModuleNotFoundError):
        missing.anything  # noqa: B018
    with pytest.raises(AttributeError):
        lazy_module("colorsys").no_such_function  # noqa: B018

    @no_grad
    def double(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    x = torch.ones(2, requires_grad=True)
    assert not double(x).requires_grad and (x * 2).requires_grad
    assert double.__name__ == "double"
