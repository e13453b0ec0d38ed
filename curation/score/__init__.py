"""Per-item quality scorers shared by the selectors (higher = better).

``build_scorer(spec)`` turns a recipe value into a scorer:

* ``length``: normalised text length;
* ``knn-agreement`` (or ``{name: knn-agreement, k: 10}``): label agreement with nearest neighbours;
* ``constant``: every item scores 0 (kMQ with it is kM-Random);
* ``{python: "module:function"}`` or ``"python:module:function"``: your own
  ``function(pool, indices) -> array`` of scores.
"""

from curation.score.base import QualityScorer, build_scorer
from curation.score.builtin import ConstantScorer, KnnAgreementScorer, LengthScorer, PythonScorer

__all__ = ["ConstantScorer", "KnnAgreementScorer", "LengthScorer", "PythonScorer", "QualityScorer", "build_scorer"]
