"""The study of PAPER.md as stages (alignment.study): SFT -> D_golden -> proxy PM ->
online and offline runs over a sweep -> evaluation at checkpoints -> ablations.

Scales:
  smoke    t5-nano on the 512-pair env_tiny tasks, a few steps per stage: checks
           the pipeline and the results schema in a few minutes (tests run it).
  default  the embedded study: t5-tiny policies and PMs on the full environment,
           sized for at most 30 minutes on 2 CPU cores (`make study`).
  tpu      the paper's set-up on a pod slice: T5-Large policy and proxy PM, the
           paper's hyper-parameters and step counts (lr 1e-5, beta 0.1, 4k
           steps, batch 32); point `tasks` at real preference data imported with
           alignment.data.import_pairs and `golden_pm` at a golden PM export.

Every stage's experiment config is the experiment file's `base_variant`
(configs/<exp>.py:<variant>) with the overrides below, so a stage can be rerun
by hand with the same flags (report.md lists them).
"""
from alignment import config as C


def get_config(arg: str = "smoke"):
  c = C.ConfigDict()
  c.scale = arg
  c.seed = 0
  c.base_variant = "default"
  c.prefix = "env"                    # tasks: <prefix>_sft, _pairs_golden, _prompts
  c.model = "t5-tiny"
  c.sizes = ["t5-nano", "t5-tiny"]   # H5: policy (and PM) sizes
  c.batch_size = 32
  c.experiments = ["fig1", "h1", "h2", "h4", "h5", "sec6"]  # H3 reads every run
  c.sft = C.ConfigDict(dict(steps=1500, learning_rate=2e-3))
  c.pm = C.ConfigDict(dict(steps=1000, learning_rate=1e-3, max_records=8000))
  c.online = C.ConfigDict(dict(steps=300, learning_rate=3e-4, beta=0.1, temperature=1.0))
  c.offline = C.ConfigDict(dict(steps=300, learning_rates=[3e-4], betas=[0.1, 0.5, 1.0]))
  c.h1_windows = [4, 32]              # partial shuffles (batches per window)
  c.eval = C.ConfigDict(dict(every=50, kl_prompts=256, win_prompts=512, classifier_pairs=256,
                             batch_size=64))
  c.golden_policy = False             # True: win rates against a policy trained online
                                      # against the golden judge (the paper's reference)
  c.loss_variants = ["dpo", "slic"]   # fig1 with these losses too when "losses" is listed
  c.workers = 1                       # stages run concurrently (independent ones)
  if arg == "smoke":
    c.base_variant = "tiny"
    c.prefix = "env_tiny"
    c.model = "t5-nano"
    c.sizes = ["t5-nano"]
    c.batch_size = 8
    c.sft.update(steps=20, learning_rate=5e-3)
    c.pm.update(steps=10, max_records=0)
    c.online.update(steps=8)
    c.offline.update(steps=8, betas=[0.1])
    c.h1_windows = [2]
    c.eval.update(every=4, kl_prompts=16, win_prompts=32, classifier_pairs=16, batch_size=16)
  elif arg == "default":
    pass
  elif arg == "tpu":
    c.base_variant = "paper"
    c.model = "t5-large"
    c.sizes = ["t5-large", "t5-xl"]
    c.sft.update(steps=20000, learning_rate=1e-4)
    c.pm.update(steps=10000, learning_rate=1e-5, max_records=0)
    c.online.update(steps=4000, learning_rate=1e-5, beta=0.1)
    c.offline.update(steps=4000, learning_rates=[3e-6, 1e-5, 3e-5], betas=[0.1, 0.5, 1.0])
    c.h1_windows = [4, 500]
    c.eval.update(every=500, kl_prompts=256, win_prompts=2048, classifier_pairs=256,
                  batch_size=64)
    c.golden_policy = True
  else:
    raise ValueError(f"configs/study.py: unknown scale {arg!r}; choose smoke, default, tpu")
  return C.lock(c)
