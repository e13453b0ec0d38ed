"""Data valuation: how much each training item is worth to a model (the Data Shapley family).

Utility, sampler and method are kept apart (as in pyDVL): a :class:`Utility` says what a
subset of the training set is worth; the methods decide which subsets to evaluate and how to
average their marginal contributions into a :class:`ValuationResult` (values, standard errors,
sample counts; results of partial runs merge exactly).

* :func:`knn_shapley`: exact and truncated KNN-Shapley (closed form, vectorised; millions of items);
* :func:`tmc_shapley`: truncated Monte Carlo Shapley (Ghorbani & Zou 2019), resumable, groups;
* :func:`g_shapley`: gradient Shapley for logistic regression (one SGD epoch per permutation);
* :func:`loo`, :func:`beta_shapley` (Kwon & Zou 2022), :func:`banzhaf_msr` (Wang & Jia 2023);
* :func:`exact_semivalue`: enumeration, for tests and tiny games.
"""

from curation.value.gshapley import g_shapley
from curation.value.knn_shapley import knn_shapley
from curation.value.result import ValuationResult
from curation.value.semivalues import (
    banzhaf_msr,
    banzhaf_weight,
    beta_shapley,
    beta_weights,
    exact_semivalue,
    loo,
    shapley_weight,
    tmc_shapley,
)
from curation.value.utility import GameUtility, GroupUtility, ModelUtility, Utility

__all__ = [
    "GameUtility", "GroupUtility", "ModelUtility", "Utility", "ValuationResult", "banzhaf_msr", "banzhaf_weight",
    "beta_shapley", "beta_weights", "exact_semivalue", "g_shapley", "knn_shapley", "loo", "shapley_weight",
    "tmc_shapley",
]
