import inspect
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import memaware.estimators as estimators
from memaware import make_setup21
from memaware.errors import ConfigError
from memaware.estimators import (
    TRAINING_PARAMS,
    ERMClassifier,
    GroupDROClassifier,
    JTTClassifier,
    MATClassifier,
    MemawareClassifier,
    XRMClassifier,
    estimator_for,
    method_hparams,
    training_defaults,
)
from memaware.methods import METHODS, HParam, Method, classifiers, register
from memaware.threads import use_one_intraop_thread


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Thousands of tiny trainings: one intra-op thread (memaware.threads; never switched back, by design)."""
    use_one_intraop_thread()


# Short full-batch Adam runs with a bias that still pass check_classifiers_train (> 0.83 training accuracy on scaled
# blobs). JTT: a 5-epoch identification model (after 1 epoch it flags most points); MAT: temperature 1 (at 0.1 the
# held-out model's shift explains these spurious-free blobs and f's own training accuracy sits at the 0.83 bar).
FAST = {"optimizer": "adam", "bias": True}
CHECKED = [
    ERMClassifier(epochs=20, lr=0.1, **FAST),
    XRMClassifier(epochs=30, lr=0.1, **FAST),
    JTTClassifier(epochs=30, lr=0.1, T=5, **FAST),
    MATClassifier(epochs=30, lr=0.1, temperature=1.0, **FAST),
]


@pytest.mark.filterwarnings("ignore:JTTClassifier. T=5")  # short on purpose: tested in test_estimator_protocol
@parametrize_with_checks(CHECKED)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _blobs(n=150, seed=0):
    x, y = make_blobs(n_samples=n, centers=3, random_state=seed)
    return x, y


def test_one_class_per_registered_classifier():
    for name in classifiers():
        cls = estimator_for(name)
        assert cls is estimator_for(name) and getattr(estimators, cls.__name__) is cls
        assert cls.__name__ in estimators.__all__
        params = inspect.signature(cls).parameters
        assert {k: p.default for k, p in params.items()} == {
            **method_hparams(METHODS[name]),
            **training_defaults(cls.method_class),
        }
        assert training_defaults(cls.method_class).keys() == TRAINING_PARAMS.keys()
        assert all(p.kind is p.KEYWORD_ONLY for p in params.values())
    assert set(inspect.signature(MATClassifier).parameters) >= {"temperature", "mode", "epochs", "lr", "seed"}
    assert set(inspect.signature(JTTClassifier).parameters) >= {"T", "lambda_up"}
    assert "heldout_logits" not in inspect.signature(MATClassifier).parameters
    with pytest.raises(TypeError, match="temperatur"):
        MATClassifier(temperatur=0.1)


def test_regression_and_unknown_methods_have_no_estimator():
    with pytest.raises(ConfigError, match="'mse' is a regression method"):
        estimator_for("mse")
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        estimator_for("nope")


def test_clone_round_trips():
    est = MATClassifier(temperature=0.05, mode="single-run", hidden=(8,), epochs=7, validation_fraction=0.2)
    copy = clone(est)
    assert copy is not est and copy.get_params() == est.get_params()
    generic = MemawareClassifier("groupdro", {"eta": 0.1}, epochs=3)
    assert clone(generic).get_params() == generic.get_params()
    by_class = MemawareClassifier(METHODS["mat"], {"temperature": 1.0}, epochs=30, lr=0.1, **FAST)
    x, y = _blobs()
    assert clone(by_class).fit(x, y).method_.temperature == 1.0
    with pytest.raises(ConfigError, match="method must be a registered name"):
        MemawareClassifier(by_class.fit(x, y).method_).fit(x, y)
    assert clone(est.set_params(temperature=0.5)).temperature == 0.5


def test_pipeline_and_cross_val_score():
    x, y = _blobs()
    pipe = make_pipeline(StandardScaler(), MATClassifier(epochs=30, lr=0.1, temperature=1.0, **FAST))
    scores = cross_val_score(pipe, x, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.8


def test_labels_probabilities_and_reproducibility():
    x, y = _blobs()
    labels = np.array(["ant", "bee", "cat"])[y]
    est = ERMClassifier(epochs=30, lr=0.1, batch_size=32, hidden=(8,), validation_fraction=0.2, seed=3, **FAST)
    proba = est.fit(x, labels).predict_proba(x)
    assert list(est.classes_) == ["ant", "bee", "cat"] and est.n_features_in_ == 2
    assert np.allclose(proba.sum(axis=1), 1.0) and est.score(x, labels) > 0.8
    assert (est.classes_[proba.argmax(axis=1)] == est.predict(x)).all()
    assert est.fit_result_.selection == "val_avg"  # no group labels: average validation accuracy
    again = clone(est).fit(x, labels).predict_proba(x)
    assert np.array_equal(proba, again)
    other = clone(est).set_params(seed=4).fit(x, labels).predict_proba(x)
    assert not np.array_equal(proba, other)
    restored = pickle.loads(pickle.dumps(est))
    assert np.array_equal(restored.predict_proba(x), proba)


def test_group_methods_need_a():
    x, y = _blobs()
    for est in (GroupDROClassifier(epochs=2), MemawareClassifier("groupdro", epochs=2)):
        with pytest.raises(ConfigError, match=r"method 'groupdro' needs the training group attributes.*a=") as e:
            est.fit(x, y)
        assert "\n" not in str(e.value)


def test_groupdro_with_a_trains():
    """No noise (nothing to memorize), 30 epochs: ERM still follows the large spurious feature, GroupDRO, which
    sees the groups, upweights the minority groups (y=0,a=1) and (y=1,a=0) and does not."""
    data = make_setup21(n_train=400, n_val=10, n_test=400, noise_dim=0, sigma=0.0, seed=0)
    x, y, a = _train_split(data)
    x_test, y_test, a_test = _train_split(data, split=2)
    dro = GroupDROClassifier(eta=0.1, epochs=30, lr=0.1, validation_fraction=0.25, **FAST).fit(x, y, a=a)
    erm = ERMClassifier(epochs=30, lr=0.1, **FAST).fit(x, y)
    assert dro.fit_result_.selection == "val_wga"  # every group is in the stratified validation part
    q = dro.method_.q
    assert min(q[1], q[2]) > max(q[0], q[3])
    assert _worst_group(dro, x_test, y_test, a_test) > 0.9 > 0.5 > _worst_group(erm, x_test, y_test, a_test)
    with pytest.raises(ValueError, match="inconsistent numbers of samples: \\[400, 3\\]"):
        dro.fit(x, y, a=a[:3])


class ScaledCE(Method):
    """Cross-entropy of scaled logits plus a margin: a user's own method (registered by the test below only)."""

    name = "test-scaled-ce"
    hparams = {"scale": HParam(2.0, "logit scale", low=0.0)}

    def __init__(self, margin: float = 0.0, **hparams):
        super().__init__(**hparams)
        self.margin = margin

    def loss(self, logits, batch):
        return self.ce(logits[:, 0] * self.scale + self.margin, batch)


def test_a_user_method_gets_an_estimator():
    register(ScaledCE)
    try:
        cls = estimator_for("test-scaled-ce")
        assert cls.__name__ == "ScaledCEClassifier" and estimators.ScaledCEClassifier is cls
        params = inspect.signature(cls).parameters
        assert params["scale"].default == 2.0 and params["margin"].default == 0.0  # declared and plain keywords
        x, y = _blobs()
        est = cls(scale=0.5, margin=0.1, epochs=30, lr=0.1, **FAST).fit(x, y)
        assert (est.method_.scale, est.method_.margin) == (0.5, 0.1) and est.score(x, y) > 0.8
        assert np.array_equal(pickle.loads(pickle.dumps(est)).predict(x), est.predict(x))
    finally:
        METHODS.pop("test-scaled-ce")


def _train_split(data, split=0):
    idx = (data.split == split).numpy()
    return data.x.numpy()[idx], data.y.numpy()[idx], data.a.numpy()[idx]


def _worst_group(est, x, y, a):
    correct = est.predict(x) == y
    return min(correct[(y == gy) & (a == ga)].mean() for gy in (0, 1) for ga in (0, 1))


def test_mat_beats_erm_on_worst_group(small_noisy):
    """Setup 2.1 with memorizable noise (tests/test_train.py's settings): ERM memorizes its minority examples and
    fails on held-out ones; MAT learns the core feature. No group labels are used for training or selection."""
    x, y, _ = _train_split(small_noisy)
    x_test, y_test, a_test = _train_split(small_noisy, split=2)
    settings = {"epochs": 400, "lr": 3e-2, "optimizer": "sgd", "bias": False}
    erm = ERMClassifier(**settings).fit(x, y)
    mat = MATClassifier(temperature=0.1, **settings).fit(x, y)
    assert erm.score(x, y) == 1.0  # ERM fits every training point, the minority by memorizing it
    erm_wga, mat_wga = _worst_group(erm, x_test, y_test, a_test), _worst_group(mat, x_test, y_test, a_test)
    assert erm_wga < 0.4 and mat_wga > 0.8


def test_bad_settings_raise_config_errors():
    x, y = _blobs()
    with pytest.raises(ConfigError, match="selection 'val_avg' needs a validation split"):
        ERMClassifier(selection="val_avg", epochs=2).fit(x, y)
    with pytest.raises(ConfigError, match="validation_fraction must be in"):
        ERMClassifier(validation_fraction=1.0, epochs=2).fit(x, y)
    with pytest.raises(ConfigError, match="temperature"):
        MATClassifier(temperature=-1.0, epochs=2).fit(x, y)
    with pytest.raises(ConfigError, match="lr must be > 0"):
        ERMClassifier(lr=0.0).fit(x, y)
