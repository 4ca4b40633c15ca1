"""A study: the paper's experiments as cached stages, then results.json, report.md, plots.

    python -m alignment.study --config=configs/study.py:default --workdir=runs/study

The package, by job:
  stages       Stage, its hash (config + upstream hashes), running one stage
  plan         Planner: the foundation's and each experiment's stages, in order
  foundation   SFT, D_golden, the proxy PM, the SFT evaluation; the set-up gate
  experiment   the Experiment interface and the registry (a user's module too)
  experiments/ one module per built-in experiment: fig1, losses, h1, h2, h4,
               pair_sets (writer, sec6), rl, staleness, h5
  arms         runs as arms with one shared bootstrap; findings, comparisons, tables
  plots        the PNGs
  report       results.json and report.md, assembled from the experiments
  runner       run (every stage not done, then the report) and the command line
"""
from alignment.study.plan import Planner, log_steps, plan
from alignment.study.runner import main, run
from alignment.study.stages import (Preempted, Stage, config_hash, run_stage, stage_done,
                                    stage_hashes)

__all__ = ["Planner", "Preempted", "Stage", "config_hash", "log_steps", "main", "plan", "run",
           "run_stage", "stage_done", "stage_hashes"]
