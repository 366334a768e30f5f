"""The scikit-learn estimators train what ``memaware train`` / ``memaware.fit`` train, with their defaults.

On the paper's Setup 2.1 (sigma = 0.5, full size) MAT with its estimator defaults must show the MAT effect and land
where ``fit`` lands under the same protocol; every registered method's estimator must give what ``fit`` gives with
``TrainConfig()``'s settings; a choice that cannot work is refused (or warned of) before training.
"""

import warnings

import pytest

from memaware import TrainConfig, fit, make_setup21
from memaware.errors import ConfigError
from memaware.estimator_protocol import JTT_MIN_STEPS, TRAINING_DEFAULTS
from memaware.estimators import (
    DFRClassifier,
    ERMClassifier,
    GroupDROClassifier,
    JTTClassifier,
    MATClassifier,
    XRMClassifier,
    estimator_for,
)
from memaware.methods import METHODS, classifiers
from memaware.threads import use_one_intraop_thread

GROUPS = ((0, 0), (0, 1), (1, 0), (1, 1))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Latency-bound small trainings on a shared 2-core machine: one intra-op thread (memaware.threads)."""
    use_one_intraop_thread()


@pytest.fixture(scope="module")
def setup21():
    """The paper's Setup 2.1 at its default size (1000 per split, d = 1800), memorizable noise sigma = 0.5."""
    return make_setup21(sigma=0.5, seed=0)


def rows(data, split):
    keep = (data.split == split).numpy()
    return data.x.numpy()[keep], data.y.numpy()[keep], data.a.numpy()[keep]


def worst_group(pred, y, a):
    return min(float((pred == y)[(y == gy) & (a == ga)].mean()) for gy, ga in GROUPS)


def heldout_wga(est, data):
    x, y, a = rows(data, 2)
    return worst_group(est.predict(x), y, a)


def fit_wga(result, data):
    return result.evaluate(data, "test")["worst_group_acc"]


@pytest.fixture(scope="module")
def erm_default(setup21):
    x, y, _ = rows(setup21, 0)
    return ERMClassifier().fit(x, y)


def test_defaults_are_memaware_trains():
    """One source of truth: the estimators' training defaults are TrainConfig's (memaware train --data's)."""
    cli = TrainConfig()
    for key in ("epochs", "lr", "optimizer", "momentum", "weight_decay", "batch_size", "init", "seed", "device"):
        assert TRAINING_DEFAULTS[key] == getattr(cli, key), key
    assert TRAINING_DEFAULTS["bias"] is False and TRAINING_DEFAULTS["validation_fraction"] == 0.0
    params = MATClassifier().get_params()
    assert {k: params[k] for k in TRAINING_DEFAULTS} == TRAINING_DEFAULTS
    assert DFRClassifier().validation_fraction > 0  # DFR cannot train without a held-out part


def test_mat_defaults_beat_erm_and_match_fit(setup21, erm_default):
    """MATClassifier() on the training rows: the MAT effect, and fit's number under the same protocol."""
    x, y, _ = rows(setup21, 0)
    mat = MATClassifier().fit(x, y)
    assert mat.fit_result_.selection == "last" and mat.fit_result_.selected_epoch == TrainConfig().epochs
    erm_wga, mat_wga = heldout_wga(erm_default, setup21), heldout_wga(mat, setup21)
    assert erm_default.score(x, y) == 1.0  # ERM fits every training point, its minority by memorizing it
    assert mat_wga - erm_wga >= 0.30, (erm_wga, mat_wga)
    same_protocol = fit(setup21, "mat", TrainConfig(selection="last"))
    assert abs(mat_wga - fit_wga(same_protocol, setup21)) <= 0.05


def test_mat_defaults_land_near_memaware_train(setup21):
    """memaware train --method mat's protocol (TrainConfig(): its checkpoint chosen on the group-balanced validation
    split, which an estimator given only training rows does not have) against MATClassifier()'s last epoch."""
    x, y, _ = rows(setup21, 0)
    cli = fit(setup21, "mat", TrainConfig())
    assert cli.selection == "val_wga"
    assert abs(heldout_wga(MATClassifier().fit(x, y), setup21) - fit_wga(cli, setup21)) <= 0.05


def test_groupdro_with_groups_beats_erm(setup21, erm_default):
    x, y, a = rows(setup21, 0)
    dro = GroupDROClassifier().fit(x, y, a=a)
    dro_wga = heldout_wga(dro, setup21)
    assert dro_wga - heldout_wga(erm_default, setup21) >= 0.30
    assert abs(dro_wga - fit_wga(fit(setup21, "groupdro", TrainConfig(selection="last")), setup21)) <= 0.05


def test_jtt_with_enough_identification_steps_beats_erm(setup21, erm_default):
    """JTT helps when its identification ERM has learned the shortcut and not yet memorized (T = 50 full-batch
    epochs); its declared default T = 1 is one full-batch step, which the estimator warns about."""
    x, y, _ = rows(setup21, 0)
    jtt = JTTClassifier(T=50).fit(x, y)
    jtt_wga = heldout_wga(jtt, setup21)
    assert jtt_wga - heldout_wga(erm_default, setup21) >= 0.30
    assert abs(jtt_wga - fit_wga(fit(setup21, "jtt", TrainConfig(selection="last"), T=50), setup21)) <= 0.05
    with pytest.warns(UserWarning, match=f"T=1 full-batch epoch.*set T >= {JTT_MIN_STEPS}"):
        JTTClassifier(epochs=2).fit(x[:100], y[:100])


@pytest.fixture(scope="module")
def small():
    return make_setup21(n_train=200, n_val=200, n_test=200, noise_dim=200, sigma=0.5, seed=1)


@pytest.mark.filterwarnings("ignore:JTTClassifier. T=1")  # the declared default T, warned of: tested above
@pytest.mark.parametrize("name", [n for n in classifiers() if not METHODS[n].needs_val_groups])
def test_every_estimator_is_fit_with_the_same_settings(name, small):
    """Each estimator with its defaults (fewer epochs, for time) predicts what fit predicts with TrainConfig()'s
    settings and the method's declared defaults on the same training rows."""
    x, y, a = rows(small, 0)
    uses_a = METHODS[name].needs_train_groups
    est = estimator_for(name)(epochs=100).fit(x, y, a=a if uses_a else None)
    ref = fit(small, name, TrainConfig(epochs=100, selection="last"))
    x_test = rows(small, 2)[0]
    agree = float((est.predict(x_test) == ref.predict_logits(small.x[small.split == 2]).argmax(1).numpy()).mean())
    assert agree >= 0.99, (name, agree)


def test_dfr_defaults_hold_out_and_train_on_groups(small):
    x, y, a = rows(small, 0)
    dfr = DFRClassifier(epochs=100).fit(x, y, a=a)
    assert dfr.fit_result_.selection == "val_wga" and 0 < dfr.method_.C
    erm = ERMClassifier(epochs=100).fit(x, y)
    assert heldout_wga(dfr, small) > heldout_wga(erm, small)
    with pytest.raises(ConfigError, match=r"method 'dfr' trains on held-out group labels.*a=\.\.\.") as err:
        DFRClassifier(epochs=2).fit(x, y)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="set validation_fraction > 0"):
        DFRClassifier(epochs=2, validation_fraction=0.0).fit(x, y, a=a)


def test_selection_that_cannot_be_computed_is_refused(small):
    x, y, a = rows(small, 0)
    with pytest.raises(ConfigError, match=r"selection='val_wga' needs the group of every validation example"):
        ERMClassifier(epochs=2, validation_fraction=0.2, selection="val_wga").fit(x, y)
    unknown = a.copy()
    unknown[::2] = -1
    with pytest.raises(ConfigError, match=r"selection='val_wga'.*\(no -1\)"):
        ERMClassifier(epochs=2, validation_fraction=0.2, selection="val_wga").fit(x, y, a=unknown)
    with pytest.raises(ConfigError, match=r"selection='val_gi_wga'.*method 'erm' infers none"):
        ERMClassifier(epochs=2, validation_fraction=0.2, selection="val_gi_wga").fit(x, y, a=a)
    # what 'auto' resolves to, by what the estimator was given
    assert ERMClassifier(epochs=2, validation_fraction=0.2).fit(x, y, a=a).fit_result_.selection == "val_wga"
    assert XRMClassifier(epochs=2, validation_fraction=0.2).fit(x, y).fit_result_.selection == "val_gi_wga"
    assert ERMClassifier(epochs=2, validation_fraction=0.2).fit(x, y).fit_result_.selection == "val_avg"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # JTT with enough identification steps: no warning
        JTTClassifier(epochs=2, T=JTT_MIN_STEPS).fit(x, y)
