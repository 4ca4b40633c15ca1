"""seqio Tasks and Mixtures for the environment (and helpers for user data).

Registered at import, for the default data dir (`tfds_env.default_data_dir()`):
  env_pairs_golden   D_golden: {prompt, chosen, rejected} (+ golden_a, golden_b,
                     golden_prob, label, id untokenised); splits train,
                     validation (held-out pairs), eval
  env_sft_a/_b       {prompt, response}: the first/second response of each pair
  env_sft            Mixture of the two at equal rates: SFT on both responses of
                     every pair, as in the paper (`pipeline.load_records` takes
                     all 2N examples; seqio's own streaming reader samples)
  env_prompts        {prompt}; splits train (online prompts), validation, eval
                     (win-rate prompts), disjoint by construction
and the same with prefix env_byte_ for the byte-scale config. Tests and
studies call `register_env_tasks(config, data_dir, prefix)` for other configs
or directories (registering a name again replaces it).

The source is the TFDS builder of `tfds_env`, generated locally on first use
(never downloaded: `LocalTfdsSource` prepares before anything reads it).
Responses get EOS appended by seqio; prompts do not. Token ids are int32.
"""
from __future__ import annotations

import functools
from typing import Mapping, Sequence

from alignment.data.tf_setup import tf
import seqio

from alignment import config as config_lib
from alignment.data import tfds_env
from alignment.data import vocab as vocab_lib

SPLITS = ("train", "validation", "eval")


class LocalTfdsSource(seqio.TfdsDataSource):
  """A TfdsDataSource over `digest_env/<config>` that generates it locally first."""

  def __init__(self, config: str, data_dir: str | None = None):
    self._config_name = config
    self._data_dir = data_dir or tfds_env.default_data_dir()
    self._prepared = False
    super().__init__(tfds_name=f"{tfds_env.NAME}/{config}:{tfds_env.DigestEnv.VERSION}",
                     tfds_data_dir=self._data_dir, splits=SPLITS, read_only=True)

  def _ensure_prepared(self):
    if not self._prepared:
      tfds_env.prepare(self._config_name, self._data_dir)
      self._prepared = True

  @property
  def tfds_dataset(self):
    self._ensure_prepared()
    return super().tfds_dataset

  def get_dataset(self, *args, **kwargs):
    self._ensure_prepared()
    return super().get_dataset(*args, **kwargs)


def _replace_task(name: str, **kwargs) -> str:
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(name, **kwargs)
  return name


def register_mixture(name: str, tasks: Sequence[str | tuple[str, float]],
                     default_rate: float = 1.0) -> str:
  """Registers (or replaces) a seqio Mixture; its tasks must share output features."""
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(name, list(tasks), default_rate=default_rate)
  return name


def features(vocab, names_with_eos: Mapping[str, bool]) -> dict[str, seqio.Feature]:
  return {n: seqio.Feature(vocab, add_eos=eos, dtype=tf.int32)
          for n, eos in names_with_eos.items()}


_TOKENIZE = functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False)
PAIR_FEATURES = {"prompt": False, "chosen": True, "rejected": True}
SFT_FEATURES = {"prompt": False, "response": True}
PROMPT_FEATURES = {"prompt": False}


def register_env_tasks(config: str = "default", data_dir: str | None = None,
                       prefix: str = "env") -> dict[str, str]:
  """Registers the environment's tasks for a TFDS config; returns {role: name}."""
  vocab = vocab_lib.get_vocabulary(tfds_env.CONFIGS[config].vocab)
  source = LocalTfdsSource(config, data_dir)
  names = {
      "pairs": _replace_task(
          f"{prefix}_pairs_golden", source=source,
          output_features=features(vocab, PAIR_FEATURES),
          preprocessors=[_TOKENIZE, seqio.preprocessors.append_eos]),
      "prompts": _replace_task(
          f"{prefix}_prompts", source=source,
          output_features=features(vocab, PROMPT_FEATURES),
          preprocessors=[functools.partial(seqio.preprocessors.rekey,
                                           key_map={"prompt": "prompt"}),
                         _TOKENIZE]),
  }
  for side in ("a", "b"):
    names[f"sft_{side}"] = _replace_task(
        f"{prefix}_sft_{side}", source=source,
        output_features=features(vocab, SFT_FEATURES),
        preprocessors=[functools.partial(seqio.preprocessors.rekey,
                                         key_map={"prompt": "prompt",
                                                  "response": f"response_{side}"}),
                       _TOKENIZE, seqio.preprocessors.append_eos])
  names["sft"] = register_mixture(f"{prefix}_sft", [names["sft_a"], names["sft_b"]])
  return names


ENV = register_env_tasks("default", prefix="env")
ENV_BYTE = register_env_tasks("byte", prefix="env_byte")
ENV_TINY = register_env_tasks("tiny", prefix="env_tiny")  # 512 pairs: tests and smoke runs


def task_vocabulary(task: str):
  """The seqio vocabulary of a task's prompts (what the golden judge decodes with)."""
  try:
    source = seqio.get_mixture_or_task(task)
  except ValueError:
    raise config_lib.ConfigError(f"config.data.task={task!r}: no such seqio task or mixture "
                                 "(registered: env_*, env_byte_*, imported tasks)") from None
  return source.output_features["prompt"].vocabulary
