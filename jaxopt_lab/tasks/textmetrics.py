"""Generation metrics of a language model: BLEU and ROUGE-L of greedy continuations.

With ``config.eval.generation`` on, ``tasks.build`` passes its task through ``with_generation``:
each held-out split gains fixed ``prompts`` (the first ``eval.prompt_bytes`` bytes of
``eval.prompts`` evenly spaced evaluation windows) and their true ``continuations`` (the window's
next ``eval.continuation_bytes`` bytes), and the task's ``eval_metrics`` also returns
``generated``, the greedy continuation of the prompts (``Task.generate``: a ``lax.scan`` with a
KV cache, on the device, vmapped over a sweep's points like the other metrics). Where the
evaluation is fetched, ``score_generated`` turns every ``<split>_generated`` into
``<split>_bleu`` (corpus BLEU of sacrebleu, 0-100) and ``<split>_rougeL`` (mean ROUGE-L F1 of
rouge-score, 0-1) on the host; both are better when larger (``MODES``).

sacrebleu and rouge-score are optional: ``pip install 'jaxopt_lab[text]'``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
  from jaxopt_lab.tasks.registry import Task

MODES = {'bleu': 'max', 'rougeL': 'max'}
_GENERATED = 'generated'
_DATA_KEYS = ('prompts', 'continuations')


def check_installed() -> None:
  """Raises a one-line ValueError if sacrebleu or rouge-score is missing."""
  try:
    import rouge_score  # noqa: F401
    import sacrebleu  # noqa: F401
  except ImportError as e:
    raise ValueError(
        f"eval.generation: needs sacrebleu and rouge-score ({e}); install them with "
        "pip install 'jaxopt_lab[text]', or set eval.generation=False") from None


@functools.cache
def _scorers() -> tuple[Any, Any]:
  check_installed()
  import sacrebleu
  from rouge_score import rouge_scorer

  return sacrebleu.metrics.BLEU(), rouge_scorer.RougeScorer(['rougeL'])


def as_text(tokens: np.ndarray) -> str:
  """Byte tokens (ints in [0, 256)) as text; invalid UTF-8 becomes U+FFFD."""
  return bytes(np.asarray(tokens, np.uint8).tolist()).decode('utf-8', errors='replace')


def score(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
  """``{'bleu': corpus BLEU (sacrebleu, default 13a tokenizer) in [0, 100], 'rougeL': mean
  ROUGE-L F1 (rouge-score, its default tokenizer, no stemming) in [0, 1]}``, one reference each."""
  if len(hypotheses) != len(references) or not hypotheses:
    raise ValueError(f'score: {len(hypotheses)} hypotheses for {len(references)} references')
  bleu, rouge = _scorers()
  rouge_l = [rouge.score(r, h)['rougeL'].fmeasure for h, r in zip(hypotheses, references,
                                                                  strict=True)]
  return {'bleu': float(bleu.corpus_score(list(hypotheses), [list(references)]).score),
          'rougeL': float(np.mean(rouge_l))}


def score_generated(task: Task, values: Mapping[str, Any]) -> dict[str, Any]:
  """``values`` (fetched evaluation metrics) with every ``<split>_generated`` (byte tokens
  [..., prompts, steps], any leading point axes) replaced by ``<split>_bleu`` and
  ``<split>_rougeL`` (arrays of the leading shape) against ``task``'s continuations."""
  out = {}
  for key, value in values.items():
    split, _, name = key.rpartition('_')
    if name != _GENERATED:
      out[key] = value
      continue
    tokens = np.asarray(value)
    refs = [as_text(t) for t in task.eval_data[split]['continuations']]
    lead = tokens.shape[:-2]
    scores = {m: np.zeros(lead) for m in MODES}
    for index in np.ndindex(*lead):
      for m, v in score([as_text(t) for t in tokens[index]], refs).items():
        scores[m][index] = v
    out.update({f'{split}_{m}': v for m, v in scores.items()})
  return out


def _positive_int(eval_config: Any, field: str) -> int:
  value = eval_config[field]
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f'eval.{field}: must be a positive integer; got {value!r}')
  return value


def with_generation(task: Task, eval_config: Any) -> Task:
  """``task`` with its held-out generation metrics when ``eval_config.generation`` is on.

  Raises:
    ValueError: one line: a field out of range, a task without ``generate`` (only 'lm' has it),
      sacrebleu or rouge-score missing, or prompts that the evaluation windows (each split's
      ``tokens`` [..., window]) cannot hold.
  """
  if not isinstance(eval_config.generation, bool):
    raise ValueError(f'eval.generation: must be True or False; got {eval_config.generation!r}')
  count, length, steps = (_positive_int(eval_config, f)
                          for f in ('prompts', 'prompt_bytes', 'continuation_bytes'))
  if not eval_config.generation:
    return task
  if task.generate is None:
    raise ValueError(f"eval.generation: task {task.name!r} does not generate text; only 'lm' "
                     "does (set eval.generation=False)")
  check_installed()
  eval_data = {}
  for split, data in task.eval_data.items():
    if 'tokens' not in data:
      raise ValueError(f"eval.generation: the {split} split of task {task.name!r} has no "
                       "'tokens' windows to take prompts from")
    windows = np.asarray(data['tokens']).reshape(-1, data['tokens'].shape[-1])
    if count > len(windows):
      raise ValueError(f'eval.prompts: {count} prompts, but the {split} split is evaluated on '
                       f'{len(windows)} windows (data.eval_windows)')
    if length + steps > windows.shape[1]:
      raise ValueError(
          f'eval.prompt_bytes + eval.continuation_bytes: {length} + {steps} bytes exceed the '
          f'{windows.shape[1]} bytes of an evaluation window (model.context + 1)')
    chosen = windows[np.arange(count) * len(windows) // count]
    eval_data[split] = {**data, 'prompts': chosen[:, :length],
                        'continuations': chosen[:, length:length + steps]}
  base_metrics, generate = task.eval_metrics, task.generate

  def eval_metrics(params, data):
    metrics = base_metrics(params, {k: v for k, v in data.items() if k not in _DATA_KEYS})
    if 'prompts' in data:  # structure, not a value: every split of this task has them
      metrics[_GENERATED] = generate(params, data['prompts'], data['continuations'].shape[-1])
    return metrics

  return dataclasses.replace(task, eval_data=eval_data, eval_metrics=eval_metrics,
                             metric_modes={**task.metric_modes, **MODES})
