"""Parameter and FLOP counts of the transformer, from its structure alone (a
``TransformerConfig`` or anything with the same attributes)."""

from __future__ import annotations

from typing import Any


def _norm_params(cfg: Any) -> int:
  return cfg.width if cfg.norm == 'rmsnorm' else 2 * cfg.width


def nonembedding_param_count(cfg: Any) -> int:
  """Parameters outside the token and position embeddings: ``depth * (12 width^2 + 2 norms +
  qk-norms) + final norm`` (a norm has ``width`` scales for RMSNorm, plus ``width`` biases for
  LayerNorm; the qk-norms a scale and a bias per head channel, for queries and for keys)."""
  qk_norms = 4 * (cfg.width // cfg.heads) if getattr(cfg, 'qk_norm', False) else 0
  per_block = 12 * cfg.width**2 + 2 * _norm_params(cfg) + qk_norms
  return cfg.depth * per_block + _norm_params(cfg)


def param_count(cfg: Any) -> int:
  """All parameters: ``vocab * width`` (embedding, shared with the head) ``+ context * width``
  (learned positions only) ``+ nonembedding_param_count(cfg)``."""
  positions = cfg.context * cfg.width if cfg.positions == 'learned' else 0
  return cfg.vocab * cfg.width + positions + nonembedding_param_count(cfg)


def flops_per_token(cfg: Any) -> int:
  """Model FLOPs of one forward and backward pass, per token of a full-context window.

  Kaplan et al. (2020, Table 1) style, counting only matmuls, 2 FLOPs per multiply-add and
  backward = 2 x forward::

      flops_per_token = 6 * N + 6 * depth * context * width,
      N = 12 * depth * width^2 + vocab * width.

  ``N`` is the number of matmul weights a token meets: per block the fused QKV projection
  (3 width^2), the attention output (width^2) and the MLP (8 width^2); plus the tied output head
  (vocab * width), which Kaplan et al. leave out but which is several percent at byte vocabularies
  and small widths. Norm scales and the embedding lookup (a gather) do no matmul work.
  The attention term: a query meets on average ``context / 2`` keys under the causal mask, in two
  matmuls (Q K^T and A V), so ``2 * 2 * (context / 2) * width`` forward FLOPs per block. A dense
  implementation (ours) also computes the masked half, i.e. executes
  ``6 * N + 12 * depth * context * width``; the formula counts useful work, as MFU does.
  Softmax, norms and activations (a few percent at these sizes) are not counted.

  Args:
    cfg: the model structure (a ``TransformerConfig`` or anything with the same attributes).

  Returns:
    The FLOPs per token, an integer.
  """
  n = 12 * cfg.depth * cfg.width**2 + cfg.vocab * cfg.width
  return 6 * n + 6 * cfg.depth * cfg.context * cfg.width
