"""Pairwise preference model (x, y1, y2) -> P(y1 beats y2), trained on D_golden.

The proxy PM of the paper: same size as the policy, initialised from the SFT
policy's backbone, trained by maximum likelihood on golden labels with the
order of each pair randomised. Variants: tiny, default, paper.
"""
from alignment import config as C


def get_config(arg: str = "tiny"):
  c = C.base_config("pm")
  c.head = "pairwise"           # the paper's pairwise PM; "reward": a Bradley-Terry scalar RM
  c.data.task = "env_pairs_golden"
  c.data.replay_dir = ""        # train on a pair-set directory (a study's D_golden) instead
  c.init = C.ConfigDict(dict(backbone=""))  # SFT export / run dir; "" = random init
  c.eval = C.ConfigDict(dict(num_batches=8, pairs_dir="",  # held out: task or a pair set
                             every=0, steps=[]))  # when (and at the end)
  if arg == "tiny":
    c.data.task = "env_tiny_pairs_golden"
    c.model.name = "t5-nano"
    c.data.update(batch_size=8)
    c.optimizer.update(learning_rate=1e-3, warmup_steps=5)
    c.train.update(num_steps=30, log_every=10, checkpoint_every=15)
    c.eval.every = 15
    c.eval.num_batches = 2
  elif arg == "default":
    c.model.name = "t5-tiny"
    c.data.update(batch_size=32)
    c.optimizer.update(learning_rate=1e-3, warmup_steps=50, schedule="cosine", decay_steps=1000)
    c.train.update(num_steps=1000, log_every=50, checkpoint_every=500)
    c.eval.every = 250
  elif arg == "paper":
    c.model.update(name="t5-large", dtype="bfloat16")
    c.mesh.update(data=-1, fsdp=8, tensor=1)  # a 16-chip slice: 2 x 8
    c.data.update(batch_size=32, prompt_len=512, response_len=64)
    c.optimizer.update(learning_rate=1e-5, warmup_steps=100)
    c.train.update(num_steps=10000, log_every=100, checkpoint_every=2000)
    c.eval.every = 1000
  else:
    raise ValueError(f"configs/pm.py: unknown variant {arg!r}; choose tiny, default, paper")
  return C.lock(c)
