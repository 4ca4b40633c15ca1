"""Other losses: Fig. 1 with DPO and SLiC (`loss_variants`), one seed each.

  online_<loss>, offline_<loss>   against the proxy PM / on D_golden, at online.beta
"""
from __future__ import annotations

from alignment.study.experiment import Experiment


class Losses(Experiment):
  name = "losses"
  title = "Other losses"

  def plan(self, p):
    s = p.s
    for loss in s.loss_variants:
      p.online(f"online_{loss}", s.model, loss, s.online.beta, self.group)
      p.offline(f"offline_{loss}", s.model, loss, s.online.beta, self.group,
                data=s.pairs + "_pairs", pairs=p.path("pairs", "train"))


EXPERIMENT = Losses()
