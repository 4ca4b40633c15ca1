"""Several processes preparing the environment into one fresh data directory at once
(studies started side by side): one builds it, the others wait and read its build."""
import concurrent.futures
import os

import numpy as np

from alignment.data import tfds_env


def test_builders_started_together_share_one_build(tmp_path):
  """Three builders started at the same moment (threads: a flock held by one open file
  blocks another open file of the same process as it blocks another process): none
  fails, one dataset is left, no temporary directory beside it, and every builder
  reads the same records."""
  data_dir = str(tmp_path / "data")
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    builders = list(pool.map(lambda _: tfds_env.prepare("tiny", data_dir), range(3)))
  root = os.path.join(data_dir, tfds_env.NAME, "tiny")
  assert os.listdir(root) == [str(tfds_env.DigestEnv.VERSION)]  # no incomplete.* left
  firsts = []
  for builder in builders:
    ds = builder.as_dataset(split="validation")
    firsts.append([ex["id"].numpy() for ex in ds.take(8)])
    assert builder.info.splits["validation"].num_examples == 128
  assert all(np.array_equal(f, firsts[0]) for f in firsts)
