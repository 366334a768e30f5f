"""MAT in the user's own loop (``memaware.ownloop``): XRMTwins, MATLoss, MATSingleRun, and the example script."""

import copy
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import memaware
from memaware import MATLoss, MATSingleRun, XRMTwins
from memaware.errors import ConfigError
from memaware.methods import mat_log_shift

ROOT = Path(__file__).resolve().parents[1]
D, K = 6, 3


def problem(n=40, k=K, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g), torch.randint(0, k, (n,), generator=g)


def linear(k=K, dtype=torch.float32):
    return lambda: nn.Linear(D, k, dtype=dtype)


def sgd_epochs(module, x, y, epochs=3, bs=8, lr=0.5, seed=0, momentum=0.0):
    opt = torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(bs):
            loss = module.loss(x[idx], y[idx], idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return opt


def raises(fn, *names):
    with pytest.raises(ConfigError) as err:
        fn()
    msg = str(err.value)
    assert "\n" not in msg and all(n in msg for n in names), msg


def test_exports_are_lazy_and_public():
    assert {"XRMTwins", "MATLoss", "MATSingleRun"} <= set(memaware.__all__)
    from memaware.ownloop import MATLoss as L

    assert memaware.MATLoss is L


# ---- XRMTwins --------------------------------------------------------------------------------------------------------
def test_twins_shapes_and_state():
    torch.manual_seed(0)
    x, y = problem()
    twins = XRMTwins(linear(), num_train=40, num_classes=K, seed=1)
    assert twins(x).shape == (40, 2, K)
    assert twins.held_in.sum() == 20 and set(twins.state_dict()) >= {"held_in", "labels", "y_train", "rng_state"}
    loss = twins.loss(x[:8], y[:8], torch.arange(8))
    assert loss.dim() == 0 and loss.requires_grad
    assert (twins.y_train[:8] == y[:8]).all() and (twins.y_train[8:] == -1).all()
    assert twins.heldout_logits(x[:5], torch.arange(5)).shape == (5, K)
    loader = DataLoader(TensorDataset(x, y, torch.arange(40)), batch_size=16)
    all_ho = twins.heldout_logits_all(loader)
    assert all_ho.shape == (40, K) and torch.allclose(all_ho[:5], twins.heldout_logits(x[:5], torch.arange(5)))
    groups = twins.infer_groups(x, y)
    assert groups.shape == (40,) and ((groups // 2) == y).all() and set(groups.tolist()) <= set(range(2 * K))
    partial = DataLoader(TensorDataset(x[:30], y[:30], torch.arange(30)), batch_size=16)
    raises(lambda: twins.heldout_logits_all(partial), "loader", "10 of 40", "idx 30")


def test_twins_errors():
    x, y = problem()
    raises(lambda: XRMTwins(linear(), 1, K), "num_train", "1")
    raises(lambda: XRMTwins(linear(), 40, 1), "num_classes", "1")
    raises(lambda: XRMTwins(42, 40, K), "model_factory", "42")
    twins = XRMTwins(linear(), 40, K)
    raises(lambda: twins.loss(x[:4], y[:4], torch.tensor([0, 1, 2, 40])), "idx", "40")
    raises(lambda: twins.loss(x[:4], y[:4], torch.tensor([0, 1, -1, 3])), "idx", "-1")
    raises(lambda: twins.loss(x[:4], y[:4], torch.arange(3)), "idx", "(3,)")
    raises(lambda: twins.loss(x[:4], torch.tensor([0, 1, 3, 0]), torch.arange(4)), "y", "3")
    raises(lambda: XRMTwins(linear(k=4), 40, K).loss(x[:4], y[:4], torch.arange(4)), "model_factory() output", "4")
    twins.loss(x[:4], y[:4], torch.arange(4))
    raises(lambda: twins.loss(x[:4], (y[:4] + 1) % K, torch.arange(4)), "y disagrees", "idx 0")


def test_heldout_logits_come_from_the_twin_that_never_trained_on_the_example():
    torch.manual_seed(0)
    x, y = problem()
    twins = XRMTwins(linear(), 40, K, seed=3)
    opt = torch.optim.SGD(twins.parameters(), lr=0.5)
    held_by_0 = (twins.held_in == 0).nonzero().flatten()  # examples twin 0 trains on; twin 1 holds them out
    before = copy.deepcopy(twins.twins[1].state_dict())
    for _ in range(3):
        loss = twins.loss(x[held_by_0], y[held_by_0], held_by_0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, value in twins.twins[1].state_dict().items():  # the held-out twin: untouched by these examples
        assert torch.equal(value, before[name]), name
    assert not torch.equal(twins.twins[0].weight, twins.twins[1].weight)
    with torch.no_grad():
        assert torch.equal(twins.heldout_logits(x[held_by_0], held_by_0), twins.twins[1](x[held_by_0]))


def test_flips_follow_the_heldout_twin():
    torch.manual_seed(0)
    x, y = problem(n=200, k=2)
    twins = XRMTwins(linear(k=2), 200, 2, seed=0)
    sgd_epochs(twins, x, y, epochs=5, bs=50)
    idx = torch.arange(200)
    before = twins.labels.clone()
    with torch.no_grad():
        ho = twins.heldout(twins(x), idx)  # the logits the flip below uses (training mode = eval mode here)
    twins.loss(x, y, idx)
    changed = twins.labels != before
    assert changed.any() and (twins.labels[changed] == ho.argmax(dim=1)[changed]).all()
    # a held-out twin that predicts uniformly never flips a label; a certain one always does
    with torch.no_grad():
        for twin in twins.twins:
            twin.weight.zero_()
            twin.bias.zero_()
    start = twins.labels.clone()
    twins.loss(x, y, idx)
    assert torch.equal(twins.labels, start)
    with torch.no_grad():
        for twin in twins.twins:
            twin.weight.normal_().mul_(1e4)
        ho = twins.heldout(twins(x), idx)
    twins.loss(x, y, idx)
    assert torch.equal(twins.labels, ho.argmax(dim=1))


def test_twins_determinism_and_checkpoint_resume():
    x, y = problem()

    def run(seed, epochs):
        torch.manual_seed(0)
        twins = XRMTwins(linear(), 40, K, seed=seed)
        opt = sgd_epochs(twins, x, y, epochs=epochs, momentum=0.9)
        return twins, opt

    a, _ = run(5, 4)
    b, _ = run(5, 4)
    c, _ = run(6, 4)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not torch.equal(a.held_in, c.held_in)
    # two epochs, checkpoint, two more epochs == a fresh module loaded from the checkpoint then two more epochs
    half, opt = run(5, 2)
    state, opt_state = copy.deepcopy(half.state_dict()), copy.deepcopy(opt.state_dict())
    torch.manual_seed(123)
    resumed = XRMTwins(linear(), 40, K, seed=99)
    resumed.load_state_dict(state)
    opt2 = torch.optim.SGD(resumed.parameters(), lr=0.5, momentum=0.9)
    opt2.load_state_dict(opt_state)
    for mod, o in ((half, opt), (resumed, opt2)):
        g = torch.Generator().manual_seed(7)
        for _ in range(2):
            for idx in torch.randperm(40, generator=g).split(8):
                loss = mod.loss(x[idx], y[idx], idx)
                o.zero_grad()
                loss.backward()
                o.step()
    for k, v in half.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_twins_match_memaware_engine_xrm(data64):
    """Full-batch SGD of zero-initialised linear twins == ``fit(data, "xrm")``: same halves, same flips."""
    from memaware import TrainConfig, fit
    from memaware.data.groups import TRAIN

    cfg = TrainConfig(epochs=30, lr=0.5, init="zeros", dual=False, seed=4, selection="last")
    res = fit(data64, "xrm", cfg)
    idx = data64.indices(TRAIN)
    x, y = data64.x[idx], data64.y[idx]
    n, k = len(y), data64.num_classes

    def zero_linear():
        lin = nn.Linear(x.shape[1], k, bias=False, dtype=torch.float64)
        nn.init.zeros_(lin.weight)
        return lin

    twins = XRMTwins(zero_linear, n, k, seed=4)
    opt = torch.optim.SGD(twins.parameters(), lr=0.5)
    pos = torch.arange(n)
    for _ in range(30):
        loss = twins.loss(x, y, pos)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(twins.held_in, res.method.twins.held_in)
    assert torch.equal(twins.labels, res.method.twins.labels)
    assert (twins.labels != y).any()  # flips happened, and the same ones
    ho = twins.heldout_logits_all([(x, y, pos)])
    torch.testing.assert_close(ho, res.outputs["heldout_logits"].float(), rtol=1e-5, atol=1e-6)


# ---- MATLoss -------------------------------------------------------------------------------------------------------
def eq7_by_hand(h, y_train, tau, logits, y, idx):
    """Eq. 7 with explicit sums over the training set, one example at a time."""
    n, k = len(h), len(h[0])
    p_ho = [[math.exp(h[i][j] / tau) for j in range(k)] for i in range(n)]
    p_ho = [[v / sum(row) for v in row] for row in p_ho]
    joint = [[sum(p_ho[i][a] for i in range(n) if y_train[i] == c) / n for c in range(k)] for a in range(k)]
    cond = [[joint[a][c] / sum(joint[a]) for c in range(k)] for a in range(k)]
    losses = []
    for b in range(len(y)):
        i = int(idx[b])
        shift = [math.log(sum(p_ho[i][a] * cond[a][c] for a in range(k)) + 1e-6) for c in range(k)]
        z = [float(logits[b, c]) + shift[c] for c in range(k)]
        losses.append(-(z[int(y[b])] - math.log(sum(math.exp(v) for v in z))))
    return losses


def test_mat_loss_is_eq7():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(30, K, generator=g, dtype=torch.float64) * 3
    y_train = torch.randint(0, K, (30,), generator=g)
    logits = torch.randn(7, K, generator=g, dtype=torch.float64)
    idx = torch.tensor([3, 0, 29, 11, 11, 5, 17])
    y = y_train[idx]
    crit = MATLoss(h, y_train, temperature=0.5, reduction="none")
    by_hand = torch.tensor(eq7_by_hand(h.tolist(), y_train.tolist(), 0.5, logits, y, idx), dtype=torch.float64)
    torch.testing.assert_close(crit(logits, y, idx), by_hand)
    shift = mat_log_shift(h, y_train, 0.5, K)
    assert torch.equal(crit.shift, shift)
    torch.testing.assert_close(MATLoss(h, y_train, 0.5)(logits, y, idx), F.cross_entropy(logits + shift[idx], y))
    torch.testing.assert_close(MATLoss(h, y_train, 0.5, reduction="sum")(logits, y, idx), by_hand.sum())
    w = torch.rand(7, generator=g, dtype=torch.float64)
    torch.testing.assert_close(MATLoss(h, y_train, 0.5)(logits, y, idx, weight=w), (by_hand * w).sum() / w.sum())
    assert MATLoss(h, y_train).temperature == 0.1


def test_mat_loss_errors():
    h, y_train = torch.randn(10, K), torch.randint(0, K, (10,))
    raises(lambda: MATLoss(h[:, 0], y_train), "heldout_logits", "(10,)")
    bad = h.clone()
    bad[4, 1] = float("nan")
    raises(lambda: MATLoss(bad, y_train), "heldout_logits", "finite", "row 4")
    raises(lambda: MATLoss(h, y_train[:9]), "y_train", "(9,)")
    raises(lambda: MATLoss(h, torch.full((10,), K)), "y_train", str(K))
    raises(lambda: MATLoss(h, y_train, temperature=0.0), "temperature", "0.0")
    raises(lambda: MATLoss(h, y_train, temperature=-1), "temperature", "-1")
    raises(lambda: MATLoss(h, y_train, reduction="avg"), "reduction", "avg")
    crit = MATLoss(h, y_train)
    logits = torch.randn(3, K)
    raises(lambda: crit(logits, y_train[:3], torch.tensor([0, 10, 2])), "idx", "10")
    raises(lambda: crit(logits, torch.tensor([0, 1, K]), torch.arange(3)), "y", str(K))
    raises(lambda: crit(torch.randn(3, K + 1), y_train[:3], torch.arange(3)), "logits", str(K + 1))
    raises(lambda: crit(logits, y_train[:3], torch.arange(3), weight=torch.ones(2)), "weight", "(2,)")


# ---- MATSingleRun --------------------------------------------------------------------------------------------------
def test_single_run_heads_and_backbone():
    torch.manual_seed(0)
    x, y = problem()
    model = MATSingleRun(nn.Sequential(nn.Linear(D, 8), nn.ReLU()), 8, K, num_train=40, temperature=0.1, seed=2)
    assert model(x).shape == (40, K)
    idx = torch.arange(10)
    loss = model.loss(x[idx], y[idx], idx)
    model.zero_grad()
    loss.backward()
    # the backbone's gradient is head C's shifted loss alone: heads A and B see detached features
    grads = [p.grad.clone() for p in model.backbone.parameters()]
    assert model.twins.twins[0].weight.grad.abs().sum() > 0 and model.head_c.weight.grad.abs().sum() > 0
    model.zero_grad()
    with torch.no_grad():
        shift = model._shift(idx)
    F.cross_entropy(model(x[idx]) + shift, y[idx]).backward()
    for a, b in zip(grads, [p.grad for p in model.backbone.parameters()], strict=True):
        torch.testing.assert_close(a, b)
    assert torch.equal(model.heldout_buffer[idx], model.heldout_logits(x[idx], idx))
    assert model.heldout_buffer[10:].abs().sum() == 0
    assert model.infer_groups(x, y).shape == (40,)
    sgd_epochs(model, x, y, epochs=2, lr=0.1)
    raises(lambda: MATSingleRun(nn.Identity(), D, K, 40, temperature=0), "temperature")
    raises(lambda: MATSingleRun(nn.Identity(), D, K, 1), "num_train")
    raises(lambda: model.loss(x[:2], y[:2], torch.tensor([0, 41])), "idx", "41")


def test_single_run_matches_memaware_engine(data64):
    """Bias-free zero-initialised heads on features (identity backbone) == ``fit(data, "mat", mode="single-run")``."""
    from memaware import TrainConfig, fit
    from memaware.data.groups import TRAIN

    cfg = TrainConfig(epochs=15, lr=0.5, init="zeros", dual=False, seed=1, selection="last")
    res = fit(data64, "mat", cfg, mode="single-run", temperature=0.1)
    idx = data64.indices(TRAIN)
    x, y = data64.x[idx], data64.y[idx]
    model = MATSingleRun(nn.Identity(), x.shape[1], data64.num_classes, len(y), 0.1, seed=1, y_train=y).double()
    for lin in (*model.twins.twins, model.head_c):
        nn.init.zeros_(lin.weight)
        lin.bias.requires_grad_(False).zero_()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    pos = torch.arange(len(y))
    for _ in range(15):
        loss = model.loss(x, y, pos)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(model.twins.labels, res.method.twins.labels)
    torch.testing.assert_close(model(x), res.predict_logits(x).double(), rtol=1e-5, atol=1e-6)


# ---- the example scripts ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("script", "method"), [("own_loop_pytorch.py", "mat"), ("own_loop_single_run.py", "mat_single_run")]
)
def test_example_script_mat_beats_erm(tmp_path, script, method):
    """Default size and seed 0 (about 7 s and 5 s on one thread); measured gaps: docs/own-loop.md."""
    out = tmp_path / "r.json"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--seed", "0", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r[method]["test_worst_group"] >= r["erm"]["test_worst_group"] + 0.25, r
    assert "worst-group" in proc.stdout and seconds < 120
