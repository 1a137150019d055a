"""Bad inputs to the three scripts: one line naming the field, nothing written, then it trains.

Each case of the table runs its script as the user would (`tests/script_forks.py` forks one warm
process per case, so the table costs one JAX start-up): the exit code, no traceback, the named
field in the last line, and the workdir unchanged byte for byte (or never created).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from small_configs import classic_config, classic_sweep_config
from workdir_faults import snapshot

from jaxopt_lab import configs, files, runloop, workdirs
from jaxopt_lab import single as single_run
from jaxopt_lab.sweep import driver, store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSIC = "--config=experiments/classic.py"
SWEEP = "--config=experiments/sweep_classic_lr.py"

# Config files a user might point --config at by mistake.
_FILES = {
    "syntax.py": "def get_config():\n  return dict(a=\n",
    "noget.py": "import ml_collections\n\nCONFIG = ml_collections.ConfigDict()\n",
    "raises.py": ("from jaxopt_lab.configs import base_config\n\n\ndef get_config():\n"
                  "  return base_config('classic').optimiser\n"),
    "sweep_lr.py": ("import ml_collections\n\nfrom jaxopt_lab.configs import base_config\n\n\n"
                    "def get_config(largest='1.0'):\n  config = base_config('classic')\n"
                    "  config.train.update(steps=4, steps_per_call=2, log_every=2, eval_every=4,"
                    " checkpoint_every=2)\n  config.sweep.report = False\n"
                    "  config.sweep.factors = ml_collections.ConfigDict(\n"
                    "      {'learning_rate': {'values': [0.1, float(largest)]}})\n"
                    "  return config\n"),
}

# (id, script, arguments, text of the last line, workdir: "run" = a copy of a finished run that
# must stay byte for byte the same, "new" = a path that must not be created). `{tmp}` is the
# folder of the files above.
CASES = [
    ("schedule", "train.py", [CLASSIC, "--config.optimizer.schedule=linear"],
     "optimizer.schedule: unknown schedule 'linear'; valid choices: constant, cosine, wsd", "new"),
    ("decay_mask", "train.py", [CLASSIC, "--config.optimizer.decay_mask=biases"],
     "optimizer.decay_mask: unknown setting 'biases'; valid choices: all, matrices", "run"),
    ("end_factor", "train.py", [CLASSIC, "--config.optimizer.schedule=cosine",
                                "--config.optimizer.end_factor=-0.5"],
     "optimizer.end_factor must be >= 0", "run"),
    ("decay_fraction", "train.py", [CLASSIC, "--config.optimizer.schedule=wsd",
                                    "--config.optimizer.decay_fraction=2"],
     "optimizer.decay_fraction must be in [0, 1]", "new"),
    ("lr_inf", "train.py", [CLASSIC, "--config.optimizer.learning_rate=inf"],
     "optimizer.learning_rate: must be a finite number >= 0, got inf", "run"),
    ("lr_nan", "train.py", [CLASSIC, "--config.optimizer.learning_rate=nan"],
     "optimizer.learning_rate must be >= 0, got nan", "new"),
    ("lr_negative", "train.py", [CLASSIC, "--config.optimizer.learning_rate=-1"],
     "optimizer.learning_rate must be >= 0, got -1", "run"),
    ("weight_decay_inf", "train.py", [CLASSIC + ":adamw", "--config.optimizer.weight_decay=inf"],
     "optimizer.weight_decay: must be a finite number >= 0, got inf", "run"),
    ("steps_zero", "train.py", [CLASSIC, "--config.train.steps=0"],
     "train.steps: must be a positive integer, got 0", "run"),
    ("unknown_field", "train.py", [CLASSIC, "--config.optimizer.nme=adam"],
     "--config.optimizer.nme: config.optimizer has no field 'nme'; valid fields: b1, b2", "run"),
    ("not_python", "train.py", ["--config=README.md"],
     "--config: README.md line 3: not a valid Python config file", "run"),
    ("syntax_error", "train.py", ["--config={tmp}/syntax.py"],
     "syntax.py line 2: not a valid Python config file", "new"),
    ("no_get_config", "train.py", ["--config={tmp}/noget.py", "--config.seed=1"],
     "noget.py defines no get_config()", "run"),
    ("get_config_raises", "train.py", ["--config={tmp}/raises.py"],
     "raises.py line 5: get_config() raised AttributeError", "run"),
    ("cpu_devices", "sweep.py", [SWEEP, "--cpu_devices=-2"],
     "--cpu_devices: must be >= 0 (0: one per usable core), got -2", "new"),
    ("diverge_factor", "sweep.py", [SWEEP, "--config.sweep.diverge_factor=-1", "--cpu_devices=1"],
     "sweep.diverge_factor: must be a number >= 0", "new"),
    ("sweep_schedule", "sweep.py", [SWEEP, "--config.optimizer.schedule=linear", "--cpu_devices=1"],
     "optimizer.schedule: unknown schedule 'linear'", "run"),
    ("sweep_decay_mask", "sweep.py", [SWEEP, "--config.optimizer.decay_mask=x", "--cpu_devices=1"],
     "optimizer.decay_mask: unknown setting 'x'", "new"),
    ("sweep_end_factor", "sweep.py", [SWEEP, "--config.optimizer.schedule=cosine",
                                      "--config.optimizer.end_factor=-1", "--cpu_devices=1"],
     "optimizer.end_factor must be >= 0", "run"),
    ("sweep_lr_inf", "sweep.py", ["--config={tmp}/sweep_lr.py:inf", "--cpu_devices=1"],
     "sweep.factors.learning_rate.values: 'learning_rate' is a value factor; its values must be "
     "finite numbers, got [inf]", "new"),
    ("sh_eta", "sweep.py", [SWEEP, "--config.sweep.design=successive_halving",
                            "--config.sweep.adaptive.eta=1", "--cpu_devices=1"],
     "sweep.adaptive.eta: must be an int >= 2 (each rung keeps 1/eta of the points), got 1", "run"),
    ("sh_min_steps", "sweep.py", [SWEEP, "--config.sweep.design=hyperband",
                                  "--config.sweep.adaptive.initial=random",
                                  "--config.sweep.adaptive.min_steps=100000", "--cpu_devices=1"],
     "sweep.adaptive.min_steps: the first rung (100000 steps) must come before the run's end",
     "new"),
    ("hyperband_grid", "sweep.py", [SWEEP, "--config.sweep.design=hyperband", "--cpu_devices=1"],
     "sweep.adaptive.initial: 'grid' cannot start the 'hyperband' design (hyperband draws each "
     "bracket's points); choices: random, sobol, lhs.", "run"),
    ("pbt_range", "sweep.py", [SWEEP, "--config.sweep.design=pbt",
                               "--config.sweep.adaptive.interval=10",
                               # doubled braces: the arguments pass through str.format
                               "--config.sweep.factors={{'learning_rate': {{'values': [0.01, "
                               "0.1]}}, 'b1': {{'scale': 'linear', 'low': 0.5, 'high': 1.2, "
                               "'num': 2}}}}",
                               "--cpu_devices=1"],
     "sweep.factors.b1.high: b1 of optimizer 'adam' must be in [0, 1), got 1.2", "run"),
    ("sweep_not_python", "sweep.py", ["--config=README.md"],
     "--config: README.md line 3: not a valid Python config file", "new"),
    # A single run's directory is a one-point experiment (tests/test_expdir.py); none is refused.
    ("report_missing", "report.py", [], "does not exist", "new"),
    ("report_resamples", "report.py", ["--num_resamples=0"],
     "--num_resamples: must be >= 1, got 0", "run"),
]



@pytest.fixture(scope="module")
def table(tmp_path_factory):
  """Runs every case (then two corrected commands) in one process; returns results by id."""
  tmp = tmp_path_factory.mktemp("bad_inputs")
  for name, text in _FILES.items():
    (tmp / name).write_text(text)
  finished = str(tmp / "finished")
  single_run.train(
      configs.sibling(os.path.join(ROOT, "experiments", "x.py"), "classic").get_config(), finished)
  cases, workdirs_before = [], {}
  for case_id, script, args, _, kind in CASES:
    workdir = str(tmp / case_id)
    if kind == "run":
      shutil.copytree(finished, workdir)
    workdirs_before[case_id] = (workdir, snapshot(workdir))
    cases.append({"script": script,
                  "args": [a.format(tmp=tmp) for a in args] + [f"--workdir={workdir}"]})
  results = _run_in_forks(tmp, cases)
  return tmp, {case[0]: r for case, r in zip(CASES, results, strict=True)}, workdirs_before


def _run_in_forks(tmp, cases: list[dict]) -> list[dict]:
  with open(tmp / "cases.json", "w") as f:
    json.dump(cases, f)
  subprocess.run([sys.executable, os.path.join(ROOT, "tests", "script_forks.py"),
                  str(tmp / "cases.json"), str(tmp / "results.json")],
                 check=True, timeout=600, cwd=ROOT)
  with open(tmp / "results.json") as f:
    return json.load(f)


@pytest.mark.parametrize("case_id,script,args,expected,kind", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(table, case_id, script, args, expected, kind):
  _, results, before = table
  result = results[case_id]
  output = result["output"]
  assert result["returncode"] == 1, output[-3000:]
  assert "Traceback" not in output, output[-3000:]
  last = output.strip().splitlines()[-1]
  assert last.startswith("error: ") and expected in last, last
  # it begins with what it names: a flag (--config, --workdir, ...) or the config field
  assert last.startswith(("error: --", f"error: {expected.split(':')[0]}")), last
  workdir, files_before = before[case_id]
  assert snapshot(workdir) == files_before  # byte for byte, or still absent
  assert files_before is not None or kind == "new"


def test_the_corrected_command_trains_on_the_refused_workdir(table):
  tmp, results, _ = table
  assert results["schedule"]["returncode"] == results["sweep_lr_inf"]["returncode"] == 1
  corrected_train, corrected_sweep = _run_in_forks(tmp, [
      {"script": "train.py", "args": [CLASSIC, f"--workdir={tmp / 'schedule'}"]},
      {"script": "sweep.py", "args": [f"--config={tmp}/sweep_lr.py:1.0", "--cpu_devices=1",
                                      f"--workdir={tmp / 'sweep_lr_inf'}"]}])
  assert corrected_train["returncode"] == 0, corrected_train["output"][-3000:]
  with open(tmp / "schedule" / "summary.json") as f:
    assert json.load(f)["steps"] == 10
  assert corrected_sweep["returncode"] == 0, corrected_sweep["output"][-3000:]
  with open(tmp / "sweep_lr_inf" / "run.json") as f:
    assert json.load(f)["status"] == "complete"


def test_a_workdir_whose_start_trained_no_step_is_taken_over(tmp_path, monkeypatch):
  """What a start wrote before its first step never blocks another config; a trained run does."""
  single, sweep = str(tmp_path / "single"), str(tmp_path / "sweep")
  other = classic_config(learning_rate=0.3)
  os.makedirs(os.path.join(single, "checkpoints"))
  files.atomic_write_json(os.path.join(single, "config.json"), other.to_dict())
  files.atomic_write_jsonl(os.path.join(single, "metrics.jsonl"),
                           [{"step": 0, "split": "valid", "loss": 1.0}])
  assert not workdirs.trained(single)
  summary = single_run.train(classic_config(), single)
  assert summary["status"] == "ok"
  assert workdirs.trained(single)
  with pytest.raises(ValueError, match=r"holds a run with another config.*learning_rate"):
    single_run.train(other, single)

  old = classic_sweep_config(learning_rates=(0.5,), optimizers=("sgd",), replicates=1, steps=4)

  def interrupted_write(self, status="running"):
    raise KeyboardInterrupt  # Ctrl-C before the first write of a trained step

  with monkeypatch.context() as patch:
    patch.setattr(store.Store, "flush", interrupted_write)
    with pytest.raises(runloop.Interrupted,
                       match=r"at step 4 of group optimizer=sgd \(no checkpoint yet\)"):
      driver.run_sweep(old, sweep)
  assert os.path.exists(os.path.join(sweep, "design.csv"))
  assert not workdirs.trained(sweep)
  new = classic_sweep_config(learning_rates=(0.1, 0.2), optimizers=("adam",), replicates=1,
                             steps=4)
  rows = driver.run_sweep(new, sweep)
  assert [r["status"] for r in rows] == ["ok", "ok"]
  assert sorted(os.listdir(os.path.join(sweep, "checkpoints"))) == [
      "optimizer=adam", "optimizer=adam.layout.json"]
