"""One writer per workdir (alignment.lock): refused, taken over when stale, released."""
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import types

import jax
import pytest

from alignment import config as config_lib
from alignment import layout, lock, main, study

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture()
def live_pid():
  """A live process of this host that is not this one."""
  proc = subprocess.Popen(["sleep", "60"])
  yield proc.pid
  proc.kill()
  proc.wait()


def _dead_pid():
  proc = subprocess.Popen(["true"])
  proc.wait()
  return proc.pid


def _plant(workdir, pid, host=None):
  os.makedirs(workdir, exist_ok=True)
  record = {"host": host or socket.gethostname(), "pid": pid, "started": "2026-11-30 09:00:00",
            "command": "python -m alignment.main --workdir=elsewhere"}
  with open(os.path.join(workdir, layout.LOCK), "w") as f:
    json.dump(record, f)
  return record


def test_a_second_holder_is_refused_naming_the_first(tmp_path, live_pid):
  _plant(tmp_path, live_pid)
  with pytest.raises(lock.LockError) as e:
    lock.acquire(str(tmp_path))
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith(f"{tmp_path}/LOCK.json: the workdir is held by")
  assert (f"host {socket.gethostname()}, pid {live_pid}, started 2026-11-30 09:00:00" in msg
          and "python -m alignment.main" in msg), msg
  assert json.load(open(tmp_path / layout.LOCK))["pid"] == live_pid  # left alone


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog, monkeypatch):
  monkeypatch.setattr(logging.getLogger("alignment"), "propagate", True)  # setup_host stops it
  dead = _dead_pid()
  _plant(tmp_path, dead)
  with caplog.at_level(logging.WARNING, logger="alignment"):
    path = lock.acquire(str(tmp_path))
  assert json.load(open(path))["pid"] == os.getpid()
  # One take-over, one record: the same record reaching caplog through two handlers
  # (a full suite's earlier tests in this process can leave both) counts once.
  records = list({id(r): r for r in caplog.records}.values())
  assert [r.getMessage() for r in records] == [
      f"{path}: taking over a stale lock (host {socket.gethostname()}, pid {dead}, started "
      "2026-11-30 09:00:00: no such process)"]
  lock.release(path)
  assert os.listdir(tmp_path) == []


def test_another_hosts_lock_is_never_taken_over(tmp_path):
  _plant(tmp_path, _dead_pid(), host="elsewhere-host")
  with pytest.raises(lock.LockError, match="another host's lock, never taken over "
                     f"automatically: delete {tmp_path}/LOCK.json once"):
    lock.acquire(str(tmp_path))


def test_nested_locks_of_one_process_and_a_stage_of_someone_elses_study(tmp_path, live_pid):
  with lock.held(str(tmp_path)) as outer:  # a study and, inside it, its stage's run
    with lock.held(str(tmp_path / "stage")) as inner:
      assert outer and inner and os.path.exists(inner)
    assert not os.path.exists(inner) and os.path.exists(outer)
  assert os.listdir(tmp_path) == ["stage"]
  _plant(tmp_path, live_pid)  # another live process's study holds the parent
  with pytest.raises(lock.LockError, match="the directory above is held by another run"):
    lock.acquire(str(tmp_path / "stage"))


def test_only_process_0_locks_a_shared_workdir(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  assert lock.acquire(str(tmp_path)) is None and os.listdir(tmp_path) == []


def test_released_on_sigterm(tmp_path):
  code = textwrap.dedent(f"""
      import os, signal, time
      from alignment import lock
      with lock.held({str(tmp_path)!r}):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
      """)
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
  assert out.returncode == 128 + signal.SIGTERM, out.stderr[-2000:]
  assert os.listdir(tmp_path) == []


def _fake_runner(monkeypatch, run):
  monkeypatch.setitem(sys.modules, "fake_runner", types.SimpleNamespace(run=run))
  monkeypatch.setitem(main.RUNNERS, "online", "fake_runner")


def test_main_run_holds_the_lock_and_releases_it(tmp_path, monkeypatch):
  seen = []

  def run(config, workdir):
    del config
    seen.append(json.load(open(os.path.join(workdir, layout.LOCK)))["pid"])
    raise RuntimeError("boom")

  _fake_runner(monkeypatch, run)
  config = config_lib.load(os.path.join(ROOT, "configs", "online.py:tiny"))
  with pytest.raises(RuntimeError, match="boom"):
    main.run(config, str(tmp_path))
  assert seen == [os.getpid()] and os.listdir(tmp_path) == []


def test_main_and_study_refuse_before_building_anything(tmp_path, monkeypatch, live_pid):
  _plant(tmp_path, live_pid)
  _fake_runner(monkeypatch, lambda config, workdir: pytest.fail("the run was started"))
  config = config_lib.load(os.path.join(ROOT, "configs", "online.py:tiny"))
  with pytest.raises(lock.LockError, match=f"pid {live_pid}"):
    main.run(config, str(tmp_path))
  monkeypatch.setattr(study, "plan", lambda *a: pytest.fail("the study was planned"))
  smoke = config_lib.load(os.path.join(ROOT, "configs", "study.py:smoke"))
  with pytest.raises(lock.LockError, match=f"pid {live_pid}"):
    study.run(smoke, str(tmp_path))
  assert os.listdir(tmp_path) == [layout.LOCK]
