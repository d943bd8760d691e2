"""MIG and FactorVAE score: perfect latents score high, random latents near 0 / chance."""

import math

import numpy as np
import pytest
import torch

from vae_lightning.data.sprites import FACTOR_SIZES
from vae_lightning.evaluation.disentanglement import (
    discrete_mutual_info,
    factor_vae_score,
    histogram_discretize,
    mig,
    sample_factors,
)

SMALL_SIZES = (3, 6, 10, 16, 20)  # every factor fits in 20 bins


def noisy(factors, scale=1e-3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return factors.float() + scale * torch.randn(factors.shape, generator=g)


def test_discrete_mutual_information_of_a_variable_with_itself_is_its_entropy():
    a = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    assert discrete_mutual_info(a, a).item() == pytest.approx(torch.tensor(4.0).log().item())
    assert discrete_mutual_info(a, torch.tensor([0, 1] * 4)).item() == pytest.approx(0.0, abs=1e-12)


def test_histogram_discretization_uses_equal_width_bins_between_min_and_max():
    codes = torch.tensor([[0.0], [0.49], [0.5], [9.99], [10.0]])
    assert histogram_discretize(codes, 20).squeeze(1).tolist() == [0, 0, 1, 19, 19]


def test_mig_of_latents_equal_to_factors_is_close_to_one():
    factors = sample_factors(10_000, SMALL_SIZES, torch.Generator().manual_seed(0))
    assert mig(noisy(factors), factors) > 0.95
    # a permutation and scaling of the dimensions does not matter
    assert mig(noisy(factors)[:, [4, 2, 0, 1, 3]] * torch.tensor([3.0, -1, 0.5, 2, 1]), factors) > 0.95


def test_mig_of_the_sprites_factors_is_about_0_9_under_the_20_bin_protocol():
    factors = sample_factors(10_000, FACTOR_SIZES, torch.Generator().manual_seed(0))
    assert mig(noisy(factors), factors) == pytest.approx(0.90, abs=0.03)


def test_mig_of_random_latents_is_near_zero():
    factors = sample_factors(10_000, SMALL_SIZES, torch.Generator().manual_seed(0))
    assert mig(torch.randn(10_000, 8, generator=torch.Generator().manual_seed(2)), factors) < 0.02


def test_mig_of_a_code_that_mixes_two_factors_into_one_dimension_is_low():
    factors = sample_factors(10_000, (4, 4), torch.Generator().manual_seed(0))
    mixed = noisy(torch.stack([factors[:, 0] * 4 + factors[:, 1], factors[:, 0] * 4 + factors[:, 1]], 1))
    assert mig(mixed, factors) < 0.1  # two identical dimensions: the gap is zero


def test_factor_vae_score_of_perfect_latents_is_one_and_of_random_latents_near_chance():
    perfect = lambda f: noisy(f, seed=int(f.sum()))  # noqa: E731
    assert factor_vae_score(perfect, FACTOR_SIZES, num_train=300, num_eval=300, num_variance=2000) == 1.0
    g = torch.Generator().manual_seed(3)
    random = lambda f: torch.randn(len(f), 10, generator=g)  # noqa: E731
    score = factor_vae_score(random, FACTOR_SIZES, num_train=300, num_eval=300, num_variance=2000)
    assert 0.1 < score < 0.35  # chance is 1/5


def test_factor_vae_score_prunes_collapsed_dimensions():
    """A dimension with std < 0.05 never gets a vote; all collapsed scores 0."""

    def represent(f):
        codes = noisy(f)
        codes[:, 0] = 0.01 * torch.randn(len(f))  # factor 0's dimension collapsed
        return codes

    score = factor_vae_score(represent, FACTOR_SIZES, num_train=300, num_eval=300, num_variance=2000)
    assert 0.7 < score < 0.9  # votes for the collapsed factor go astray: about 4/5 right
    assert factor_vae_score(lambda f: torch.zeros(len(f), 3), FACTOR_SIZES, num_train=10, num_eval=10) == 0.0


def numpy_binned(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """disentanglement_lib's _histogram_discretize: np.digitize on numpy.histogram's left edges."""
    return np.stack([np.digitize(c, np.histogram(c, num_bins)[1][:-1]) - 1 for c in codes.T], 1)


def reference_mig(codes: np.ndarray, factors: np.ndarray) -> float:
    """MIG from numpy's histogram and scikit-learn's mutual information, factors that vary only."""
    from sklearn.metrics import mutual_info_score

    binned = numpy_binned(codes)
    gaps = []
    for k in range(factors.shape[1]):
        entropy = mutual_info_score(factors[:, k], factors[:, k])
        if len(np.unique(factors[:, k])) < 2:
            continue
        mi = sorted(mutual_info_score(binned[:, u], factors[:, k]) for u in range(codes.shape[1]))
        gaps.append((mi[-1] - mi[-2]) / entropy)
    return float(np.mean(gaps))


def test_mig_leaves_out_a_factor_that_does_not_vary():
    factors = sample_factors(5000, SMALL_SIZES, torch.Generator().manual_seed(0))
    factors[:, 2] = 4  # a factor held constant: entropy 0
    codes = noisy(factors, scale=0.3)
    value = mig(codes, factors)
    assert math.isfinite(value)
    assert value == pytest.approx(reference_mig(codes.double().numpy(), factors.numpy()), abs=1e-9)
    assert mig(codes, torch.zeros_like(factors)) == 0.0  # nothing varies: nothing to capture


@pytest.mark.parametrize(
    "column",
    [
        np.full(50, 0.3),  # a constant dimension: numpy widens the range to +-0.5
        0.3 + np.linspace(0, 5e-13, 50),  # a range of 5e-13: still 20 bins
        np.random.default_rng(0).normal(size=1000),
        np.random.default_rng(1).normal(size=1000) * 1e-9 + 7.0,
        np.array([0.0, 0.49, 0.5, 9.99, 10.0, 0.1 * 3, 7.3]),  # values on and near the edges
    ],
)
def test_histogram_discretization_matches_numpy_histogram(column):
    codes = torch.tensor(np.stack([column, -column], 1))
    expected = numpy_binned(codes.numpy())
    assert histogram_discretize(codes, 20).numpy().tolist() == expected.tolist()
