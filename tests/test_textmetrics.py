"""Generation metrics of the LM: greedy decoding against the full forward, the scores against
sacrebleu and rouge-score themselves, and the metrics of a single run and of a sweep."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from small_configs import classic_config, tiny_lm_config

from jaxopt_lab import files, models, tasks, train
from jaxopt_lab import single as single_run
from jaxopt_lab.sweep import driver
from jaxopt_lab.tasks import textmetrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _models(**fields):
  cfg = models.TransformerConfig(width=32, depth=2, heads=2, context=24, **fields)
  lm = models.pure(lambda rngs: models.Transformer(cfg, rngs=rngs))
  generator = models.pure(lambda rngs: models.GreedyGenerator(cfg, rngs=rngs))
  return lm, generator


def _params(lm, seed):
  # Weights 10x their initial scale: peaked, context-dependent predictions (at the initial scale
  # the logits are nearly uniform and greedy decoding repeats a few bytes).
  return jax.tree.map(lambda x: 10 * x, lm.init(jax.random.key(seed)))


def _prompts(n=3, length=8):
  return jax.random.randint(jax.random.key(7), (n, length), 0, 256)


@pytest.mark.parametrize("fields", [dict(), dict(positions="rope", norm="layernorm"),
                                    dict(attention="fused")])
def test_greedy_generation_equals_step_by_step_full_forwards(fields):
  lm, generator = _models(**fields)
  params, prompts, steps = _params(lm, 0), _prompts(), 16
  generated = jax.jit(generator.apply, static_argnums=2)(params, prompts, steps)
  # The reference: the whole sequence through the model at every step, argmax of the last logits.
  forward = jax.jit(lm.apply)
  tokens = prompts
  for _ in range(steps):
    next_token = jnp.argmax(forward(params, tokens)[:, -1], axis=-1)
    tokens = jnp.concatenate([tokens, next_token[:, None]], axis=1)
  assert generated.dtype == jnp.int32 and generated.shape == (3, steps)
  np.testing.assert_array_equal(generated, tokens[:, prompts.shape[1]:])
  assert len(np.unique(generated)) > 8  # a sequence that depends on its positions and context


def test_generation_vmapped_over_points_equals_separate_runs():
  lm, generator = _models()
  points = [_params(lm, seed) for seed in (0, 1)]
  stacked = jax.tree.map(lambda *x: jnp.stack(x), *points)
  prompts = _prompts()
  vmapped = jax.jit(jax.vmap(lambda p: generator.apply(p, prompts, 12)))(stacked)
  for i, params in enumerate(points):
    np.testing.assert_array_equal(vmapped[i], generator.apply(params, prompts, 12))
  assert not np.array_equal(vmapped[0], vmapped[1])


def test_generation_longer_than_the_context_is_refused():
  _, generator = _models()
  params = generator.init(jax.random.key(0))
  with pytest.raises(ValueError, match="needs 25 positions; the context is 24"):
    generator.apply(params, _prompts(length=8), 18)
  assert generator.apply(params, _prompts(length=8), 17).shape == (3, 17)  # every position


HYPOTHESES = ["def f(x):\n    return x + 1", "import os\nprint(os.sep)", "for i in range(3): pass",
              "x = [a for a in b if a]"]
REFERENCES = ["def f(x):\n    return x * 2", "import sys\nprint(sys.argv)",
              "for i in range(10): continue", "y = {a: b for a, b in c}"]


def test_scores_equal_sacrebleu_and_rouge_score_called_directly():
  got = textmetrics.score(HYPOTHESES, REFERENCES)
  bleu = sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score
  scorer = rouge_scorer.RougeScorer(["rougeL"])
  rouge = np.mean([scorer.score(r, h)["rougeL"].fmeasure
                   for h, r in zip(HYPOTHESES, REFERENCES, strict=True)])
  assert got == pytest.approx({"bleu": bleu, "rougeL": rouge}, rel=1e-12)
  assert 0 < got["bleu"] < 100 and 0 < got["rougeL"] < 1
  assert textmetrics.score(REFERENCES, REFERENCES) == pytest.approx({"bleu": 100, "rougeL": 1})
  # By hand: LCS of 'a b c d' and 'a c d e' is 'a c d': precision = recall = F1 = 3/4.
  assert textmetrics.score(["a c d e"], ["a b c d"])["rougeL"] == pytest.approx(0.75)
  assert textmetrics.score(["q r s t"], ["a b c d"]) == {"bleu": 0.0, "rougeL": 0.0}


def test_score_generated_scores_each_point():
  texts = ["a b c d e f", "g h i j k l"]
  refs = np.array([[ord(c) for c in t] for t in texts], np.uint8)
  task = types.SimpleNamespace(eval_data={"valid": {"continuations": refs}})
  generated = np.stack([refs, refs[::-1]])  # point 0 perfect, point 1 swapped
  out = textmetrics.score_generated(task, {"valid_loss": np.array([1.0, 2.0]),
                                           "valid_generated": generated})
  assert sorted(out) == ["valid_bleu", "valid_loss", "valid_rougeL"]
  np.testing.assert_array_equal(out["valid_loss"], [1.0, 2.0])
  swapped = textmetrics.score(texts[::-1], texts)
  np.testing.assert_allclose(out["valid_bleu"], [100.0, swapped["bleu"]])
  np.testing.assert_allclose(out["valid_rougeL"], [1.0, swapped["rougeL"]])


def _generating(config, prompts=4, prompt_bytes=8, continuation_bytes=8):
  config.eval.update(dict(generation=True, prompts=prompts, prompt_bytes=prompt_bytes,
                          continuation_bytes=continuation_bytes))
  return config


def _scores_at_init(task, config):
  """The scores of the initial parameters, computed here from the task's parts."""
  init_key, _ = train.point_keys(config.seed)
  params = task.init_params(init_key)
  data = task.eval_data["valid"]
  tokens = task.generate(params, data["prompts"], data["continuations"].shape[-1])
  return textmetrics.score([textmetrics.as_text(t) for t in np.asarray(tokens)],
                           [textmetrics.as_text(t) for t in data["continuations"]])


def test_prompts_are_held_out_windows():
  config = _generating(tiny_lm_config())
  task = tasks.build(config)
  for split in ("valid", "test"):
    windows = task.eval_data[split]["tokens"].reshape(-1, 17)  # context 16 + 1
    data = task.eval_data[split]
    np.testing.assert_array_equal(data["prompts"], windows[[0, 2, 4, 6], :8])
    np.testing.assert_array_equal(data["continuations"], windows[[0, 2, 4, 6], 8:16])
  assert task.metric_modes["bleu"] == task.metric_modes["rougeL"] == "max"
  assert "prompts" not in tasks.build(tiny_lm_config()).eval_data["valid"]  # off by default


def test_single_run_logs_generation_metrics(tmp_path):
  config = _generating(tiny_lm_config())
  summary = single_run.train(config, str(tmp_path))
  rows = files.read_jsonl(tmp_path / "metrics.jsonl")
  held_out = [r for r in rows if r["split"] in ("valid", "test")]
  assert [(r["step"], r["split"]) for r in held_out] == [
      (0, "valid"), (0, "test"), (10, "valid"), (10, "test")]
  for row in held_out:
    assert 0 <= row["bleu"] <= 100 and 0 <= row["rougeL"] <= 1 and "generated" not in row
  expected = _scores_at_init(tasks.build(config), config)
  assert held_out[0]["bleu"] == pytest.approx(expected["bleu"], abs=1e-9)
  assert held_out[0]["rougeL"] == pytest.approx(expected["rougeL"], abs=1e-9)
  for key in ("final_valid_bleu", "best_valid_bleu", "final_valid_rougeL", "final_test_bleu"):
    assert key in summary
  assert summary["final_valid_bleu"] == held_out[2]["bleu"]


def test_sweep_logs_generation_metrics_per_point(tmp_path):
  config = _generating(tiny_lm_config())
  config.sweep.update(dict(design="grid", replicates=1, report=False, metric="bleu"))
  config.sweep.factors = ml_collections.ConfigDict(
      {"learning_rate": {"values": [1e-3, 3e-2]}})
  rows = driver.run_sweep(config, str(tmp_path))
  assert len(rows) == 2
  for row in rows:
    assert 0 <= row["final_valid_bleu"] <= 100 and 0 <= row["best_valid_rougeL"] <= 1
  metrics = files.read_jsonl(tmp_path / "metrics.jsonl")
  valid = [r for r in metrics if r["split"] == "valid"]
  assert sorted((r["point"], r["step"]) for r in valid) == [(0, 0), (0, 10), (1, 0), (1, 10)]
  # Both points start from the same seed: the same initial scores, those of the single model.
  expected = _scores_at_init(tasks.build(config), config)
  for r in valid:
    if r["step"] == 0:
      assert r["bleu"] == pytest.approx(expected["bleu"], abs=1e-9)
      assert r["rougeL"] == pytest.approx(expected["rougeL"], abs=1e-9)
  header = (tmp_path / "summary.csv").read_text().splitlines()[0].split(",")
  assert {"final_valid_bleu", "best_valid_bleu", "final_test_rougeL"} <= set(header)


@pytest.mark.parametrize("update,match", [
    (dict(prompts=9), r"eval.prompts: 9 prompts, but the valid split is evaluated on 8 windows"),
    (dict(continuation_bytes=10),
     r"eval.prompt_bytes \+ eval.continuation_bytes: 8 \+ 10 bytes exceed the 17 bytes"),
    (dict(prompt_bytes=0), r"eval.prompt_bytes: must be a positive integer; got 0"),
    (dict(generation=1), r"eval.generation: must be True or False; got 1"),
])
def test_bad_generation_configs(update, match):
  config = _generating(tiny_lm_config())
  with config.eval.ignore_type():
    config.eval.update(update)
  with pytest.raises(ValueError, match=match):
    tasks.build(config)


def test_generation_without_the_extra_installed_names_it(monkeypatch):
  monkeypatch.setitem(sys.modules, "rouge_score", None)  # makes `import rouge_score` fail
  with pytest.raises(ValueError, match=r"install them with pip install 'jaxopt_lab\[text\]'"):
    tasks.build(_generating(tiny_lm_config()))


def test_generation_on_a_task_without_text_is_a_one_line_error(tmp_path):
  with pytest.raises(ValueError, match="task 'classic' does not generate text; only 'lm'"):
    tasks.build(_generating(classic_config()))
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "scripts", "train.py"),
       "--config=experiments/classic.py", "--config.eval.generation=True",
       f"--workdir={tmp_path / 'w'}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      "error: eval.generation: task 'classic' does not generate text; only 'lm' does (set "
      "eval.generation=False)")
