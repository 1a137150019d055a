"""Flax NNX models, used through pure ``init`` / ``apply`` functions (see ``core.pure``)."""

from jaxopt_lab.models.attention import causal_attention
from jaxopt_lab.models.core import DTYPES, Params, PureModel, compute_dtype, pure
from jaxopt_lab.models.linear import LogisticRegression
from jaxopt_lab.models.mlp import ACTIVATIONS, MLP
from jaxopt_lab.models.transformer import (
    NORMS,
    POSITIONS,
    GreedyGenerator,
    Transformer,
    TransformerConfig,
    dense_matmul,
    flops_per_token,
    nonembedding_param_count,
    param_count,
    transformer_from_config,
)

__all__ = [
    'ACTIVATIONS', 'DTYPES', 'GreedyGenerator', 'MLP', 'NORMS', 'POSITIONS', 'LogisticRegression',
    'Params', 'PureModel', 'Transformer', 'TransformerConfig', 'causal_attention', 'compute_dtype',
    'dense_matmul', 'flops_per_token', 'nonembedding_param_count', 'param_count', 'pure',
    'transformer_from_config',
]
