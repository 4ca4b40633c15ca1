"""A full disk at each writer: one clear line, nothing half-written, the last good state loads.

Each test arms `enospc@<point>` (alignment.faults), which raises OSError(ENOSPC)
inside the writer after part of its output is on disk, then checks that the
writer left no temporary or partial file and that what was there before still
reads back.
"""
import dataclasses
import errno
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import flags

from alignment import checkpoint, config as config_lib, main
from alignment.study import report
from alignment.data import import_pairs as ip
from alignment.data import stream
from alignment.train import bookkeeping

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def _arm(monkeypatch, fault):
  monkeypatch.setenv("ALIGNMENT_FAULT", fault)


def _is_enospc(e):
  return e.value.errno == errno.ENOSPC


def test_checkpoint_save_leaves_no_trace_and_the_previous_restores(tmp_path, monkeypatch):
  ckpt = checkpoint.Checkpointer(str(tmp_path / "c"), async_save=False)
  state = {"w": jnp.arange(6.0), "step": jnp.asarray(1)}
  ckpt.save(1, state, {"batch": 1})
  _arm(monkeypatch, "enospc@checkpoint:2")
  with pytest.raises(OSError) as e:
    ckpt.save(2, dict(state, step=jnp.asarray(2)), {"batch": 2})
  assert _is_enospc(e)
  assert sorted(os.listdir(tmp_path / "c")) == ["1"]
  again = checkpoint.Checkpointer(str(tmp_path / "c"), async_save=False)  # the next start
  assert again.all_steps() == [1]
  restored, data, _ = again.restore(checkpoint.abstract_like(jax.device_put(state)))
  assert data == {"batch": 1} and int(restored["step"]) == 1


def _rows(step, b=4, lp=3, lr=2):
  z = lambda n: np.full((b, n), step + 1, np.int32)
  return dict(prompt=z(lp), prompt_mask=z(lp) * 0 + 1, response_1=z(lr),
              response_1_mask=z(lr) * 0 + 1, response_2=z(lr), response_2_mask=z(lr) * 0 + 1,
              verdict=np.ones(4, np.int32))


def test_stream_chunk_is_never_partial_and_earlier_chunks_read_back(tmp_path, monkeypatch):
  d = str(tmp_path / "s")
  w = stream.StreamWriter(d, global_batch_size=4, prompt_length=3, response_length=2)
  for s in range(3):
    w.write(s, **_rows(s))
  w.flush()
  _arm(monkeypatch, "enospc@stream:3")
  for s in range(3, 5):
    w.write(s, **_rows(s))
  with pytest.raises(OSError) as e:
    w.flush()
  assert _is_enospc(e) and ".tfrecord.tmp-" in e.value.filename
  monkeypatch.delenv("ALIGNMENT_FAULT")
  names = sorted(os.listdir(d))
  assert len(names) == 2 and names[0].startswith("chunk-000000000-000000002-"), names
  assert sorted(set(stream.read_stream(d)["step"])) == [0, 1, 2]


@dataclasses.dataclass
class _Cfg:
  architecture: str = "decoder"
  width: int = 3


def test_export_keeps_the_previous_export(tmp_path, monkeypatch):
  out = str(tmp_path / "export")
  checkpoint.export_params({"w": jnp.ones(3)}, _Cfg(), out)
  _arm(monkeypatch, "enospc@export")
  with pytest.raises(OSError) as e:
    checkpoint.export_params({"w": jnp.zeros(3)}, _Cfg(width=4), out)
  assert _is_enospc(e)
  assert sorted(os.listdir(tmp_path)) == ["export"]  # no export.tmp
  np.testing.assert_array_equal(
      ocp.PyTreeCheckpointer().restore(os.path.join(out, "params"))["w"], np.ones(3))
  with open(os.path.join(out, "model_config.json")) as f:
    assert '"width": 3' in f.read()


def test_report_files_are_replaced_together_or_not_at_all(tmp_path, monkeypatch):
  study = config_lib.load(os.path.join(ROOT, "configs", "study.py:smoke"))
  report.write(study, str(tmp_path), [])
  before = {}
  for n in ("results.json", "report.md", "stage_seconds.json"):  # marked: a rewrite shows
    with open(tmp_path / n, "a") as f:
      f.write("\n")
    before[n] = open(tmp_path / n).read()
  _arm(monkeypatch, "enospc@report")
  with pytest.raises(OSError) as e:
    report.write(study, str(tmp_path), [])
  assert _is_enospc(e)
  assert sorted(os.listdir(tmp_path)) == ["report.md", "results.json", "stage_seconds.json"]
  assert {n: open(tmp_path / n).read() for n in before} == before


def test_import_leaves_no_directory_and_keeps_the_old_one(tmp_path, monkeypatch, capsys):
  out = str(tmp_path / "imported")
  ip.import_file(os.path.join(FIXTURES, "hh.jsonl"), "hh", out)
  _arm(monkeypatch, "enospc@import")
  assert ip.main([f"--input={os.path.join(FIXTURES, 'pairs.jsonl')}", "--format=jsonl",
                  f"--output={out}", "--overwrite"]) == 2
  err = [l for l in capsys.readouterr().err.splitlines() if not l.startswith("[fault]")]
  assert len(err) == 1 and err[0].startswith("import_pairs: error: no space left on device")
  assert os.listdir(tmp_path) == ["imported"]
  monkeypatch.delenv("ALIGNMENT_FAULT")
  assert ip.read_metadata(out)["source_format"] == "hh"
  with pytest.raises(OSError):  # and into a new directory: nothing at all
    _arm(monkeypatch, "enospc@import")
    ip.import_file(os.path.join(FIXTURES, "hh.jsonl"), "hh", str(tmp_path / "new"))
  assert os.listdir(tmp_path) == ["imported"]


def test_main_ends_with_one_line_and_status_2(tmp_path, monkeypatch, capsys):
  """The entry point itself: a runner whose stream write hits a full disk."""
  def fake_run(config, workdir):
    del config
    w = stream.StreamWriter(os.path.join(workdir, "stream"), global_batch_size=4,
                            prompt_length=3, response_length=2)
    w.write(0, **_rows(0))
    w.flush()

  monkeypatch.setitem(sys.modules, "fake_runner", types.SimpleNamespace(run=fake_run))
  monkeypatch.setitem(main.RUNNERS, "online", "fake_runner")
  _arm(monkeypatch, "enospc@stream")
  flags.FLAGS(["main", f"--config={ROOT}/configs/online.py:tiny",
               f"--workdir={tmp_path / 'run'}"])
  try:
    with pytest.raises(SystemExit) as e:
      main.main(["main"])
  finally:
    flags.FLAGS.unparse_flags()
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert [l for l in err if not l.startswith("[fault]")] == [
      f"error: no space left on device (writing {tmp_path}/run/stream/"
      f"chunk-000000000-000000000-h0000.tfrecord.tmp-{os.getpid()}): nothing half-written "
      "was kept; free space and rerun the same command to continue from the last complete "
      "checkpoint"]
  assert sorted(os.listdir(tmp_path / "run" / "stream")) == ["stream.json"]
  assert not os.path.exists(tmp_path / "run" / "LOCK.json")  # released on the error path


def test_metrics_log_keeps_no_torn_record(tmp_path, monkeypatch):
  log = bookkeeping.RunLog(str(tmp_path), 10)
  log.write(1, {"loss": 1.0}, console=False)
  _arm(monkeypatch, "enospc@metrics")
  with pytest.raises(OSError) as e:
    log.write(2, {"loss": 2.0}, console=False)
  assert _is_enospc(e)
  monkeypatch.delenv("ALIGNMENT_FAULT")
  log.close()
  assert bookkeeping.read_metrics(str(tmp_path)) == [{"step": 1, "loss": 1.0}]
