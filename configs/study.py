"""The study of the paper as stages (alignment.study): SFT -> D_golden (pairs of SFT
samples, golden-labelled) -> proxy PM -> online and offline runs over seeds ->
evaluation at log-spaced steps -> ablations -> a report whose verdicts carry intervals.

Scales:
  smoke    t5-nano on the 512-pair env_tiny tasks, a few steps per stage, two seeds:
           checks the pipeline and the results schema in minutes (tests run it).
  default  the embedded study (`make study`): t5-tiny policy and proxy PM, three seeds
           per arm: Fig. 1 (with H3) and the attribution (online IPO judged by the golden
           judge, offline IPO on D_golden relabelled by the proxy); sized for at
           most 30 minutes on 2 CPU cores from a fresh clone at the slow end (README,
           "Choosing the default scale", has the measurements behind the sizes and
           steps).
  full     the larger scale (`make study-full`): the default, with both modes of Fig. 1
           over the same learning-rate x beta grid (pooled per mode) and Fig. 1 and
           the attribution on a second, redrawn foundation, plus H1, H2, H4,
           offline on the writer's pairs and section 6 (pair sets), H5 (t5-nano and
           t5-mini policies against the same proxy PM and reference), the DPO/SLiC
           rows, and beyond the paper: `rl` (RLOO and GRPO with a scalar reward model and with
           the pairwise PM) and `staleness` (online IPO sampling k steps behind); every
           arm over the three seeds; and `judge` (online IPO against judges of known
           quality: the golden judge with flipped verdicts, PMs on 1/4 and 4x D_golden's
           pairs and of the t5-mini and t5-midi sizes, each against offline IPO).
  real     the study from your own rater-labelled pairs (--config.import_dir=DIR, an
           import_pairs directory with --validation_fraction; chat pairs rendered with
           a model's chat template too: every sampler stops at the tokenizer's EOS
           and at the template's end-of-turn token): a golden PM trained on
           the raters' labels takes the golden judge's place (it labels D_golden, scores
           every golden win rate and is the online judge.kind="golden"); SFT is on the
           import's chosen responses. Sizes as default; experiments fig1, attribution,
           h1, h2, h4 (writer and sec6 need golden scores of the writer's responses).
           README, "The study from your own data", has the commands.
  Any scale takes --config.experiments="['fig1','rl','staleness']" (rl and staleness
  compare against Fig. 1's arms, so list fig1 too).
  scaling  H5's two axes on a workstation (`make study-scaling`): policy sizes t5-nano to
           t5-mini (each its own SFT, trained until its held-out loss levels off, its
           rate scaled by width and then chosen from a grid of three by the held-out
           loss of 500-step pilots) and proxy PMs of t5-nano, t5-tiny and t5-mini at the
           t5-tiny policy, online and offline IPO over three seeds; Gao et al.'s laws fitted per
           arm decide H5. scaling_smoke: the same experiment at toy sizes (tests run it).
  tpu      the paper's set-up on a pod slice: T5-Large policy and proxy PM, the paper's
           hyper-parameters and step counts (lr 1e-5, beta 0.1, 4k steps, batch 32),
           both modes swept over beta; point `prefix` at tasks of real data.

Every stage's experiment config is the experiment file's `base_variant`
(configs/<exp>.py:<variant>) with the overrides the study sets, so a stage can be
rerun by hand with the same flags (each STAGE.json records its config).
"""
from alignment import config as C


def _toy(c):
  """The toy sizes of the smoke scales: t5-nano on the 512-pair env_tiny tasks, a few
  steps per stage, two seeds (one per ablation arm): they check the pipeline."""
  c.base_variant = "tiny"
  c.prefix = "env_tiny"
  c.model = "t5-nano"
  c.seeds = [0, 1]
  c.ablation_seeds = [0]
  c.batch_size = 8
  c.num_pairs = 64
  c.held_out_pairs = 64
  c.tie_slack = 0.5
  c.sample_batch = 32
  c.sft.update(steps=20, learning_rate=5e-3)
  c.pm.update(steps=10)
  c.online.update(steps=8)
  c.offline.update(steps=8)
  c.checkpoint_every = 4
  c.eval.update(points=3, first=2, kl_prompts=16, win_prompts=32, proxy_prompts=16,
                classifier_pairs=16, batch_size=16)
  c.bootstrap = 200


def get_config(arg: str = "smoke"):
  c = C.ConfigDict()
  c.scale = arg
  c.seed = 0
  c.foundations = 1                  # foundation draws (SFT, D_golden, proxy PM): f >= 1
                                     # is redrawn at study seed seed + 1000 f, in f<f>/
  c.foundation_experiments = ["fig1", "attribution"]  # planned again on each redrawn
                                     # foundation (their arms pool over foundations, and
                                     # their intervals carry its variance); the rest run
                                     # on the first foundation only
  c.seeds = [0, 1, 2]                # Fig. 1 and attribution arms: one run per seed; the
                                     # seed sets the data order and (online) the sampling
                                     # keys, nothing else
  c.ablation_seeds = []              # the other experiments' arms (H1-H5, pair sets, rl,
                                     # staleness, losses): empty = `seeds`; a subset of
                                     # `seeds` (H1 replays those seeds' online streams).
                                     # An arm with fewer than 3 seeds is shown, not voted
  c.base_variant = "default"
  c.prefix = "env"                   # tasks: <prefix>_sft, _pairs_golden, _prompts
  c.import_dir = ""                  # real data: an import_pairs directory (its tasks
                                     # replace the prefix's; its golden judge is golden_pm)
  c.sft_export = ""                  # your own SFT policy's export (of `model`) instead of
                                     # the sft stage (SFT on the import's chosen responses)
  c.golden_pm = C.ConfigDict(dict(steps=1000, learning_rate=1e-3,  # real data only
                                  eval_batches=8))  # held-out batches of the validation split
  c.model = "t5-tiny"
  c.sizes = ["t5-nano", "t5-tiny", "t5-mini"]  # H5's policy axis: each size its own SFT
  c.scaling = C.ConfigDict(dict(pm_sizes=[]))  # H5's proxy axis: PMs of these sizes (on
                                     # D_golden, each from its size's SFT) at `model`
  c.size_lr = "width"                # learning rates of sizes other than `model`: width
                                     # (x d_model(model) / d_model(size)) | same
  c.batch_size = 32
  c.prompt_len = 40
  c.response_len = 32
  c.experiments = ["fig1", "attribution"]  # H3 reads every run; full: the rest
  # D_golden: what the proxy PM and every offline run train on (the same records).
  c.pairs = "sft"                    # sft (two SFT samples per prompt) | writer | mixed
  c.labels = "argmax"                # golden labels: argmax | sample (from P_golden)
  c.num_pairs = 8000
  c.held_out_pairs = 1024            # pairs of SFT samples on validation prompts: the gate
  c.tie_redraws = 4                  # a tied sample is redrawn this often, then dropped
  c.tie_slack = 0.05                 # extra prompts sampled to make up for dropped ties
  c.sample_batch = 256               # prompts per sampling call when building pair sets
  # SFT: `steps` steps, or with criterion.every > 0 until its held-out loss (every
  # `every` steps) improves by less than `tol` (relative) over `patience` evaluations,
  # `steps` the cap, at a constant rate after warm-up. rates: factors on each SFT's rate;
  # given (empty: off), each SFT runs at the factor whose pilot (its first pilot_steps steps at that
  # rate) ends lowest in held-out SFT loss, and the PMs from its backbone take that factor
  # (alignment.study.rate_search; needs criterion.every > 0).
  c.sft = C.ConfigDict(dict(steps=3000, learning_rate=3e-3, rates=[], pilot_steps=0,
                            criterion=dict(every=0, patience=3, tol=0.01)))
  c.pm = C.ConfigDict(dict(steps=1000, learning_rate=1e-3))
  c.online = C.ConfigDict(dict(steps=200, learning_rate=3e-4, beta=0.1, temperature=1.0))
  c.offline = C.ConfigDict(dict(steps=200, learning_rate=3e-4))
  c.betas = [0.1]                    # Fig. 1 sweep, applied to BOTH modes (one arm per beta)
  c.learning_rates = []              # Fig. 1 sweep x betas, BOTH modes; empty = each mode's
                                     # own learning_rate. The main arms (online_ipo,
                                     # offline_ipo) are at each mode's own rate and
                                     # online.beta, which the grid must contain
  c.h1_windows = [4]                 # partial shuffles (batches per window)
  c.checkpoint_every = 100
  c.eval = C.ConfigDict(dict(points=7, first=5, kl_prompts=256, win_prompts=512,
                             proxy_prompts=256, classifier_pairs=256, batch_size=128))
  c.bootstrap = 2000                 # resamples behind every interval
  c.golden_policy = False            # True: win rates against a policy trained online
                                     # against the golden judge (the paper's reference)
  c.loss_variants = ["dpo", "slic"]  # Fig. 1 with these losses too when "losses" is listed
  # rl: a Bradley-Terry reward model on D_golden (same pairs and steps as the PM), then
  # RLOO and GRPO beside online and offline IPO, same budget and evaluation.
  c.rl = C.ConfigDict(dict(arms=["rloo_rm", "grpo_rm", "grpo_pm"], samples=4, kl="reward",
                           kl_coef=0.05, updates=2, learning_rate=3e-4))
  c.staleness = [1, 4, 16, 64]       # online IPO sampling k steps behind (k = 0: Fig. 1's)
  # judge: online IPO against judges of known quality, each against Fig. 1's offline IPO:
  # the golden judge with these shares of its verdicts flipped (noise), and proxy PMs on a
  # quarter of D_golden, on D_golden (the study's pm: Fig. 1's online IPO), on 4x its
  # pairs, and of these larger sizes (each on its own SFT backbone of that size).
  c.judge_axis = C.ConfigDict(dict(flip_rates=[0.1, 0.2, 0.3], pm_sizes=["t5-mini", "t5-midi"]))
  if arg == "smoke":
    _toy(c)
    c.sizes = ["t5-nano"]
    c.h1_windows = [2]
    c.experiments = ["fig1", "attribution", "h1", "h2", "h4", "sec6"]
    c.staleness = [2]
    c.judge_axis.update(flip_rates=[0.2], pm_sizes=[])  # listed by hand: it runs in minutes
  elif arg == "default":
    pass
  elif arg == "real":
    c.experiments = ["fig1", "attribution", "h1", "h2", "h4"]
  elif arg == "full":
    c.experiments = ["fig1", "attribution", "judge", "h1", "h2", "h4", "sec6", "h5", "losses",
                     "rl", "staleness"]
    c.h1_windows = [4, 32]
    # Both modes at their best: the same learning-rate x beta grid, pooled per mode
    # (the main arms, lr 3e-4 and beta 0.1, are the default scale's).
    c.learning_rates = [1e-4, 3e-4, 1e-3]
    c.betas = [0.1, 0.5]
    # The foundation drawn twice: Fig. 1's and the attribution's intervals carry its
    # variance (f1/: SFT, D_golden, PM and runs at study seed + 1000).
    c.foundations = 2
  elif arg in ("scaling", "scaling_smoke"):
    # H5's two axes with Fig. 1 (the study's size), every SFT trained to the criterion.
    c.experiments = ["fig1", "h5"]
    # Three rungs: with the rate search's pilots, t5-midi's rung (its pilots, SFT, arms and
    # PM) was 108 of --plan's 162 min at 176 GFLOP/s, over the 2 hours this preset is for;
    # a larger machine adds it with --config.sizes and --config.scaling.pm_sizes.
    c.sizes = ["t5-nano", "t5-tiny", "t5-mini"]
    c.scaling.pm_sizes = ["t5-nano", "t5-mini"]
    c.sft.update(steps=4000)
    c.sft.criterion.update(every=250, patience=3, tol=0.01)
    # Each size's SFT rate from this grid on its width-scaled rate, chosen on held-out SFT
    # loss after 500 steps (t5-midi's SFT at the width-scaled rate alone stalled).
    c.sft.update(rates=[1.0, 0.3, 0.1], pilot_steps=500)
    if arg == "scaling_smoke":  # the same experiment at toy sizes (tests run it)
      _toy(c)
      c.sizes = ["t5-nano", "t5-tiny"]
      c.scaling.pm_sizes = ["llama-nano"]  # the decoder family's path through the axis
      c.sft.criterion.update(every=5, patience=2, tol=0.01)
      c.sft.update(rates=[2.0, 0.5], pilot_steps=5)  # neither 1: the factor shows
  elif arg == "tpu":
    c.base_variant = "paper"
    c.model = "t5-large"
    c.sizes = ["t5-base", "t5-large", "t5-xl"]
    c.scaling.pm_sizes = ["t5-base", "t5-xl"]
    c.experiments = ["fig1", "attribution", "h1", "h2", "h4", "sec6", "h5"]
    c.prompt_len, c.response_len = 512, 64
    c.num_pairs = 92000
    c.sample_batch = 512
    c.sft.update(steps=20000, learning_rate=1e-4)  # the cap: trained to the criterion
    c.sft.criterion.update(every=1000, patience=3, tol=0.005)
    c.sft.update(rates=[1.0, 0.3, 0.1], pilot_steps=2000)
    c.pm.update(steps=10000, learning_rate=1e-5)
    c.online.update(steps=4000, learning_rate=1e-5, beta=0.1)
    c.offline.update(steps=4000, learning_rate=1e-5)
    c.betas = [0.1, 0.5, 1.0]
    c.h1_windows = [4, 500]
    c.checkpoint_every = 500
    c.eval.update(points=9, first=50, kl_prompts=256, win_prompts=2048, proxy_prompts=0,
                  classifier_pairs=256, batch_size=64)
    c.golden_policy = True
  else:
    raise ValueError(f"configs/study.py: unknown scale {arg!r}; choose smoke, default, full, "
                     "real, scaling, scaling_smoke, tpu")
  return C.lock(c)
