"""The rest of the paper's Table 1 (LC, uLA, XRM+GroupDRO) and DFR: each loss against a hand-computed case, the
groups XRM+GroupDRO trains on, DFR's balanced split and its last layer, the uLA criterion and the table's marks."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from memaware.data.groups import TRAIN, VAL
from memaware.engine import TrainConfig, fit
from memaware.errors import ConfigError
from memaware.evallog import EvalLog
from memaware.methods import Batch, TrainContext, make_method
from memaware.methods.dfr import balanced_subset, split_halves
from memaware.methods.lc import (
    batch_bias_matrix,
    label_given_bias,
    logit_correction,
    mixup_alpha,
    mixup_partners,
)
from memaware.methods.probes import fit_softmax_probe, gce_weight, generalized_ce, l1_logistic
from memaware.methods.ula import ula_log_shift
from memaware.methods.xrm import cross_mistake_groups
from memaware.methods.xrm_groupdro import heldout_mistake_groups
from memaware.models import all_logits
from memaware.selection import get_criterion

CFG = TrainConfig(epochs=8, lr=1e-2, optimizer="adam", batch_size=64, seed=0)


# ---- LC ----------------------------------------------------------------------------------------------------------
def test_gce_value_and_gradient_weight_on_a_2x2_case():
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0])
    q = 0.7
    # by hand: p_0 = e / (e + 1) and 1 / (1 + e^2)
    p = [math.e / (math.e + 1), 1 / (1 + math.e**2)]
    loss = generalized_ce(logits, y, q)
    assert loss.tolist() == pytest.approx([(1 - p[0] ** q) / q, (1 - p[1] ** q) / q], rel=1e-12)
    loss.sum().backward()
    # d/dz (1 - p_y^q)/q = p_y^q (softmax - e_y): CE's gradient times p_y^q
    for i in range(2):
        expected = [p[i] ** q * (p[i] - 1), p[i] ** q * (1 - p[i])]
        assert logits.grad[i].tolist() == pytest.approx(expected, rel=1e-12)
    assert gce_weight(logits.detach(), y, q).tolist() == pytest.approx([p[0] ** q, p[1] ** q], rel=1e-12)
    # the majority-like example (fitted, p = 0.73) pulls harder than the one the branch gets wrong (p = 0.12)
    assert p[0] ** q > 3 * p[1] ** q


def test_lc_correction_on_a_2x2_case():
    # labels and bias-branch predictions of 4 examples: cells (0,0) (0,0) (0,1) (1,1)
    y = torch.tensor([0, 0, 0, 1])
    a_hat = torch.tensor([0, 0, 1, 1])
    p_bias = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.4, 0.6], [0.2, 0.8]], dtype=torch.float64)
    counts = batch_bias_matrix(p_bias, y, a_hat, "counts")
    assert counts.tolist() == [[0.5, 0.25], [0.0, 0.25]]
    cond = label_given_bias(counts)  # column a: p(y | a) = counts / (column sum + 1e-4)
    assert cond[:, 0].tolist() == pytest.approx([0.5 / 0.5001, 0.0])
    assert cond[:, 1].tolist() == pytest.approx([0.25 / 0.5001, 0.25 / 0.5001])
    shift = logit_correction(cond, a_hat)
    assert shift[0].tolist() == pytest.approx([math.log(0.5 / 0.5001 + 1e-4), math.log(1e-4)])
    assert shift[3].tolist() == pytest.approx([math.log(0.25 / 0.5001 + 1e-4)] * 2)
    # the authors' estimator: mean p_b(y_i | x_i) per cell (+1e-4 in the count)
    authors = batch_bias_matrix(p_bias, y, a_hat, "authors")
    assert authors.flatten().tolist() == pytest.approx([1.6 / 2.0001, 0.4 / 1.0001, 0.0, 0.8 / 1.0001])


def test_lc_loss_is_the_corrected_ce_plus_weighted_gce():
    method = make_method("lc", lambda_bias=0.5, q=0.7, ema=0.0, tau=1.0)
    method.matrix, method.step, method.num_classes = torch.zeros(2, 2, dtype=torch.float64), 0, 2
    logits = torch.tensor([[[0.2, -0.1], [1.0, 0.0]], [[0.0, 0.3], [0.5, 0.4]], [[0.1, 0.1], [-1.0, 1.0]]])
    y = torch.tensor([0, 1, 1])
    batch = Batch(torch.arange(3), y)
    a_hat = logits[:, 1].argmax(dim=1)  # [0, 0, 1]
    shift = logit_correction(label_given_bias(batch_bias_matrix(logits[:, 1].softmax(1).double(), y, a_hat, "counts")),
                             a_hat).float()  # fmt: skip
    expected = F.cross_entropy(logits[:, 0] + shift, y) + 0.5 * generalized_ce(logits[:, 1], y, 0.7).mean()
    assert float(method.loss(logits, batch)) == pytest.approx(float(expected), rel=1e-6)
    method.after_step(logits, batch, None)
    assert method.step == 1 and method.matrix.flatten().tolist() == pytest.approx([1 / 3, 0.0, 1 / 3, 1 / 3])


def test_group_mixup_partners_are_presumed_minority_examples_of_the_same_class():
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    a_hat = torch.tensor([0, 0, 1, 1, 1, 1])  # class 0 has one minority (position 2); class 1 none
    partner = mixup_partners(y, a_hat, torch.Generator().manual_seed(0))
    assert partner[:3].tolist() == [2, 2, 2]
    assert set(partner[3:].tolist()) <= {3, 4, 5}
    assert mixup_alpha(0, 100) == pytest.approx(0.5 * math.exp(-5))
    assert mixup_alpha(100, 100) == mixup_alpha(500, 100) == 0.5


# ---- uLA ---------------------------------------------------------------------------------------------------------
def test_ula_adjustment_by_hand():
    bias_logits = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 1])
    p = bias_logits.softmax(dim=1)
    # J[k, y] = mean_i p_b(k | x_i) [y_i = y]; p(y | b) = J[b, y] / sum_y J[b, y]
    J = torch.zeros(2, 2, dtype=torch.float64)
    for i in range(4):
        for k in range(2):
            J[k, y[i]] += p[i, k] / 4
    cond = J / J.sum(dim=1, keepdim=True)
    shift = ula_log_shift(bias_logits, y, 2, tau=1.0, eta=2.0)
    b = [0, 0, 1, 1]
    for i in range(4):
        assert shift[i].tolist() == pytest.approx((2.0 * torch.log(cond[b[i]] + 1e-6)).tolist(), rel=1e-12)


def test_ula_probe_stops_early_and_infers_label_by_proxy_groups(data64):
    w5, _ = fit_softmax_probe(data64.x[:50], data64.y[:50], 2, steps=5)
    w50, _ = fit_softmax_probe(data64.x[:50], data64.y[:50], 2, steps=50)
    assert 0 < float(w5.norm()) < float(w50.norm())  # fewer steps: a probe nearer its zero start
    res = fit(data64, make_method("ula", probe_steps=30), CFG)
    val = data64.indices(VAL)
    groups = res.val_inferred_groups
    assert groups is not None and groups.shape == (len(val),)
    assert torch.equal(groups // 2, data64.y[val])  # y * K + proxy prediction
    assert res.method.shift.shape == (len(data64.indices(TRAIN)), 2)


# ---- XRM + GroupDRO ----------------------------------------------------------------------------------------------
def test_xrm_groupdro_trains_on_the_groups_its_xrm_phase_infers(data64):
    res = fit(data64, "xrm-groupdro", CFG)
    xrm = res.phases["xrm"]
    x_train, y_train = data64.x[data64.indices(TRAIN)], data64.y[data64.indices(TRAIN)]
    cross = cross_mistake_groups(all_logits(xrm.model, x_train, 8192, "cpu")[:, :2], y_train)
    assert torch.equal(res.method.groups, cross)
    assert torch.equal(res.val_inferred_groups, xrm.val_inferred_groups)
    # the same XRM run alone (same config, seed) infers the same validation groups
    alone = fit(data64, "xrm", dataclasses.replace(CFG, selection="last"))
    assert torch.equal(alone.val_inferred_groups, xrm.val_inferred_groups)
    held = fit(data64, make_method("xrm-groupdro", train_groups="held-out"), CFG)
    expected = heldout_mistake_groups(held.phases["xrm"].outputs["heldout_logits"], y_train)
    assert torch.equal(held.method.groups, expected)
    assert held.method.num_groups == 4 and not held.method.needs_train_groups


def test_heldout_mistake_groups_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert heldout_mistake_groups(logits, torch.tensor([0, 0, 1, 1])).tolist() == [0, 1, 2, 3]


# ---- DFR ---------------------------------------------------------------------------------------------------------
def test_dfr_balanced_subset_and_halves():
    groups = torch.tensor([0] * 7 + [1] * 3 + [2] * 5 + [3] * 4)
    gen = torch.Generator().manual_seed(0)
    keep = balanced_subset(groups, gen)
    assert torch.bincount(groups[keep]).tolist() == [3, 3, 3, 3]
    assert len(set(keep.tolist())) == 12
    fit_half, tune_half = split_halves(19, gen)
    assert len(tune_half) == 9 and len(fit_half) == 10
    assert sorted(torch.cat([fit_half, tune_half]).tolist()) == list(range(19))


def test_l1_logistic_is_sparse_at_small_c_and_solves_the_liblinear_objective():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=gen, dtype=torch.float64)
    y = (x[:, 0] - 0.5 * x[:, 1] > 0).long()
    w, b = l1_logistic(x, y, 2, C=0.05, iters=5000, tol=1e-10)
    assert torch.equal(w[0], torch.zeros(6))  # class 0's row is the fixed zero of binary logistic regression
    assert (w[1, 2:] == 0).all() and w[1, 0] > 0 > w[1, 1]
    obj = lambda w_, b_: 0.05 * F.cross_entropy(x @ w_.t() + b_, y, reduction="sum") + w_.abs().sum()  # noqa: E731
    for delta in (1e-3, -1e-3):  # optimal: every small move of the free coordinates raises the objective
        for j in range(6):
            moved = w.clone()
            moved[1, j] += delta
            assert obj(moved, b) >= obj(w, b) - 1e-9


def test_dfr_sets_the_retrained_layer_and_uses_no_training_group(data64):
    no_train_attrs = dataclasses.replace(data64, a=torch.where(data64.split == TRAIN, -1, data64.a))
    res = fit(no_train_attrs, "dfr", dataclasses.replace(CFG, epochs=4))
    assert res.epochs_run == 1 and len(res.evaluations) == 1  # nothing trained by the loop
    m = res.method
    val = data64.indices(VAL)
    z = (data64.x[val] - m.mean) / m.std
    expected = z @ m.weight.t() + m.bias
    assert torch.allclose(res.predict_logits(data64.x[val]).double(), expected, atol=1e-9)
    assert m.C in (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01) and m.tuning[m.C] == max(m.tuning.values())
    # ERM's backbone is kept: the phase's model and DFR's differ in the last layer only
    assert res.phases["erm"].model.heads.linear.weight.shape == res.model.heads.linear.weight.shape
    again = fit(no_train_attrs, "dfr", dataclasses.replace(CFG, epochs=4))
    assert torch.equal(again.model.heads.linear.weight, res.model.heads.linear.weight)  # seeded


def test_dfr_refuses_data_without_validation_groups(data64):
    blind = dataclasses.replace(data64, a=torch.where(data64.split == VAL, -1, data64.a))
    with pytest.raises(ConfigError, match="'dfr' needs validation group labels"):
        fit(blind, "dfr", CFG)


# ---- every new method through fit, reproducibly -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["lc", "ula", "xrm-groupdro", "dfr"])
def test_new_methods_train_reproducibly(data64, name):
    hp = {"lc": {"mixup": True}}.get(name, {})
    a = fit(data64, make_method(name, **hp), CFG)
    b = fit(data64, make_method(name, **hp), CFG)
    assert a.selection_reports == b.selection_reports
    assert json.dumps(a.method.describe(), sort_keys=True, default=str) == json.dumps(
        b.method.describe(), sort_keys=True, default=str
    )
    assert a.evaluate(data64, "test")["avg_acc"] > 0.5


def test_lc_never_reads_training_groups(data64):
    blind = dataclasses.replace(data64, a=torch.where(data64.split == TRAIN, -1, data64.a))
    assert fit(blind, "lc", CFG).selection_reports == fit(data64, "lc", CFG).selection_reports


# ---- uLA's selection criterion -------------------------------------------------------------------------------------
def test_val_bias_unsup_is_the_mean_accuracy_over_inferred_groups():
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    inferred = torch.tensor([0, 0, 1, 2, 3, 3])
    pred = torch.tensor([[0, 1, 1, 1, 0, 1]])  # per group: 1/2, 0/1, 1/1, 1/2
    log = EvalLog.start(y, torch.zeros(6, dtype=torch.long), torch.tensor([0, 1]), torch.tensor([0, 0]), 2, 1, [0, 1])
    log.append(1, 1, pred[0], torch.tensor([0, 1]), inferred)
    crit = get_criterion("val_bias_unsup")
    assert crit.val_group_use == "inferred"
    assert crit.score(log, 0) == pytest.approx((0.5 + 0.0 + 1.0 + 0.5) / 4)
    assert crit.score_all(log) == [crit.score(log, 0)]
    assert get_criterion("val_gi_wga").score(log, 0) == 0.0


def test_ula_context_features_are_the_inputs_on_a_features_file(data64):
    from memaware.methods.ula import frozen_features

    ctx = TrainContext(data64, data64.indices(TRAIN), CFG, torch.Generator())
    assert torch.equal(frozen_features(ctx, data64.indices(VAL)), data64.x[data64.indices(VAL)].double())


# ---- through the command: train, sweep (vectorized), table with the paper's marks --------------------------------
def test_train_sweep_and_table_rows_with_their_marks(data64, tmp_path, capsys):
    from memaware.cli import main

    path = tmp_path / "d.npz"
    dataclasses.replace(data64, x=data64.x.float()).save_npz(path)
    out = tmp_path / "run"
    assert main(["train", "--data", str(path), "--method", "lc", "--lc-mixup", "true", "--epochs", "5",
                 "--out", str(out), "--quiet"]) == 0  # fmt: skip
    assert json.loads((out / "results.json").read_text())["hparams"]["mixup"] is True
    sweep = tmp_path / "sw"
    argv = ["sweep", "--data", str(path), "--methods", "erm,lc,ula,xrm-groupdro,dfr", "--n-hparams", "2"]
    assert main([*argv, "--seeds", "1", "--set", "epochs=3", "--vectorized", "--jobs", "1", "--out", str(sweep),
                 "--quiet"]) == 0  # fmt: skip
    done = sorted(str(p.parent.relative_to(sweep)) for p in sweep.rglob("results.json") if "comb" in str(p))
    assert [d for d in done if not d.startswith("xrm/")] == [
        f"{m}/comb{c}_seed0" for m in ("dfr", "erm", "lc", "ula", "xrm-groupdro") for c in (0, 1)
    ]
    rows = {}
    for selection in ("va_wga", "va_gi_wga", "val_bias_unsup"):
        capsys.readouterr()
        assert main(["table", "--sweep", str(sweep), "--selection", selection, "--no-plot"]) == 0
        text = capsys.readouterr().out
        rows[selection] = {line.split("|")[3].strip(): line.split("|")[1:3] for line in text.splitlines()
                           if line.count("|") > 4 and "Method" not in line and ":-" not in line}  # fmt: skip
    strip = lambda cells: [c.strip() for c in cells]  # noqa: E731
    assert strip(rows["va_wga"]["LC"]) == ["✗", "✓"] and strip(rows["va_gi_wga"]["LC"]) == ["✗", "~"]
    assert strip(rows["va_gi_wga"]["uLA"]) == ["✗", "~"] and strip(rows["val_bias_unsup"]["uLA"]) == ["✗", "~"]
    assert strip(rows["va_gi_wga"]["XRM+GroupDRO"]) == ["~", "~"]
    assert strip(rows["va_gi_wga"]["DFR"]) == ["✗", "✓"]  # DFR retrains on the true validation groups


# ---- the memorization audit --------------------------------------------------------------------------------------
def test_audit_scores_the_new_methods_and_linear_estimators_refuse_them(data64, tmp_path):
    from memaware.experiments.memorization import run_audit
    from memaware.memorization.estimate import estimate

    cfg = TrainConfig(epochs=20, lr=0.05, batch_size=0, selection="last")
    for name in ("ula", "xrm-groupdro", "lc"):
        scores = estimate(data64, name, "subsample", cfg, num_models=4)
        assert scores.method == name and scores.scores.shape == (len(data64.indices(TRAIN)),)
    with pytest.raises(ConfigError, match="for lc use subsample or trak"):
        run_audit(data64, ("erm", "lc"), "newton", TrainConfig(weight_decay=1e-2, selection="last"), tmp_path, "t")
    assert not list(tmp_path.iterdir())  # refused before anything was trained or written
