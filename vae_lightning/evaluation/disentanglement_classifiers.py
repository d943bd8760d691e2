"""The metrics of disentanglement_lib's set (Locatello et al. 2019) that fit a classifier to the
codes (DCI, SAP, explicitness, the BetaVAE score), and modularity, explicitness' companion;
MIG and the FactorVAE score are in ``evaluation.disentanglement``. Codes are mean representations
(N, D), factors are factor indices (N, K), long; each classifier is trained on one draw and
scored on another.

- **DCI** (Eastwood & Williams 2018): per factor a gradient-boosted tree classifier on the codes;
  its feature importances give R (D, K). ``model="gbt"``: scikit-learn's
  GradientBoostingClassifier, as disentanglement_lib; ``"hist"``: its histogram-based
  HistGradientBoostingClassifier (the same boosting rounds of depth-3 trees on 255-bin features,
  far cheaper), with R from the loss reductions (gains) of each feature's splits, as
  GradientBoostingClassifier's importances sum the impurity decreases.
  Disentanglement: Σ_d ρ_d (1 − H_K(R_d· / Σ_k R_dk)),
  ρ_d = Σ_k R_dk / Σ R; completeness: the same with the roles of codes and factors swapped
  (H_D over each column, weighted by its share, which is 1/K when every column sums to 1);
  informativeness: the classifiers' mean test accuracy.
- **SAP** (Kumar et al. 2018): S (D, K) = test accuracy of a linear SVM on one code dimension
  for one factor; the mean over factors of the gap between the two best dimensions.
- **Modularity** (Ridgeway & Mozer 2018): from the mutual information m (D, K) of the 20-bin
  histograms of the codes and the factors, per dimension 1 − Σ_k (m_k − t_k)² / (θ² (K − 1)),
  θ = max_k m_k, t = θ at the argmax and 0 elsewhere; averaged over dimensions (0 for a
  dimension with no information).
- **Explicitness** (Ridgeway & Mozer 2018): per factor a one-vs-rest logistic regression on the
  standardized codes; the mean ROC AUC over the factor's values on the test draw, averaged.
- **BetaVAE score** (Higgins et al. 2017): a point is (k, mean over a batch of pairs sharing
  factor k of |z₁ − z₂|); the accuracy of a logistic regression predicting k.

scikit-learn is imported inside the functions, so importing this module (and ``vae --help``)
stays cheap.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from vae_lightning.errors import UserError
from vae_lightning.evaluation.disentanglement import discrete_mutual_info, histogram_discretize, sample_factors
from vae_lightning.runtime import compat

Represent = Callable[[Tensor], Tensor]  # factor indices (N, K) -> mean representations (N, D)
EPS = 1e-11  # disentanglement_lib's offset: an all-zero row or column has entropy 1, not NaN


def _normalized_entropy(p: np.ndarray, axis: int) -> np.ndarray:
    """Entropy of p's slices along ``axis`` (normalized to sum to 1), in base p.shape[axis]."""
    n = p.shape[axis]
    if n == 1:
        return np.zeros(p.shape[1 - axis])  # one outcome: nothing to be uncertain about
    q = (p + EPS) / (p + EPS).sum(axis, keepdims=True)
    return -(q * np.log(q)).sum(axis) / math.log(n)


def dci_scores(importance: np.ndarray) -> tuple[float, float]:
    """(disentanglement, completeness) of an importance matrix R (D codes, K factors), R ≥ 0."""
    importance = np.abs(np.asarray(importance, dtype=np.float64))
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    code_share = weights.sum(1) / weights.sum()  # (D,)
    factor_share = weights.sum(0) / weights.sum()  # (K,)
    disentanglement = float(((1 - _normalized_entropy(importance, 1)) * code_share).sum())
    completeness = float(((1 - _normalized_entropy(importance, 0)) * factor_share).sum())
    return disentanglement, completeness


def _quiet_fit(model, x: np.ndarray, y: np.ndarray):
    """model.fit(x, y) without scikit-learn's ConvergenceWarning: the protocol fixes the
    iteration budget, and a warning per fit would bury the test table."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


DCI_MODELS = ("gbt", "hist")


def _classifier(model: str, trees: int, seed: int):
    from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier

    if model == "gbt":
        return GradientBoostingClassifier(n_estimators=trees, random_state=seed)
    # GradientBoostingClassifier's shape (depth 3, learning rate 0.1, no early stop), on binned features
    return HistGradientBoostingClassifier(max_iter=trees, max_depth=3, early_stopping=False, random_state=seed)


def _importances(model, num_features: int) -> np.ndarray:
    """Feature importances (num_features,), summing to 1 (all 0 for a model without a split)."""
    if hasattr(model, "feature_importances_"):
        return np.abs(model.feature_importances_)
    gains = np.zeros(num_features)
    for nodes in compat.hist_gradient_boosting_splits(model):
        np.add.at(gains, nodes["feature_idx"], nodes["gain"])
    return gains / gains.sum() if gains.sum() > 0 else gains


def dci(
    train_codes: Tensor,
    train_factors: Tensor,
    test_codes: Tensor,
    test_factors: Tensor,
    seed: int = 0,
    trees: int = 100,
    model: str = "gbt",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """DCI with one boosted-tree classifier per factor (``model``: "gbt", scikit-learn's
    GradientBoostingClassifier with its defaults, as disentanglement_lib; "hist", its
    HistGradientBoostingClassifier; ``trees``: boosting rounds, of one tree per class):
    {"disentanglement", "completeness", "informativeness"}, each in [0, 1]. ``progress(done,
    total)`` is called after each factor's fit."""
    if model not in DCI_MODELS:
        raise UserError(f"--disentanglement.dci_model must be one of {', '.join(DCI_MODELS)}, got {model!r}.")
    x, x_test = train_codes.double().numpy(), test_codes.double().numpy()
    num_factors = train_factors.shape[1]

    def fit(k: int) -> tuple[np.ndarray, float]:
        y, y_test = train_factors[:, k].numpy(), test_factors[:, k].numpy()
        fitted = _classifier(model, trees, seed).fit(x, y)
        return _importances(fitted, x.shape[1]), float((fitted.predict(x_test) == y_test).mean())

    results = (fit(k) for k in range(num_factors))
    importance = np.zeros((x.shape[1], num_factors))
    accuracy = []
    for k, (importances, acc) in enumerate(results):
        importance[:, k] = importances
        accuracy.append(acc)
        if progress is not None:
            progress(k + 1, num_factors)
    disentanglement, completeness = dci_scores(importance)
    return {
        "disentanglement": disentanglement,
        "completeness": completeness,
        "informativeness": float(np.mean(accuracy)),
    }


def sap_matrix(
    train_codes: Tensor, train_factors: Tensor, test_codes: Tensor, test_factors: Tensor, seed: int = 0
) -> np.ndarray:
    """S (D, K): test accuracy of LinearSVC(C=0.01, class_weight="balanced") on code u alone for
    factor k. Solved in the primal (``dual=False``): the same problem as disentanglement_lib's
    dual solver, which converges slowly on one feature and many points."""
    from sklearn.svm import LinearSVC

    scores = np.zeros((train_codes.shape[1], train_factors.shape[1]))
    for u in range(train_codes.shape[1]):
        x, x_test = train_codes[:, u : u + 1].double().numpy(), test_codes[:, u : u + 1].double().numpy()
        for k in range(train_factors.shape[1]):
            svm = LinearSVC(C=0.01, class_weight="balanced", dual=False, random_state=seed)
            svm = _quiet_fit(svm, x, train_factors[:, k].numpy())
            scores[u, k] = (svm.predict(x_test) == test_factors[:, k].numpy()).mean()
    return scores


def sap(train_codes: Tensor, train_factors: Tensor, test_codes: Tensor, test_factors: Tensor, seed: int = 0) -> float:
    """SAP score: mean over factors of (best − second best) code dimension's accuracy; 0 with one dimension."""
    scores = np.sort(sap_matrix(train_codes, train_factors, test_codes, test_factors, seed), axis=0)
    if len(scores) < 2:
        return 0.0
    return float((scores[-1] - scores[-2]).mean())


def mutual_info_matrix(codes: Tensor, factors: Tensor, num_bins: int = 20) -> Tensor:
    """I(binned z_u; v_k) in nats, (D, K), of codes (N, D) in ``num_bins`` equal-width bins."""
    binned = histogram_discretize(codes, num_bins)
    return torch.tensor(
        [
            [float(discrete_mutual_info(binned[:, u], factors[:, k])) for k in range(factors.shape[1])]
            for u in range(codes.shape[1])
        ],
        dtype=torch.float64,
    )


def modularity_from_mi(mi: Tensor) -> float:
    """Mean over code dimensions of 1 − (Σ_k m_k² − θ²) / (θ² (K − 1)), θ = max_k m_k; 0 where θ = 0."""
    squared = mi.double().square()
    top = squared.max(1).values
    if mi.shape[1] == 1:
        return float((top > 0).double().mean())  # one factor: every informative dimension is modular
    per_code = 1 - (squared.sum(1) - top) / (top * (mi.shape[1] - 1)).clamp(min=1e-300)
    return float(torch.where(top > 0, per_code, torch.zeros_like(per_code)).mean())


def modularity(codes: Tensor, factors: Tensor, num_bins: int = 20) -> float:
    """Modularity (Ridgeway & Mozer 2018) of codes (N, D) for factor indices (N, K), in [0, 1]."""
    return modularity_from_mi(mutual_info_matrix(codes, factors, num_bins))


def _auc_per_value(probs: np.ndarray, classes: np.ndarray, y_test: np.ndarray) -> list[float]:
    """ROC AUC of each class column on the test labels, for the classes the test draw has both ways."""
    from sklearn.metrics import roc_auc_score

    present = [(i, c) for i, c in enumerate(classes) if 0 < (y_test == c).sum() < len(y_test)]
    return [float(roc_auc_score(y_test == c, probs[:, i])) for i, c in present]


def explicitness(train_codes: Tensor, train_factors: Tensor, test_codes: Tensor, test_factors: Tensor) -> float:
    """Explicitness: mean over factors of the mean one-vs-rest ROC AUC of a logistic regression
    (C = 1, liblinear: scikit-learn's default when disentanglement_lib was written) on codes
    standardized with the train draw's mean and std."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    mean, std = train_codes.double().mean(0), train_codes.double().std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a collapsed dimension stays 0, not NaN
    x, x_test = ((train_codes - mean) / std).numpy(), ((test_codes - mean) / std).numpy()
    per_factor = []
    for k in range(train_factors.shape[1]):
        y, y_test = train_factors[:, k].numpy(), test_factors[:, k].numpy()
        if len(np.unique(y)) < 2:
            continue  # a factor that does not vary in the draw has nothing to explain
        clf = _quiet_fit(OneVsRestClassifier(LogisticRegression(solver="liblinear")), x, y)
        per_factor.append(float(np.mean(_auc_per_value(clf.predict_proba(x_test), clf.classes_, y_test))))
    return float(np.mean(per_factor))


def beta_vae_points(
    represent: Represent, factor_sizes: Sequence[int], num_points: int, batch_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``num_points`` BetaVAE training points: features (N, D), the mean over ``batch_size`` pairs
    sharing factor k of |z₁ − z₂|, and labels k (N,)."""
    labels = torch.randint(len(factor_sizes), (num_points,), generator=generator)
    first = sample_factors(num_points * batch_size, factor_sizes, generator)
    second = sample_factors(num_points * batch_size, factor_sizes, generator)
    fixed = labels.repeat_interleave(batch_size)
    rows = torch.arange(len(first))
    second[rows, fixed] = first[rows, fixed]
    codes = represent(torch.cat([first, second])).double()  # both halves of every pair in one pass
    diff = (codes[: len(first)] - codes[len(first) :]).abs()
    return diff.view(num_points, batch_size, -1).mean(1), labels


def beta_vae_score(
    represent: Represent,
    factor_sizes: Sequence[int],
    num_train: int = 1000,
    num_eval: int = 500,
    batch_size: int = 64,
    seed: int = 0,
) -> float:
    """BetaVAE score (Higgins et al. 2017): eval accuracy of a logistic regression (scikit-learn
    defaults, max_iter 1000) from the features of ``num_train`` points to their fixed factor."""
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(seed)
    x, y = beta_vae_points(represent, factor_sizes, num_train, batch_size, g)
    x_eval, y_eval = beta_vae_points(represent, factor_sizes, num_eval, batch_size, g)
    if len(y.unique()) < 2:  # every training point fixed the same factor (tiny num_train)
        return float((y_eval == y[0]).double().mean())
    model = _quiet_fit(LogisticRegression(max_iter=1000), x.numpy(), y.numpy())
    return float((model.predict(x_eval.numpy()) == y_eval.numpy()).mean())
