import dataclasses

import pytest

from memaware.data import make_setup21


@pytest.fixture(scope="session")
def small_noisy():
    """A small Setup 2.1 problem where noise is memorizable (d >> log n, gamma >> sigma sqrt(d/m))."""
    return make_setup21(n_train=400, n_val=400, n_test=400, noise_dim=800, sigma=0.5, seed=0)


@pytest.fixture(scope="session")
def data64():
    """A small Setup 2.1 problem (paper Sec. 2) in float64: both paths then agree to the last bits that matter."""
    data = make_setup21(n_train=160, n_val=160, n_test=200, noise_dim=60, sigma=0.5, rho_train=0.9, seed=3)
    return dataclasses.replace(data, x=data.x.double())
