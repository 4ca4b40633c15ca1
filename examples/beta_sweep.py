"""An experiment of your own: online IPO at two more betas, against Fig. 1's online IPO.

    python -m alignment.study --config=configs/study.py:smoke --workdir=runs/smoke \
        --config.experiments="['fig1', 'examples/beta_sweep.py']"

A module named in study.experiments (by file, or as `examples.beta_sweep` from the
repository's root) defines EXPERIMENT. docs/study.md, "Writing an experiment",
explains each part.
"""
from alignment.study.experiment import Experiment, Section
from alignment.study.experiments import fig1

BETAS = (0.03, 0.3)


class BetaSweep(Experiment):
  name = "beta_sweep"
  title = "Example: online IPO at other betas, against Fig. 1's online IPO"
  needs = {"fig1": "is compared with Fig. 1's online IPO"}

  def plan(self, p):
    """Online IPO per beta and seed: the study's model, steps, rate and judge."""
    s = p.s
    for beta in BETAS:
      for k in p.ablation_seeds():  # an arm needs 3 seeds to be read
        p.online(f"online_ipo_beta{beta:g}_s{k}", s.model, "ipo", beta, self.group, seed=k,
                 arm=f"online_ipo_beta{beta:g}")

  def section(self, ctx, gate, study):
    """Each beta's peak and envelope against Fig. 1's online IPO, with intervals, the
    sentence that reads them, and the curves beside Fig. 1's."""
    arms = self.arms(ctx)
    compared = fig1.against_online_ipo(ctx, arms)
    if not compared:
      return Section(arms)
    sentence = fig1.reading(compared, gate)
    return Section(fig1.online(ctx)[:1] + arms,
                   lines=fig1.comparison_lines(compared, sentence),
                   results={"comparisons": {self.group: compared},
                            "comparison_readings": {self.group: sentence}})


EXPERIMENT = BetaSweep()
