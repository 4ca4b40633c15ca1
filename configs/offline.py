"""Offline alignment: a registry loss on a fixed preference task, reference frozen.

`data.task` picks the pairs: D_golden (`env_pairs_golden`), a replayed online
stream (`data.replay_dir` with `data.replay_order` ordered | shuffled |
window, `data.replay_window` batches), or an imported user task.
Variants: tiny, default, paper (the paper's offline IPO: lr 1e-5, beta 0.1,
batch 32).
"""
from alignment import config as C


def get_config(arg: str = "tiny"):
  c = C.base_config("offline")
  c.data.task = "env_pairs_golden"
  c.data.replay_dir = ""        # a D_online stream written by an online run
  c.data.replay_order = "ordered"  # ordered | shuffled | window
  c.data.replay_window = 4      # batches per shuffle window (replay_order=window)
  c.data.replay_skip = 0        # start this many batches into the stream (shift test)
  c.loss = C.loss_section("ipo", beta=0.1)
  c.init = C.ConfigDict(dict(policy="", reference=""))  # SFT export(s); reference "" = policy
  c.eval = C.eval_section()
  if arg == "tiny":
    c.data.task = "env_tiny_pairs_golden"
    c.eval.update(prompts_task="env_tiny_prompts", pairs_task="env_tiny_pairs_golden",
                  kl_prompts=16, win_prompts=32, classifier_pairs=16, batch_size=16)
    c.model.name = "t5-nano"
    c.data.update(batch_size=8)
    c.optimizer.update(learning_rate=1e-3)
    c.train.update(num_steps=20, log_every=5, checkpoint_every=10)
  elif arg == "default":
    c.model.name = "t5-tiny"
    c.data.update(batch_size=32)
    c.optimizer.update(learning_rate=1e-4)
    c.train.update(num_steps=400, log_every=20, checkpoint_every=50)
  elif arg == "paper":
    c.model.update(name="t5-large", dtype="bfloat16")
    c.mesh.update(data=-1, fsdp=8, tensor=1)  # a 16-chip slice: 2 x 8
    c.data.update(batch_size=32, prompt_len=512, response_len=64)
    c.optimizer.update(learning_rate=1e-5)
    c.train.update(num_steps=4000, log_every=50, checkpoint_every=500)
  else:
    raise ValueError(f"configs/offline.py: unknown variant {arg!r}; choose tiny, default, paper")
  return C.lock(c)
