"""python -m alignment.study --config=configs/study.py:<scale> --workdir=DIR"""
import sys

from alignment.study.runner import main

if __name__ == "__main__":
  sys.exit(main())
