"""`python -m alignment.bench <name> --json=FILE`: runs `alignment.bench.main`."""
import sys

from alignment.bench import main

if __name__ == "__main__":
  sys.exit(main())
