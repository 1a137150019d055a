"""Deterministic, seedable, offline datasets (numpy), each with train / valid / test splits."""

from jaxopt_lab.data import batching, synthetic, tabular, text
from jaxopt_lab.data.splits import SPLITS, Splits

__all__ = ['SPLITS', 'Splits', 'batching', 'synthetic', 'tabular', 'text']
