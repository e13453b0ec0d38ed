"""Data valuation: how much each training item is worth to a model (Data Shapley family).

* :func:`knn_shapley`: exact and truncated KNN-Shapley (closed form, vectorised).
"""

from curation.value.knn_shapley import knn_shapley

__all__ = ["knn_shapley"]
