"""README.md's own commands, run as written, so that the README cannot drift from
the code (issue 26.6: its export example once failed on its relative --params).

Every command of README.md's indented blocks is either run here or listed in
SKIPPED with the reason; a command that is neither fails the test. Those that
run go in one fresh `bash -e` chain in a temporary directory (the paths as
written, relative to it), at toy sizes: the import, the export and the
generate commands. The inputs they name are made first: the fixtures' JSONL
as pairs.jsonl and comparisons.jsonl, a tiny tokenizer as
llama3/tokenizer.json, and a tiny byte-vocabulary llama-nano policy as
runs/online/export (written in-process, as the online loop writes its export).
The "Running experiments" block (four `alignment.main` runs at their `tiny`
sizes) is not run: on a busy 2-core machine its SFT alone takes 26 s and the
four about 2.5 minutes, over this suite's budget; tests/train runs those
loops (and tests/data/test_data_user_tasks.py `alignment.main` in a fresh
process).
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

from alignment import checkpoint
from alignment.data import vocab as V
from alignment.models import zoo
from hf_tokenizer import FIXTURES, ROOT, build_tokenizer
import xla_env  # tests/xla_env.py
import zoo_params  # tests/zoo_params.py

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# A command's first words -> why it is not run here.
SKIPPED = {
    "make study": "the whole default study (12 minutes)",
    "make test": "the whole suite",
    "python -m alignment.main --config=configs/sft.py:tiny": "Running experiments: "
    "the four tiny loops take about 2.5 minutes here (module docstring)",
    "python -m alignment.main --config=configs/pm.py:tiny": "as the SFT run",
    "python -m alignment.main --config=configs/online.py:tiny": "as the SFT run",
    "python -m alignment.main --config=configs/offline.py:tiny": "as the SFT run",
    "python -m alignment.main --config=configs/offline.py:default": "the default scale, "
    "from a placeholder SFT/export",
    "python -m alignment.data.import_pairs --input=ultrafeedback/data": "needs "
    "UltraFeedback and Llama-3.2-1B-Instruct, downloads",
    "python -m alignment.data.import_pairs --input=chat_pairs.parquet": "the study "
    "recipe's import: a user's Parquet file with Llama-3.2-1B-Instruct's tokenizer, "
    "downloads (tests/study/test_study_real.py runs the recipe tiny)",
    "python -m alignment.study": "a study (minutes to hours; tests/study runs the smoke "
    "scale in-process and the real-data recipe tiny in a fresh process)",
    "cat runs/real/report.md": "reads the study's report",
    "python -m alignment.models.export --params=runs/real/": "exports the study's "
    "aligned policy (tests/study/test_study_real.py exports its tiny one)",
    "python -m alignment.generate --params=hf_real": "samples from that export "
    "(tests/study/test_study_real.py, with --messages)",
    "MODULE=alignment.study launch/local.sh": "a 2-process study "
    "(tests/distributed/test_multiprocess_study.py)",
    "error: process 1 of 2": "an error message, not a command",
    "python -m alignment.aot": "compiles the paper-scale loop for a TPU topology (libtpu)",
    "python launch/tpu.py": "creates a Cloud TPU slice",
}


def readme_commands(text: str) -> list[str]:
  """The commands of the indented blocks (4+ spaces after a blank line), with
  continuation lines joined and trailing comments dropped."""
  commands, block, prev_blank = [], False, True
  for line in text.splitlines():
    indented = re.match(r"^ {4,}\S", line) is not None
    block = indented and (block or prev_blank)
    prev_blank = not line.strip()
    if not block:
      continue
    line = re.sub(r"\s+#\s.*$", "", line.strip())
    if commands and commands[-1].endswith("\\"):
      commands[-1] = commands[-1][:-1].rstrip() + " " + line
    else:
      commands.append(line)
  return commands


def _runnable(command: str) -> str:
  """The command as a shell runs it: `python` is this interpreter; README's
  [optional flags] are left out."""
  command = re.sub(r"\s*\[[^\]]*\]", "", command)
  return re.sub(r"^python ", f"{sys.executable} ", command)


def test_every_readme_command_runs_or_says_why_not(tmp_path):
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    commands = readme_commands(f.read())
  run = [c for c in commands if not any(c.startswith(s) for s in SKIPPED)]
  expected = ("python -m alignment.data.import_pairs --input=pairs.jsonl",
              "python -m alignment.data.import_pairs --input=comparisons.jsonl --format=tldr "
              "--output=data/tldr --vocab=llama3/tokenizer.json",
              "python -m alignment.models.export --params=runs/online/export",
              "python -m alignment.generate --params=hf_policy")
  assert [next((e for e in expected if c.startswith(e)), c) for c in run] == list(expected), (
      "a README command is neither run nor listed in SKIPPED with its reason: "
      f"{[c for c in run if not c.startswith(expected)]}")
  for prefix in SKIPPED:  # every skip still names a command of the README
    assert any(c.startswith(prefix) for c in commands), prefix

  shutil.copy(os.path.join(FIXTURES, "pairs.jsonl"), tmp_path / "pairs.jsonl")
  shutil.copy(os.path.join(FIXTURES, "tldr.jsonl"), tmp_path / "comparisons.jsonl")
  build_tokenizer(str(tmp_path / "llama3" / "tokenizer.json"))
  vocab = V.get_vocabulary("byte")
  cfg = zoo.get("llama-nano", vocab_size=vocab.vocab_size)
  params = zoo_params.random_params(cfg, 0, divisor=8)
  checkpoint.export_params(params, cfg, str(tmp_path / "runs/online/export"),
                           tokens=V.token_record(vocab))
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             XLA_FLAGS=xla_env.flags(1))
  proc = subprocess.run(["bash", "-ec", "\n".join(map(_runnable, run))], cwd=tmp_path,
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for made in ("data/mine", "data/tldr", "hf_policy/model.safetensors"):
    assert os.path.exists(tmp_path / made), made
  assert "prompt 0, sample 1:" in proc.stdout, proc.stdout[-2000:]
