"""Two runs of a loop compared as a resumed run must equal an uninterrupted one:
every logged number but timings, and the exported parameters, exactly. Shared by
tests/train/test_reliability.py, test_sft_criterion.py and test_stale_resume.py;
imported as `same_run` (pytest.ini puts tests/ on sys.path)."""
import os

import numpy as np

from alignment.train import bookkeeping


def deterministic(workdir):
  """metrics.jsonl's records without their timings (which never repeat)."""
  return [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k}
          for r in bookkeeping.read_metrics(str(workdir))]


def exported_params(workdir) -> dict:
  """{key path: array} of the run's export."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  tree = ocp.PyTreeCheckpointer().restore(os.path.join(workdir, "export", "params"))
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def assert_same_run(a, b):
  assert deterministic(a) == deterministic(b)
  pa, pb = exported_params(a), exported_params(b)
  assert pa.keys() == pb.keys()
  for k in pa:
    np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
