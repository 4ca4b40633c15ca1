"""Supervised fine-tuning on both responses of every pair (the paper's SFT start).

Variants: tiny (CPU tests, seconds), default (the embedded study's SFT),
paper (T5.1.1-Large on a user preference task, for TPU).
"""
from alignment import config as C


def get_config(arg: str = "tiny"):
  c = C.base_config("sft")
  c.data.task = "env_sft"
  c.init = C.ConfigDict(dict(policy=""))  # optional params export / run dir to start from
  c.eval = C.ConfigDict(dict(num_batches=4, every=0, steps=[]))  # held-out loss: when
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
