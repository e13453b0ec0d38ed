"""Per-item quality scorers shared by the selectors (higher = better).

``build_scorer(spec)`` turns a recipe value into a scorer:

* ``length``: normalised text length;
* ``knn-agreement`` (or ``{name: knn-agreement, k: 10}``): label agreement with nearest neighbours;
* ``constant``: every item scores 0 (kMQ with it is kM-Random);
* ``influence`` (``{name: influence, l2: 1e-3}``): influence on the reference-set loss through
  a softmax-regression proxy (needs the recipe's ``reference:`` and labels);
* ``knn-shapley`` (``{name: knn-shapley, k: 5, epsilon: 0.1}``): KNN-Shapley value against the
  reference set (needs ``reference:`` and labels);
* ``{python: "module:function"}`` or ``"python:module:function"``: your own
  ``function(pool, indices) -> array`` of scores.
"""

from curation.score.base import QualityScorer, build_scorer
from curation.score.builtin import ConstantScorer, KnnAgreementScorer, LengthScorer, PythonScorer
from curation.score.reference import InfluenceScorer, KnnShapleyScorer

__all__ = ["ConstantScorer", "InfluenceScorer", "KnnAgreementScorer", "KnnShapleyScorer", "LengthScorer", "PythonScorer",
           "QualityScorer", "build_scorer"]
