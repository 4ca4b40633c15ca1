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

Imported data (`alignment.data.import_pairs`): wherever a task is named
(`data.task`, `eval.prompts_task`, `eval.pairs_task`, a study's stages) the
name may also be
  an import directory  (a path: it contains "/", or is an existing directory)
                       registered on first use in each process under the name
                       in its metadata.json, with <name>_prompts and <name>_sft
                       beside it;
  an imported name     <name>, <name>_prompts or <name>_sft of an import found through the
                       environment variable ALIGNMENT_TASK_DIRS: directories
                       separated by ":", each an import directory or a folder
                       of them (set it for every process of a multi-host run).
`resolve(task)` does this; `task_vocabulary` and `pipeline.load_records` (the
lookups every loop and every process goes through) call it. A missing or
malformed directory, or a name two directories claim, is one ConfigError
naming it.

The source is the TFDS builder of `tfds_env`, generated locally on first use
(never downloaded: `LocalTfdsSource` prepares before anything reads it).
Responses get EOS appended by seqio; prompts do not. Token ids are int32.
"""
from __future__ import annotations

import functools
import os
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


TASK_DIRS_ENV = "ALIGNMENT_TASK_DIRS"
_IMPORTED: dict[str, str] = {}  # task name -> the import directory it was registered from


def _registered(name: str) -> bool:
  return name in seqio.TaskRegistry.names() or name in seqio.MixtureRegistry.names()


def _register_import(directory: str) -> str:
  """Registers an import directory (once per process); returns its pairs task's name."""
  from alignment.data import import_pairs  # pylint: disable=g-import-not-at-top
  real = os.path.realpath(directory)
  try:
    name = import_pairs.read_metadata(directory)["name"]
    if _IMPORTED.get(name) == real and _registered(name):
      return name
    for taken in (name, name + "_prompts", name + "_sft"):
      if _registered(taken) and _IMPORTED.get(name) != real:
        owner = _IMPORTED.get(name) or "a registered task"
        raise import_pairs.BadInput(
            f"{directory}: its task name {taken!r} is taken by {owner}; import it again "
            "with --name=<another name>")
    import_pairs.register_imported(directory)
  except import_pairs.BadInput as e:
    raise config_lib.ConfigError(str(e)) from None
  _IMPORTED[name] = real
  return name


def _import_dirs_under(entry: str) -> list[str]:
  """An ALIGNMENT_TASK_DIRS entry's import directories: itself, or its subdirectories."""
  from alignment.data import import_pairs  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(entry):
    raise config_lib.ConfigError(f"{TASK_DIRS_ENV}: {entry}: no such directory")
  if os.path.exists(os.path.join(entry, import_pairs.META)):
    return [entry]
  return [os.path.join(entry, d) for d in sorted(os.listdir(entry))
          if os.path.exists(os.path.join(entry, d, import_pairs.META))]


def resolve(task: str) -> str:
  """The registered name of `task`: a seqio task or mixture name as it is, an import
  directory or a name under ALIGNMENT_TASK_DIRS registered first (module docstring).
  An unknown name comes back unchanged (the caller says it does not exist)."""
  from alignment.data import import_pairs  # pylint: disable=g-import-not-at-top
  if _registered(task):
    return task
  if "/" in task or os.sep in task or os.path.isdir(task):
    return _register_import(task)
  for entry in filter(None, os.environ.get(TASK_DIRS_ENV, "").split(":")):
    for directory in _import_dirs_under(entry):
      try:
        name = import_pairs.read_metadata(directory)["name"]
      except import_pairs.BadInput as e:
        raise config_lib.ConfigError(f"{TASK_DIRS_ENV}: {e}") from None
      if task in (name, name + "_prompts", name + "_sft"):
        _register_import(directory)
        return task
  return task


def task_vocabulary(task: str):
  """The seqio vocabulary of a task's prompts (what the golden judge decodes with)."""
  name = resolve(task)  # its ConfigError (a bad import directory) is the message
  try:
    source = seqio.get_mixture_or_task(name)
  except ValueError:
    raise config_lib.ConfigError(
        f"task {task!r}: no such seqio task or mixture, import directory or name under "
        f"{TASK_DIRS_ENV} (registered: env_*, env_byte_*, imported tasks)") from None
  return source.output_features["prompt"].vocabulary
