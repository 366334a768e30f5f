import pytest

from memaware.data import make_setup21


@pytest.fixture(scope="session")
def small_noisy():
    """A small Setup 2.1 problem where noise is memorizable (d >> log n, gamma >> sigma sqrt(d/m))."""
    return make_setup21(n_train=400, n_val=400, n_test=400, noise_dim=800, sigma=0.5, seed=0)
