"""`python -m alignment.zoo`: the model zoo's table (see `alignment.models.zoo`)."""
import sys

from alignment.models.zoo import *  # noqa: F401,F403  (re-export for `alignment.zoo.get`)
from alignment.models.zoo import main

if __name__ == "__main__":
  sys.exit(main(sys.argv))
