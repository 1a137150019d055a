r"""The `tiny` byte-level transformer LM on the Python standard library's sources (CPU, minutes).

Width 128, 2 layers, 4 heads, context 128, batch 16; AdamW with linear warmup and cosine decay.

  python scripts/train.py --config=experiments/lm_tiny.py --workdir=/tmp/lm_tiny
"""

from jaxopt_lab.configs import base_config
from jaxopt_lab.defaults import lm_size_config


def get_config():
  config = base_config("lm")
  size = lm_size_config("tiny")  # width 128, depth 2, heads 4, context 128, batch 16
  config.model.update(size.model)
  config.data.update(size.data)
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 3e-3
  config.optimizer.b2 = 0.95
  config.optimizer.weight_decay = 0.1
  config.optimizer.decay_mask = "matrices"  # no decay of biases and norm scales
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup = 0.05  # fraction of the steps
  config.optimizer.clip_norm = 1.0
  config.train.steps = 600
  config.train.steps_per_call = 20
  # Gradients over parts of 2 windows, averaged: XLA's CPU runtime allocates a program's
  # temporary buffer at every call, and glibc maps one over 32 MB afresh (a page fault per 4 KB);
  # a part's is an eighth of the batch's: the sweep of 8 points ran 1.1-1.2x faster
  # (benchmarks/HISTORY.md, "Micro-batches"). 0 (the whole batch) on an accelerator.
  config.train.microbatch_size = 2
  # The same for the held-out forward passes: 8 windows a batch (the same means), 2.4 s instead
  # of 4.0 s for the 8 points' evaluation of the sweep (benchmarks/README.md, "The LM's
  # held-out evaluation").
  config.data.eval_batch_size = 8
  config.train.log_every = 20
  config.train.eval_every = 200
  config.train.checkpoint_every = 200
  return config
