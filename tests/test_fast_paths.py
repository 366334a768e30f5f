"""Each batched-mode fast path (``Method.batched_loss``, in its method's module) is pinned to autograd of the
method's own ``loss`` and to its ``after_step``; the per-member optimiser tensors equal torch.optim."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from comparisons import assert_close

from memaware.engine import TrainConfig
from memaware.engine.many import fast_path
from memaware.methods import Batch, Method, make_method

FAST_CASES = {  # method, per-slot hyper-parameters (slot j of every stream)
    "erm": ("erm", [{}, {}]),
    "jtt": ("jtt", [{"lambda_up": 5}, {"lambda_up": 20}]),
    "mat": ("mat", [{"temperature": 0.1}, {"temperature": 0.01}]),
    "xrm": ("xrm", [{}, {}]),
    "groupdro": ("groupdro", [{"eta": 0.01}, {"eta": 0.3}]),
    "ula": ("ula", [{"eta": 1.0, "probe_steps": 10}, {"eta": 0.5, "probe_steps": 30}]),
}


def _prepared(data, name: str, hp: dict, seed: int, rows: torch.Tensor | None) -> Method:
    from memaware.methods import TrainContext

    train_idx = data.indices(0) if rows is None else data.indices(0)[rows]
    n = len(train_idx)
    extra = {"mat": {"heldout_logits": torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))},
             "jtt": {"errors": torch.arange(n) % 7 == seed}}.get(name, {})  # fmt: skip
    method = make_method(name, **hp, **extra)
    method.prepare(TrainContext(data, train_idx, TrainConfig(seed=seed), torch.Generator().manual_seed(seed)), {})
    return method


@pytest.mark.parametrize("case", sorted(FAST_CASES))
@pytest.mark.parametrize("batching", ["minibatch", "whole-pool-weighted", "subsets"])
def test_fast_path_equals_autograd_of_the_methods_loss_and_its_after_step(data64, case, batching):
    from memaware.methods.batched import MemberStack, StackedBatch

    name, hps = FAST_CASES[case]
    n, S, M, g = int((data64.split == 0).sum()), 2, 2, torch.Generator().manual_seed(0)
    y_all = data64.y[data64.indices(0)]
    rows = [None, None]
    if batching == "subsets":  # two streams on their own training positions (the memorization audit's halves)
        perm = torch.randperm(n, generator=g)
        rows = [perm[: n // 2].sort().values, perm[n // 2 :].sort().values]
    seeds = (3, 8)
    grid = [[_prepared(data64, name, hps[j], seeds[s], rows[s]) for j in range(M)] for s in range(S)]
    refs = [[_prepared(data64, name, hps[j], seeds[s], rows[s]) for j in range(M)] for s in range(S)]
    stack = MemberStack(grid, [[True] * M] * S, rows, n, "cpu", torch.float64)
    fast = fast_path(grid[0][0])(stack)
    H = grid[0][0].num_heads
    if batching == "minibatch":
        b = 24
        pos = torch.stack([torch.randperm(n, generator=g)[:b] for _ in range(S)])
        batch_kw = {"pos": pos, "flat": (pos + torch.arange(S).view(-1, 1) * n).reshape(-1), "y": y_all[pos]}
        weight = None
    else:
        b = n
        batch_kw = {"pos": None, "flat": None, "y": y_all.expand(S, n)}
        weight = torch.rand(S, n, M, generator=g, dtype=torch.float64) + 0.5 if batching != "subsets" else None
    present = None
    if batching == "subsets":
        present = torch.zeros(S, n, M, dtype=torch.bool)
        for s in range(S):
            present[s, rows[s]] = True
    uniforms = torch.full((S, b), 2.0, dtype=torch.float64)
    for s in range(S):  # each stream's draws, from its members' generator as their after_step draws them
        gen = torch.Generator()
        gen.set_state(refs[s][0].twins.generator.get_state() if name == "xrm" else g.get_state())
        count = b if rows[s] is None else len(rows[s])
        u = torch.rand(count, generator=gen)
        uniforms[s] = u if rows[s] is None else uniforms[s].index_copy(0, rows[s], u.double())
    batch = StackedBatch(n=n, weight=weight, present=present, uniforms=uniforms.float(), **batch_kw)
    z = torch.randn(H, 2, S, b, M, generator=g, dtype=torch.float64) * 3
    dz = fast.grad(z, batch)
    fast.after_step(z, batch)
    fast.store()
    for s in range(S):
        for j in range(M):
            own = rows[s] if rows[s] is not None else slice(None)
            logits = z[:, :, s, :, j].permute(2, 0, 1)[own].clone().requires_grad_(True)  # (b_c, H, K)
            pos = batch_kw["pos"][s] if batch_kw["pos"] is not None else torch.arange(len(logits))
            w = None if weight is None else weight[s, :, j]
            ref_batch = Batch(pos, batch_kw["y"][s][own], w)
            refs[s][j].loss(logits, ref_batch).backward()
            ours = dz[:, :, s, :, j].permute(2, 0, 1)
            assert torch.allclose(ours[own], logits.grad, rtol=1e-10, atol=1e-13)
            if rows[s] is not None:
                outside = torch.ones(n, dtype=torch.bool).index_fill_(0, rows[s], False)
                assert not ours[outside].any()  # a member's loss never touches others' examples
            refs[s][j].after_step(logits.detach(), ref_batch, None)
            assert_close(
                {k: v.tolist() for k, v in grid[s][j].state_dict().items()},
                {k: v.tolist() for k, v in refs[s][j].state_dict().items()},
            )


def test_optimisers_with_per_member_tensors_equal_torch_optim():
    """engine.optim with (members, 1) hyper-parameter tensors = torch.optim run member by member (float64)."""
    from memaware.engine.optim import make_optimizer

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (40,), generator=g)
    lr = torch.tensor([[0.1], [0.03], [0.01]], dtype=torch.float64)
    mom = torch.tensor([[0.9], [0.0], [0.5]], dtype=torch.float64)
    wd = torch.tensor([[0.0], [0.01], [0.1]], dtype=torch.float64)
    for name in ("sgd", "adam", "adamw"):
        w0 = torch.randn(3, 15, generator=g, dtype=torch.float64)
        stacked = w0.clone().requires_grad_(True)
        ours = make_optimizer(name, [stacked], lr, mom, wd)
        singles = [w0[c].clone().view(3, 5).requires_grad_(True) for c in range(3)]
        theirs = []
        for c, w in enumerate(singles):
            kw = {"lr": float(lr[c]), "weight_decay": float(wd[c])}
            cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
            theirs.append(cls([w], momentum=float(mom[c]), **kw) if name == "sgd" else cls([w], **kw))
        for _ in range(20):
            ours.zero_grad()
            sum(F.cross_entropy(x @ stacked[c].view(3, 5).t(), y) for c in range(3)).backward()
            ours.step()
            for w, opt in zip(singles, theirs, strict=True):
                opt.zero_grad()
                F.cross_entropy(x @ w.t(), y).backward()
                opt.step()
        for c in range(3):
            assert torch.allclose(stacked[c].view(3, 5), singles[c], rtol=0, atol=1e-12), name


@pytest.mark.parametrize("case", sorted(FAST_CASES))
def test_shift_invariant_fast_paths_see_logits_through_softmax_only(data64, case):
    """What licenses the two-class path (z_1 - z_0 alone): the same gradient and state for z + c per head, and a
    gradient that sums to 0 over the classes."""
    from memaware.methods.batched import MemberStack, StackedBatch

    name, hps = FAST_CASES[case]
    n, g = int((data64.split == 0).sum()), torch.Generator().manual_seed(1)
    grids = [[[_prepared(data64, name, hps[j], 5, None) for j in range(2)]] for _ in range(2)]
    fasts = [
        fast_path(grid[0][0])(MemberStack(grid, [[True, True]], [None], n, "cpu", torch.float64)) for grid in grids
    ]
    assert fasts[0].shift_invariant
    pos = torch.randperm(n, generator=g)[:30].view(1, -1)
    batch = StackedBatch(pos, pos.reshape(-1), data64.y[data64.indices(0)][pos], n, uniforms=torch.rand(1, 30))
    z = torch.randn(grids[0][0][0].num_heads, 2, 1, 30, 2, generator=g, dtype=torch.float64)
    shifted = z + torch.randn(z.shape[0], 1, 1, 30, 2, generator=g, dtype=torch.float64) * 5
    dz, dz_shifted = fasts[0].grad(z, batch), fasts[1].grad(shifted, batch)
    assert torch.allclose(dz, dz_shifted, atol=1e-12) and bool(dz.sum(dim=1).abs().max() < 1e-15)
    for fast, logits in zip(fasts, (z, shifted), strict=True):
        fast.after_step(logits, batch)
        fast.store()
    for a, b in zip(grids[0][0], grids[1][0], strict=True):
        assert_close(
            {k: v.tolist() for k, v in a.state_dict().items()}, {k: v.tolist() for k, v in b.state_dict().items()}
        )
