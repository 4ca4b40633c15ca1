"""Online alignment: sample two responses per prompt, judge them, apply the loss.

The judge is the proxy PM (`judge.kind=proxy`, `judge.checkpoint`) or the
golden judge (`judge.kind=golden`: training against it gives the "golden
policy" the paper uses as the win-rate reference). `sampling.mixture` > 0
draws each response from the reference with that probability (a sequence-level
mixture, after IPO-MD). `train.write_stream` saves D_online for offline replay.
`judge.flip_rate` > 0 flips that share of the golden judge's verdicts (a noisy
golden judge of known quality). `rl.method` = rloo or grpo trains by policy
gradient on `rl.samples` samples per prompt instead (set train.write_stream=False),
e.g.
    --config.rl.method=grpo --config.rl.samples=4 --config.rl.kl=k3
    --config.judge.kind=reward --config.judge.checkpoint=RM/export
Variants: tiny, default, paper.
"""
from alignment import config as C


def get_config(arg: str = "tiny"):
  c = C.base_config("online")
  c.data.task = "env_prompts"
  c.loss = C.loss_section("ipo", beta=0.1)
  c.sampling = C.sampling_section(mixture=0.0)
  c.rl = C.rl_section()  # contrastive (the paper's), or rloo / grpo
  # golden_checkpoint: with kind=golden, a golden PM's export in the program's place.
  # flip_rate: with kind=golden (the program), each verdict flipped with this probability
  # (a noisy golden judge, in [0, 0.5)); which pairs flip is a hash of the pair's content
  # and flip_seed, the same on a resumed run and for the pair swapped (judges.pair_flips).
  c.judge = C.ConfigDict(dict(kind="proxy", checkpoint="", golden_checkpoint="",
                              flip_rate=0.0, flip_seed=0))
  c.init = C.ConfigDict(dict(policy="", reference=""))
  c.train.write_stream = True
  c.eval = C.eval_section()
  if arg == "tiny":
    c.data.task = "env_tiny_prompts"
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
    c.sampling.update(cache_dtype="bfloat16")  # samples have data.response_len tokens
    c.optimizer.update(learning_rate=1e-5)
    c.train.update(num_steps=4000, log_every=50, checkpoint_every=500)
  else:
    raise ValueError(f"configs/online.py: unknown variant {arg!r}; choose tiny, default, paper")
  return C.lock(c)
