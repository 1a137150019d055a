"""Where one `lm_tiny` training step's time goes on a CPU, in XLA and in PyTorch, per op class.

The JAX step is the plain JAX + Optax step of `baselines.py` (`value_and_grad` of the task's loss,
`clip_by_global_norm` + `adamw` under `inject_hyperparams`; our trainer's lean step runs at 1.00x
of it), jitted and traced with `jax.profiler`: each XLA CPU op event of the perfetto trace is an
instruction of the compiled HLO, classified by the source expression its instructions come from
(the HLO's stack frames: `self.qkv(x)`, `jax.nn.gelu(...)`, ...) and by forward / backward
(`jvp` / `transpose(jvp)` in its name). The PyTorch step is `baselines.TorchLM` with
`CrossEntropyLoss`, `clip_grad_norm_` and `AdamW`, profiled with `torch.profiler`: each op's self
time is classified by the module it runs in (forward), the autograd node it runs under
(backward) and its input shapes (matmuls). Both get the same batch of `lm_tiny`.

Times are per step, summed over the op events: XLA's thunk executor may run two ops at once on
two threads, so its sum can exceed the wall time (both are printed).

  python -m benchmarks.lm_profile --threads=2
  python -m benchmarks.lm_profile --threads=1   # pins itself to one core
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

from absl import app, flags

from benchmarks import baselines, common

_THREADS = flags.DEFINE_integer("threads", 2, "CPU cores for both frameworks (affinity) and "
                                "PyTorch's intra-op threads")
_STEPS = flags.DEFINE_integer("steps", 10, "profiled steps (after as many untraced ones)")
_FRAMEWORKS = flags.DEFINE_list("frameworks", ["jax", "torch"], "jax, torch or both")
_ATTENTION = flags.DEFINE_string("attention", "dense", "the JAX model's `model.attention`: dense "
                                 "or fused (`jax.nn.dot_product_attention`)")
_TOP = flags.DEFINE_integer("top", 8, "also print the slowest ops of each framework")

CLASSES = (
    "matmul qkv", "matmul attention scores (QK^T)", "matmul attention x values", "matmul out proj",
    "matmul MLP up", "matmul MLP down", "matmul MLP (up + down)", "matmul logits (tied head)",
    "attention fused (SDPA)", "attention softmax / mask / scale",
    "attention head split / merge (copies)", "GELU", "norms (RMSNorm)",
    "embedding gather / scatter", "cross-entropy", "residual adds", "optimizer (clip + AdamW)",
    "other (copies, transposes, ...)",
)
ATT_SOFTMAX = "attention softmax / mask / scale"
# The source expression (transformer.py, tasks/lm.py) an HLO instruction comes from -> class.
_SOURCE = (
    ("self.qkv", "matmul qkv"), ("'btnh,bsnh->bnts'", "matmul attention scores (QK^T)"),
    ("'bnts,bsnh->btnh'", "matmul attention x values"), ("self.out", "matmul out proj"),
    ("self.down", "matmul MLP down"), ("self.up", "matmul MLP up"),
    ("attend(", "matmul logits (tied head)"),
    ("dot_product_attention", "attention fused (SDPA)"),
    ("softmax", ATT_SOFTMAX), ("jnp.where(causal", ATT_SOFTMAX), ("math.sqrt(size)", ATT_SOFTMAX),
    ("qkv[:, :, ", "attention head split / merge (copies)"),
    (".reshape(batch, time", "attention head split / merge (copies)"),
    ("gelu", "GELU"), ("_norm(", "norms (RMSNorm)"), ("jnp.take(", "embedding gather / scatter"),
    ("pos_embed", "embedding gather / scatter"), ("logsumexp", "cross-entropy"),
    ("take_along_axis", "cross-entropy"), (".mean()", "cross-entropy"),
    ("x + ", "residual adds"),
    # models/attention.py (`causal_attention`, float32 dense attention on a CPU); its backward's
    # ops have only the caller's frame (`_attend(`), its dots their einsum in the op name
    ("q_scaled, k)", "matmul attention scores (QK^T)"), ("v.dtype), v)", "matmul attention x "
     "values"), ("jnp.where(jnp.tril", ATT_SOFTMAX), ("jnp.exp(logits", ATT_SOFTMAX),
    ("exp / jnp.sum", ATT_SOFTMAX), ("1 / math.sqrt", ATT_SOFTMAX), ("_attend(", ATT_SOFTMAX),
    ("jnp.swapaxes(", "attention head split / merge (copies)"),
)


def _classify_source(exprs: tuple[str, ...], is_dot: bool) -> str | None:
  """The class of the innermost of `exprs` (source expressions, innermost first) that names a
  class; a matmul class only for a dot."""
  for text in exprs:
    found = [cls for key, cls in _SOURCE if key in text]
    if found:  # the innermost expression we know decides (a helper's own lines do not)
      return next((cls for cls in found if is_dot or not cls.startswith("matmul")), None)
  return None


# ----------------------------------------------------------------------------- JAX


def _parse_hlo(text: str):
  """The instructions of an HLO module's text: `{name: (computation, op, op_name, source
  expressions innermost first, called computations, result dims, operand names)}`."""
  lines = text.splitlines()
  tables: dict[str, dict[int, str]] = {}
  section = None
  for line in lines:
    if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
      section = line
      tables[section] = {}
      continue
    if section and re.match(r"^\d+ ", line):
      key, value = line.split(" ", 1)
      tables[section][int(key)] = value
    elif section and line.strip() == "":
      section = None
  files = {k: v.strip('"') for k, v in tables.get("FileNames", {}).items()}
  locations = {}
  for k, v in tables.get("FileLocations", {}).items():
    f = dict(re.findall(r"(\w+)=(\d+)", v))
    path = files[int(f["file_name_id"])]
    try:
      with open(path) as fh:
        src = fh.read().splitlines()[int(f["line"]) - 1]
      expr = src[int(f["column"]):int(f["end_column"])] if f["line"] == f["end_line"] else src
    except (OSError, IndexError):
      expr = ""
    locations[k] = (os.path.basename(path), expr)
  parents, own = {}, {}
  for k, v in tables.get("StackFrames", {}).items():
    own[k] = locations.get(int(re.search(r"file_location_id=(\d+)", v).group(1)), ("", ""))
    parents[k] = int(re.search(r"parent_frame_id=(\d+)", v).group(1))
  frames = {}  # frame -> its expressions, innermost first (a helper's line, then its caller's)
  for k in own:
    chain, f = [], k
    while f in own and own[f] not in chain:
      chain.append(own[f])
      f = parents[f] if parents[f] != f else None
    frames[k] = tuple(expr for _, expr in chain)
  instructions = {}
  comp = None
  for line in lines:
    m = re.match(r"^(?:ENTRY )?%(\S+) .*\{$", line)
    if m:
      comp = m.group(1)
      continue
    m = re.match(r"^\s+(?:ROOT )?%(\S+) = (\S+?)(?:\{[^}]*\})? ([\w-]+)\(([^)]*)\)", line)
    if m and comp:
      op_name = re.search(r'op_name="([^"]*)"', line)
      frame = re.search(r"stack_frame_id=(\d+)", line)
      calls = re.findall(r"(?:calls|to_apply|body|condition)=%([\w.-]+)", line)
      dims = {int(d) for d in re.findall(r"\d+", m.group(2).split("[", 1)[-1])}
      operands = re.findall(r"%([\w.-]+)", m.group(4))
      instructions[m.group(1)] = (comp, m.group(3), op_name.group(1) if op_name else "",
                                  frames.get(int(frame.group(1))) if frame else None, calls,
                                  dims, operands)
  return instructions


def _classify_hlo(name: str, instructions) -> str:
  """The class of the entry-level instruction `name` from the instructions it runs."""
  todo, seen, members = [name], set(), []
  while todo:
    n = todo.pop()
    if n in seen or n not in instructions:
      continue
    seen.add(n)
    members.append(instructions[n])
    for comp in instructions[n][4]:
      todo += [i for i, v in instructions.items() if v[0] == comp]
  is_dot = any(m[1] in ("dot", "convolution") for m in members)
  in_model = [m for m in members if m[2].startswith("jit(") and "jvp(" in m[2]]
  if not in_model and members and any(m[2] for m in members):
    return "optimizer (clip + AdamW)"
  votes = collections.Counter()
  for m in members:
    if m[3] is None:
      continue
    cls = _classify_source(m[3], is_dot and m[1] == "dot")
    if cls:
      votes[cls] += 1
  if is_dot:
    dots = [m for m in members if m[1] == "dot" and m[3]]
    for m in dots:  # causal_attention's backward: dP = dO V^T, dQ = dS K, dK^T = Q^T dS, dV^T
      spec = re.search(r"transpose\(jvp\((\.\.\.[a-z,.>-]+)\)\)", m[2])
      if spec and "_attend(" in m[3][0]:
        return {"...th,...sh->...ts": "matmul attention x values",
                "...td,...ts->...ds": "matmul attention x values"}.get(
                    spec.group(1), "matmul attention scores (QK^T)")
    for m in dots:
      cls = _classify_source(m[3], True)
      if cls:
        return cls
    for m in dots:  # a dot in our helper `transformer.dense_matmul`: its layer by its shapes
      return _matmul_by_dims(m[5].union(*(instructions[o][5] for o in m[6]
                                          if o in instructions)))
  if votes:
    return votes.most_common(1)[0][0]
  return "other (copies, transposes, ...)"


def profile_jax(steps: int) -> tuple[float, dict, list]:
  """(wall ms per step, {(class, 'fwd' | 'bwd' | ''): ms per step}, the slowest ops)."""
  import jax
  import optax

  from jaxopt_lab import tasks

  config = common.experiment_config("lm")
  config.model.attention = _ATTENTION.value
  task = tasks.build(config)
  tx = baselines.plain_optimizer(config.optimizer, int(config.train.steps))(learning_rate=3e-3)
  grad_fn = jax.value_and_grad(lambda params, batch: task.loss_fn(params, batch)[0])

  def step(params, opt_state, batch):
    loss, grads = grad_fn(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  params = task.init_params(jax.random.key(0))
  opt_state = tx.init(params)
  batch = jax.device_put(jax.tree.map(lambda x: x[0], task.train_batches(0, 0, 1)))
  compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, batch).compile()
  for _ in range(steps):
    params, opt_state, loss = compiled(params, opt_state, batch)
  jax.block_until_ready(loss)
  start = time.perf_counter()
  for _ in range(steps):
    params, opt_state, loss = compiled(params, opt_state, batch)
  jax.block_until_ready(loss)
  wall = (time.perf_counter() - start) / steps * 1e3
  instructions = _parse_hlo(compiled.as_text())
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      for _ in range(steps):
        params, opt_state, loss = compiled(params, opt_state, batch)
      jax.block_until_ready(loss)
    path = glob.glob(os.path.join(tmp, "**", "perfetto_trace.json.gz"), recursive=True)[0]
    with gzip.open(path) as fh:
      trace = json.load(fh)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  table: dict = collections.Counter()
  per_op: dict = collections.Counter()
  classes = {}
  entry = _find_entry(instructions)
  for e in events:
    name = e.get("name")
    if e.get("ph") != "X" or name not in instructions or instructions[name][0] != entry:
      continue
    if name not in classes:
      classes[name] = _classify_hlo(name, instructions)
    op_name = instructions[name][2]
    cls = classes[name]
    phase = ("" if cls.startswith("optimizer") else
             "bwd" if "transpose(jvp" in op_name else "fwd")
    table[(cls, phase)] += e["dur"] / 1e3 / steps
    per_op[(name, cls, phase)] += e["dur"] / 1e3 / steps
  return wall, table, per_op.most_common(_TOP.value)


def _find_entry(instructions) -> str:
  called = {c for v in instructions.values() for c in v[4]}
  comps = [v[0] for v in instructions.values() if v[0] not in called]
  return collections.Counter(comps).most_common(1)[0][0]


# ----------------------------------------------------------------------------- PyTorch


_TORCH_BACKWARD = (
    ("GeluBackward", "GELU"), ("ScaledDotProduct", "attention fused (SDPA)"),
    ("EmbeddingBackward", "embedding gather / scatter"),
    ("LogSoftmaxBackward", "cross-entropy"), ("NllLoss", "cross-entropy"),
    ("RmsNorm", "norms (RMSNorm)"), ("PowBackward", "norms (RMSNorm)"),
    ("MeanBackward", "norms (RMSNorm)"), ("RsqrtBackward", "norms (RMSNorm)"),
    ("MulBackward", "norms (RMSNorm)"), ("AddBackward", "residual adds"),
)


def _matmul_by_dims(dims: set[int]) -> str:
  """The projection of lm_tiny a matmul's operand and result dimensions belong to."""
  if 384 in dims:
    return "matmul qkv"
  if 512 in dims:
    return "matmul MLP (up + down)"
  if 256 in dims:
    return "matmul logits (tied head)"
  return "matmul out proj"


def profile_torch(steps: int, threads: int) -> tuple[float, dict, list]:
  """`profile_jax` for `baselines.TorchLM` trained as `baselines.torch_loop` trains it."""
  import torch
  from torch.profiler import ProfilerActivity, profile, record_function

  from jaxopt_lab import tasks

  torch.set_num_threads(threads)
  config = common.experiment_config("lm")
  task = tasks.build(config)
  tokens = torch.from_numpy(task.train_batches(0, 0, 1)["tokens"][0].astype("int64"))
  x, y = tokens[:, :-1], tokens[:, 1:]
  model = baselines.TorchLM(**{f: int(config.model[f]) for f in ("vocab", "width", "depth",
                                                                   "heads", "context")})
  for name, module in model.named_modules():
    if name:  # each module's forward in a named range, read back as the op's module
      module.forward = _named(module.forward, f"module:{name}", record_function)
  matrices = [p for p in model.parameters() if p.ndim >= 2]
  rest = [p for p in model.parameters() if p.ndim < 2]
  opt = torch.optim.AdamW([{"params": matrices, "weight_decay": 0.1},
                           {"params": rest, "weight_decay": 0.0}], lr=3e-3, betas=(0.9, 0.95))
  loss_fn = torch.nn.CrossEntropyLoss()

  def step():
    opt.zero_grad(set_to_none=True)
    with record_function("phase:fwd"):
      out = model(x)
      with record_function("module:loss"):
        loss = loss_fn(out.flatten(0, 1), y.flatten())
    with record_function("phase:bwd"):
      loss.backward()
    with record_function("phase:opt"):
      torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
      opt.step()

  for _ in range(steps):
    step()
  start = time.perf_counter()
  for _ in range(steps):
    step()
  wall = (time.perf_counter() - start) / steps * 1e3
  with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
    for _ in range(steps):
      step()
  table: dict = collections.Counter()
  per_op: dict = collections.Counter()
  for e in prof.events():
    if e.self_cpu_time_total <= 0 or e.name.startswith(("phase:", "module:")):
      continue
    chain, p = [], e.cpu_parent
    while p is not None:
      chain.append(p.name)
      p = p.cpu_parent
    phase = next((c[6:] for c in chain if c.startswith("phase:")), "")
    module = next((c for c in chain if c.startswith("module:")), "")
    node = next((c for c in chain if "Backward" in c), "")
    if phase == "opt" or e.name.startswith("Optimizer"):
      cls, phase = "optimizer (clip + AdamW)", ""
    elif e.name in ("aten::mm", "aten::addmm", "aten::bmm") and "SDPA" not in node:
      cls = _matmul_by_dims({d for shape in e.input_shapes for d in (shape or ())})
    elif "scaled_dot_product" in e.name or "ScaledDotProduct" in node:
      cls = "attention fused (SDPA)"
    elif phase == "bwd":
      cls = next((c for k, c in _TORCH_BACKWARD if k in node or k.lower() in e.name),
                 "other (copies, transposes, ...)")
    elif "gelu" in e.name:
      cls = "GELU"
    elif module.endswith("norm"):
      cls = "norms (RMSNorm)"
    elif module == "module:loss":
      cls = "cross-entropy"
    elif module == "module:embed" or "embedding" in e.name:
      cls = "embedding gather / scatter"
    elif e.name in ("aten::add", "aten::add_") and module.startswith("module:blocks"):
      cls = "residual adds"
    else:
      cls = "other (copies, transposes, ...)"
    table[(cls, phase)] += e.self_cpu_time_total / 1e3 / steps
    per_op[(e.name, cls, phase)] += e.self_cpu_time_total / 1e3 / steps
  return wall, table, per_op.most_common(_TOP.value)


def _named(forward, name, record_function):
  def wrapped(*args, **kwargs):
    with record_function(name):
      return forward(*args, **kwargs)
  return wrapped


# ----------------------------------------------------------------------------- report


def _rows(results: dict) -> list[str]:
  names = list(results)
  head = "| class | " + " | ".join(f"{n} fwd | {n} bwd" for n in names) + " |"
  out = [head, "|---|" + "---:|" * (2 * len(names))]
  totals = collections.Counter()
  for cls in CLASSES:
    cells = []
    for n in names:
      table = results[n][1]
      fwd = table.get((cls, "fwd"), 0.0) + table.get((cls, ""), 0.0)
      bwd = table.get((cls, "bwd"), 0.0)
      totals[n] += fwd + bwd
      cells += [f"{fwd:.1f}" if fwd else "", f"{bwd:.1f}" if bwd else ""]
    if any(cells):
      out.append(f"| {cls} | " + " | ".join(cells) + " |")
  out.append("| **sum of op times** | " + " | ".join(f"**{totals[n]:.1f}** | " for n in names)
             + " |")
  out.append("| wall time per step | " + " | ".join(f"{results[n][0]:.1f} | " for n in names)
             + " |")
  return out


def main(argv):
  del argv
  threads = _THREADS.value
  if threads < 1:
    raise app.UsageError(f"--threads: must be positive; got {threads}")
  unknown = set(_FRAMEWORKS.value) - {"jax", "torch"}
  if unknown:
    raise app.UsageError(f"--frameworks: unknown {', '.join(sorted(unknown))}; valid choices: "
                         "jax, torch")
  cores = sorted(os.sched_getaffinity(0))[:threads]
  os.sched_setaffinity(0, cores)  # before either runtime starts its threads
  print(f"cores {cores}, load average {os.getloadavg()[0]:.2f} at the start")
  results = {}
  if "jax" in _FRAMEWORKS.value:
    try:
      results["JAX"] = profile_jax(_STEPS.value)
    except ValueError as e:  # a config field's value, named in the message
      raise SystemExit(f"error: {e}") from None
  if "torch" in _FRAMEWORKS.value:
    results["PyTorch"] = profile_torch(_STEPS.value, threads)
  print(f"ms per step, {threads} thread(s), load average {os.getloadavg()[0]:.2f} at the end")
  print("\n".join(_rows(results)))
  for n, (_, _, top) in results.items():
    print(f"\nslowest ops, {n} (ms per step):")
    for (name, cls, phase), ms in top:
      print(f"  {ms:7.2f}  {name}  [{cls} {phase}]")


if __name__ == "__main__":
  app.run(main)
