"""Supervised fine-tuning on both responses of every pair (the paper's SFT start).

Variants: tiny (CPU tests, seconds), default (the embedded study's SFT),
paper (T5.1.1-Large on a user preference task, for TPU).

`criterion` (every variant; off by default): train until the held-out loss levels
off instead of for a fixed number of steps. With patience > 0 the loss `eval/loss`
of the evaluations at `eval.every` / `eval.steps` is watched, and the run stops at
the first evaluation where none of the last `patience` losses is below the best
loss before them by more than `tol` relative (min(last patience) >=
best_before * (1 - tol)); `train.num_steps` is then the cap. It saves the stop's
checkpoint, records `criterion/stopped_at` in metrics.jsonl, evaluates and
exports as at the end of a full run, and resumes to the same stop
(alignment/train/program.py, `Criterion`). patience > 0 needs evaluations
(eval.every > 0 or eval.steps); patience 0 is a fixed train.num_steps, as before.
"""
from alignment import config as C


def get_config(arg: str = "tiny"):
  c = C.base_config("sft")
  c.data.task = "env_sft"
  c.init = C.ConfigDict(dict(policy=""))  # optional params export / run dir to start from
  c.eval = C.ConfigDict(dict(num_batches=4, every=0, steps=[]))  # held-out loss: when
  # Stop once the held-out loss levels off (docstring): 0 evaluations = off.
  c.criterion = C.ConfigDict(dict(patience=0, tol=0.01))
  if arg == "tiny":
    c.data.task = "env_tiny_sft"
    c.model.name = "t5-nano"
    c.data.update(batch_size=8, prompt_len=40, response_len=32)
    c.optimizer.update(learning_rate=3e-3, warmup_steps=5)
    c.train.update(num_steps=30, log_every=10, checkpoint_every=15)
    c.eval.every = 15
    c.eval.num_batches = 2
  elif arg == "default":
    c.model.name = "t5-tiny"
    c.data.update(batch_size=32)
    c.optimizer.update(learning_rate=2e-3, warmup_steps=50, schedule="cosine",
                       decay_steps=1500)
    c.train.update(num_steps=1500, log_every=50, checkpoint_every=500)
    c.eval.every = 500
  elif arg == "paper":
    c.model.update(name="t5-large", dtype="bfloat16")
    c.mesh.update(data=-1, fsdp=8, tensor=1)  # a 16-chip slice: 2 x 8
    c.data.update(batch_size=32, prompt_len=512, response_len=64)
    c.optimizer.update(learning_rate=1e-4, warmup_steps=500)
    c.train.update(num_steps=20000, log_every=100, checkpoint_every=2000)
    c.eval.every = 2000
  else:
    raise ValueError(f"configs/sft.py: unknown variant {arg!r}; choose tiny, default, paper")
  return C.lock(c)
