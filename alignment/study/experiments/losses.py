"""Other losses: Fig. 1 with DPO and SLiC (`loss_variants`), over the ablation seeds.

  online_<loss>_s<k>, offline_<loss>_s<k>   against the proxy PM / on D_golden, at
                                            online.beta (the arms drop the _s<k>)
"""
from __future__ import annotations

from alignment.study.experiment import Experiment


class Losses(Experiment):
  name = "losses"
  title = "Other losses"

  def plan(self, p):
    s = p.s
    for loss in s.loss_variants:
      for k in p.ablation_seeds():
        p.online(f"online_{loss}_s{k}", s.model, loss, s.online.beta, self.group, seed=k,
                 arm=f"online_{loss}")
        p.offline(f"offline_{loss}_s{k}", s.model, loss, s.online.beta, self.group,
                  data=s.pairs + "_pairs", pairs=p.path("pairs", "train"), seed=k,
                  arm=f"offline_{loss}")


EXPERIMENT = Losses()
