"""TFDS builder for the embedded environment, generated locally, never downloaded.

`prepare(config, data_dir)` writes `<data_dir>/digest_env/<config>/<version>`
from `alignment.data.environment` (TFDS writes to a temporary directory and
renames it, so a killed preparation leaves nothing that reads as complete) and
returns the builder; calling it again only reads the dataset info. The
default data dir is $ALIGNMENT_DATA_DIR, else ~/.cache/alignment/tfds.
Processes that prepare one config in one local data dir at once (studies started
side by side) take turns on a lock file, <data_dir>/.digest_env-<config>.lock
(flock: released when its process ends, even killed): the first builds, the
others then find its build and read it. Without the lock the later renames fail.

Configs (sizes in pairs; each example holds one prompt and two responses):
  default    sentencepiece scale, train 50000 / validation 2000 / eval 4096
  byte       byte scale (see environment.env_config), same sizes
  tiny       sentencepiece scale, 512 / 128 / 128 (tests)
  tiny_byte  byte scale, 512 / 128 / 128 (tests)
Features: id, prompt, response_a, response_b, chosen, rejected (text);
golden_a, golden_b, golden_prob = P(a beats b) (float32); label (0: a chosen).

VERSION must change whenever the language, the environment or its defaults
change what is generated; a test pins a digest of the first examples so that
such a change cannot pass silently.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os

from alignment.data.tf_setup import tf  # noqa: F401  (TF without accelerators, first)
import tensorflow_datasets as tfds

from alignment.data import environment as env_lib

NAME = "digest_env"


def default_data_dir() -> str:
  return os.environ.get("ALIGNMENT_DATA_DIR",
                        os.path.join(os.path.expanduser("~"), ".cache", "alignment", "tfds"))


@dataclasses.dataclass(eq=False)
class DigestEnvConfig(tfds.core.BuilderConfig):
  vocab: str = "sentencepiece"
  seed: int = 0
  num_train: int = 50000
  num_validation: int = 2000
  num_eval: int = 4096

  def env(self) -> env_lib.Environment:
    return env_lib.Environment(env_lib.env_config(self.vocab, seed=self.seed))

  def sizes(self) -> dict[str, int]:
    return {"train": self.num_train, "validation": self.num_validation, "eval": self.num_eval}


CONFIGS = {
    "default": DigestEnvConfig(name="default", description="sentencepiece scale"),
    "byte": DigestEnvConfig(name="byte", vocab="byte", description="byte scale"),
    "tiny": DigestEnvConfig(name="tiny", num_train=512, num_validation=128, num_eval=128,
                            description="sentencepiece scale, tiny (tests)"),
    "tiny_byte": DigestEnvConfig(name="tiny_byte", vocab="byte", num_train=512,
                                 num_validation=128, num_eval=128,
                                 description="byte scale, tiny (tests)"),
}


class DigestEnv(tfds.core.GeneratorBasedBuilder):
  """Posts of facts, two mixed-quality digests each, golden labels (alignment.data.environment)."""

  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {"1.0.0": "First release.",
                   "1.1.0": "Six values per attribute; digests state facts in post order.",
                   "1.2.0": "Terse posts, the topic's facts first, at most 40 tokens."}
  BUILDER_CONFIGS = list(CONFIGS.values())
  # Nothing is downloaded, so no checksums file: finding one makes TFDS locate
  # this module through `importlib_resources`, which the pinned set lacks.
  url_infos = None

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text()
    return tfds.core.DatasetInfo(
        builder=self,
        description=env_lib.__doc__.split("\n")[0],
        features=tfds.features.FeaturesDict({
            "id": text, "prompt": text, "response_a": text, "response_b": text,
            "chosen": text, "rejected": text,
            "golden_a": tfds.features.Scalar(tf.float32),
            "golden_b": tfds.features.Scalar(tf.float32),
            "golden_prob": tfds.features.Scalar(tf.float32),
            "label": tfds.features.Scalar(tf.int32),
        }),
        supervised_keys=None,
        disable_shuffling=True,  # records stay in index order: the first N are examples 0..N-1
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded
    return {split: self._generate_examples(split, n)
            for split, n in self.builder_config.sizes().items()}

  def _generate_examples(self, split: str, num: int):
    for ex in self.builder_config.env().examples(split, num):
      yield ex["id"], ex


def prepare(config: str | DigestEnvConfig = "default", data_dir: str | None = None):
  """Generates the dataset locally if it is not there yet; returns the builder."""
  data_dir = data_dir or default_data_dir()
  tfds.disable_progress_bar()
  name = config if isinstance(config, str) else config.name
  with _one_builder(data_dir, name):
    builder = DigestEnv(config=config, data_dir=data_dir)  # after the wait: sees a build
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder


@contextlib.contextmanager
def _one_builder(data_dir: str, config: str):
  """Holds <data_dir>/.digest_env-<config>.lock (an exclusive flock) for the block; a
  URL data dir (gs://...) has no such lock and is not guarded."""
  if "://" in data_dir:
    yield
    return
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, f".{NAME}-{config}.lock"), "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)
