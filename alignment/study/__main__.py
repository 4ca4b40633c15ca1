"""python -m alignment.study --config=configs/study.py:<scale> --workdir=DIR [--plan [--peak=G]]

Runs the study (`runner.main`), or with --plan prints every stage it would run with its
estimated time and what is already done, and runs nothing (`cost.main`).
"""
from __future__ import annotations

import sys

from alignment.study import cost, runner


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  if "--plan" in argv:
    return cost.main(argv)
  return runner.main(argv)


if __name__ == "__main__":
  sys.exit(main())
