"""Selection methods. ``build_selector(method, **params)`` makes one from recipe keys."""

from curation.select.base import Selector, build_selector
from curation.select.chain import ChainSelector
from curation.select.group_adaptive import GroupAdaptiveSelector
from curation.select.kmq import IterativeKMQSelector, KMQSelector
from curation.select.quad import QuadSelector
from curation.select.random import RandomSelector, StratifiedSelector
from curation.select.value_threshold import ValueThresholdSelector

__all__ = [
    "ChainSelector",
    "GroupAdaptiveSelector",
    "IterativeKMQSelector",
    "KMQSelector",
    "QuadSelector",
    "RandomSelector",
    "Selector",
    "StratifiedSelector",
    "ValueThresholdSelector",
    "build_selector",
]
