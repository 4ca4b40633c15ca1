"""A preemption storm over `python -m alignment.study`, and what the tests compare after it.

`storm(...)` starts the study's command, interrupts it, starts the same command
again, and so on until it ends with its completion line: each attempt carries the
planned fault points that have not fired yet (ALIGNMENT_FAULT, `alignment.faults`:
pair-set generation, evaluation, a checkpoint, between stages, the report; the first
of each point), of which the first its run reaches fires, and, by a seeded draw, a
SIGTERM or SIGKILL sent after a random delay, whichever comes first. After every attempt `check` looks at the workdir (the
tests: every stage marked done has its whole output). Returns one record per attempt
and the totals: interruptions, stage starts, wall time.

`same_results` is tools' same-results check (timings aside), `timeless_report` a
report.md without its timing lines, `stage_outputs` what a finished stage holds.
"""
from __future__ import annotations

import dataclasses
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional

import numpy as np
import xla_env  # tests/xla_env.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DONE = "[study] wrote "
STALE = "taking over a stale lock"
# Exit statuses of an interrupted attempt: killed (-9), SIGTERM before the study held its
# lock (-15) or after (SystemExit 128 + 15), or 0 after a loop stopped on SIGTERM (Preempted).
INTERRUPTED = (-signal.SIGKILL, -signal.SIGTERM, 128 + signal.SIGTERM, 0)
VOLATILE = ("second", "time", "elapsed", "date", "wall", "started", "host", "pid", "workdir",
            "path")


def study_env(data_dir: str, xla_cache: str, **extra) -> dict:
  """The environment of a study subprocess: CPU, 8 fake devices, the given data
  directory and XLA cache, no fault planned."""
  env = {k: v for k, v in os.environ.items() if k != "ALIGNMENT_FAULT"}
  env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS=xla_env.flags(8),
             ALIGNMENT_DATA_DIR=data_dir, ALIGNMENT_XLA_CACHE=xla_cache,
             JAX_COMPILATION_CACHE_DIR=xla_cache, **extra)
  return env


def study_cmd(workdir: str, overrides: list[str]) -> list[str]:
  return [sys.executable, "-u", "-m", "alignment.study", "--config=configs/study.py:smoke",
          f"--workdir={workdir}", *(f"--config.{o}" for o in overrides)]


@dataclasses.dataclass
class Attempt:
  fault: str            # the fault points it carried; once run, those that fired
  signal: str           # "SIGTERM@12.3s" planned by the draw ("" none)
  how: str = ""         # what ended it: "fault", "SIGTERM", "SIGKILL" or "finished"
  returncode: int = 0
  landed: str = ""      # the last stage it had started (or "report", "start-up")
  stages_started: int = 0
  seconds: float = 0.0
  took_over_lock: bool = False


def storm(cmd: list[str], env: dict, workdir: str, faults: list[str], seed: int,
          min_interruptions: int, check: Callable[[str], None],
          p_signal: float = 0.5, delay: tuple[float, float] = (3.0, 25.0),
          max_attempts: int = 60) -> dict:
  """Runs `cmd` under a storm until it finishes; see the module docstring."""
  rng = np.random.default_rng(seed)
  pending, attempts, stale = list(faults), [], False
  t0 = time.time()
  while len(attempts) < max_attempts:
    interrupted = sum(a.how != "finished" for a in attempts)
    fault = ",".join(_carried(pending))
    sig: Optional[tuple[int, float]] = None
    if rng.random() < p_signal or (not pending and interrupted < min_interruptions):
      lo, hi = delay if pending else (1.0, 6.0)  # last ones: in start-up or the report
      sig = (int(rng.choice([signal.SIGTERM, signal.SIGKILL])), float(rng.uniform(lo, hi)))
    a = _attempt(cmd, env, fault, sig)
    attempts.append(a)
    for fired in a.fault.split("+") if a.how == "fault" else ():
      pending.remove(fired)
    if a.how != "finished":
      assert a.returncode in INTERRUPTED, f"attempt {len(attempts)}: {a}"
    assert not a.stages_started or a.took_over_lock == stale, (
        f"attempt {len(attempts)} after a stale LOCK.json: {a}")
    stale = os.path.exists(os.path.join(workdir, "LOCK.json"))
    check(workdir)
    if a.how == "finished":
      break
  total = time.time() - t0
  return {"attempts": attempts, "interruptions": sum(a.how != "finished" for a in attempts),
          "stages_started": sum(a.stages_started for a in attempts), "seconds": total,
          "faults_left": pending}


def key(spec: str) -> tuple[str, str]:
  point, colon, where = spec.split("@")[1].partition(":")
  return point, where if colon else "*"


def _carried(pending: list[str]) -> list[str]:
  """The pending faults an attempt carries: the first of each (point, where); the one
  that its run reaches first fires (one planned for work already done never does)."""
  seen, out = set(), []
  for spec in pending:
    if key(spec) not in seen:
      seen.add(key(spec))
      out.append(spec)
  return out


def _attempt(cmd, env, fault: str, sig) -> Attempt:
  a = Attempt(fault=fault, signal=sig and f"{signal.Signals(sig[0]).name}@{sig[1]:.1f}s" or "")
  run_env = dict(env, ALIGNMENT_FAULT=fault) if fault else env
  t = time.time()
  with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
    # Files, not pipes: a child never waits on a full pipe while the signal's delay runs.
    p = subprocess.Popen(cmd, cwd=ROOT, env=run_env, stdout=out_f, stderr=err_f, text=True)
    sent = None
    if sig is not None:
      try:
        p.wait(timeout=sig[1])
      except subprocess.TimeoutExpired:
        p.send_signal(sig[0])
        sent = signal.Signals(sig[0]).name
    p.wait(timeout=600)
    out_f.seek(0)
    err_f.seek(0)
    out, err = out_f.read(), err_f.read()
  a.seconds, a.returncode = time.time() - t, p.returncode
  started = re.findall(r"^\[study\] \d+/\d+ (\S+) \(", out, re.M)
  a.stages_started = len(started)
  a.landed = started[-1] if started else "start-up"
  if re.search(r"^\[study\] \d+/\d+ \S+: done \(cached\)", out, re.M) and not started:
    a.landed = "report"
  a.took_over_lock = STALE in err
  fired = re.findall(r"^\[fault\] SIG(KILL|TERM) at (\S+):(\S*)$", err, re.M)
  if fired:  # a SIGTERM's checkpoint may reach a second planned point: both fired
    a.how = "fault"
    a.fault = "+".join(
        next(f for f in fault.split(",") if f.split("@")[0] == action.lower()[:4]
             and key(f) in ((point, where), (point, "*")))
        for action, point, where in fired)
  elif DONE in out and p.returncode == 0:
    a.how = "finished"
  elif sent:
    a.how = sent
  else:
    raise AssertionError(f"attempt ended by itself, status {p.returncode}, without its "
                         f"completion line:\n{err[-3000:]}")
  return a


def same_results(a, b, path: str = "") -> list[str]:
  """The differences of two results.json (as tools' same-results: keys naming times,
  dates, hosts, pids or paths left out; numbers exactly)."""
  out = []
  if isinstance(a, dict) and isinstance(b, dict):
    for k in sorted(set(a) | set(b)):
      if any(t in k.lower() for t in VOLATILE):
        continue
      if k not in a or k not in b:
        out.append(f"{path}/{k}: only in {'b' if k in b else 'a'}")
      else:
        out += same_results(a[k], b[k], f"{path}/{k}")
  elif isinstance(a, list) and isinstance(b, list):
    if len(a) != len(b):
      out.append(f"{path}: {len(a)} != {len(b)} items")
    for i, (x, y) in enumerate(zip(a, b)):
      out += same_results(x, y, f"{path}[{i}]")
  elif a != b and not (a != a and b != b):  # NaN equals NaN here
    out.append(f"{path}: {str(a)[:60]} != {str(b)[:60]}")
  return out


def timeless_report(text: str) -> str:
  """report.md less its timings: the stages table's seconds and the total stage time."""
  text = re.sub(r"^(\| \S+ \| \S+ \|) [\d.]+ \|$", r"\1 - |", text, flags=re.M)
  return re.sub(r"^Total stage time: .*$", "", text, flags=re.M)


def stage_outputs(stage_dir: str) -> dict[str, Optional[bytes]]:
  """What a finished stage holds, by relative path: the bytes of its data (pair-set
  chunks and settings, evaluation arrays and samples, export configs), None for the
  files that must merely exist (an export's commit marker); not its checkpoints, logs,
  lock or marker, whose contents record times. A directory's TFRecord chunks count as
  their records in order, each by its features (a chunk's name holds the sha256 of its
  bytes, and a feature map's serialised order varies from process to process)."""
  out = {}
  for dirpath, _, names in os.walk(stage_dir):
    rel_dir = os.path.relpath(dirpath, stage_dir)
    if rel_dir.split(os.sep)[0] in ("checkpoints", "tb"):
      continue
    chunks = sorted(n for n in names if n.endswith(".tfrecord"))  # by their first step
    if chunks:  # a resumed stream may cut its chunks elsewhere: their records count
      data = b""
      for name in chunks:
        with open(os.path.join(dirpath, name), "rb") as f:
          data += f.read()
      out[os.path.normpath(os.path.join(rel_dir, "*.tfrecord"))] = _examples(data)
    for name in names:
      rel = os.path.normpath(os.path.join(rel_dir, name))
      if name.endswith((".npz", "stream.json", "_samples.json", "model_config.json",
                        "vocabulary.json")):
        with open(os.path.join(dirpath, name), "rb") as f:
          out[rel] = f.read()
      elif name == "commit_success.txt" and rel_dir.endswith("params"):
        out[rel] = None
  return out


def _examples(data: bytes) -> bytes:
  """A TFRecord file's tf.train.Examples, each as its features sorted by name."""
  from alignment.data.tf_setup import tf  # pylint: disable=g-import-not-at-top
  out, i = [], 0
  while i < len(data):
    n = struct.unpack("<Q", data[i:i + 8])[0]
    example = tf.train.Example.FromString(data[i + 12:i + 12 + n])
    out.append(sorted((k, tuple(f.int64_list.value), tuple(f.float_list.value),
                       tuple(f.bytes_list.value)) for k, f in example.features.feature.items()))
    i += 16 + n
  return repr(out).encode()
