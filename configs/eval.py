"""Evaluate a policy: exact KL to SFT, golden and proxy win rates, classifier accuracy.

    python -m alignment.main --config=configs/eval.py:tiny --workdir=DIR \\
        --config.eval.policy=RUN/checkpoints --config.eval.sft=SFT/export \\
        [--config.eval.proxy=PM/export] [--config.eval.reference=GOLDEN_POLICY/export]

`eval.policy` is an export or a run's checkpoint directory (then every
checkpoint is evaluated). Writes DIR/evaluation.json.
Variants: tiny (small sets, for tests), default (the paper's 256/2048/256),
paper (the same sizes at the paper's lengths).
"""
from alignment import config as C


def get_config(arg: str = "tiny"):
  c = C.base_config("eval")
  c.data.task = "env_prompts"
  c.eval = C.eval_section()
  if arg == "tiny":
    c.data.task = "env_tiny_prompts"
    c.eval.update(prompts_task="env_tiny_prompts", pairs_task="env_tiny_pairs_golden",
                  kl_prompts=16, win_prompts=32, classifier_pairs=16, batch_size=16)
    c.model.name = "t5-nano"
    c.data.update(batch_size=8)
  elif arg == "default":
    c.model.name = "t5-tiny"
  elif arg == "paper":
    c.model.update(name="t5-large", dtype="bfloat16")
    c.mesh.update(data=-1, fsdp=8, tensor=1)
    c.data.update(batch_size=32, prompt_len=512, response_len=64)
  else:
    raise ValueError(f"configs/eval.py: unknown variant {arg!r}; choose tiny, default, paper")
  return C.lock(c)
