"""alignment.timing: phases at the loops' seams, a step's own time, a stage's split.

A fake clock stands in for time.perf_counter, so the accounting is checked exactly."""
import pytest

from alignment import timing


class Clock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


@pytest.fixture
def clock(monkeypatch):
  c = Clock()
  monkeypatch.setattr(timing.time, "perf_counter", c)
  timing.reset()
  yield c
  timing.reset()


def test_a_step_is_its_wall_time_less_the_phases_in_between(clock):
  steps = timing.StepClock()
  clock.now += 5.0                       # the first step, compilation included
  steps.tick()
  with timing.phase("checkpoint"):       # a save after step 1 ...
    clock.now += 2.0
  clock.now += 1.0                       # ... then step 2's own second
  steps.tick()
  with timing.phase("evaluation"):
    with timing.phase("data"):           # nested: counted in the outer phase only
      clock.now += 3.0
  clock.now += 1.5
  steps.tick()
  assert timing.split(20.0) == {"data": 0.0, "evaluation": 3.0, "checkpoint": 2.0,
                                "export": 0.0, "first_step": 5.0, "steps": 2.5,
                                "other": 7.5}


def test_timed_functions_count_each_call_and_reset_starts_afresh(clock):
  @timing.timed("export")
  def export(seconds):
    clock.now += seconds
    return "written"

  assert export(1.25) == "written" and export(0.75) == "written"
  assert timing.split(2.0)["export"] == 2.0 and timing.split(2.0)["other"] == 0.0
  timing.reset()
  assert timing.split(1.0) == dict.fromkeys(timing.PHASES, 0.0) | {"other": 1.0}
  with pytest.raises(ValueError, match="timing phase 'compile'"):
    timing.add("compile", 1.0)


def test_the_report_sums_the_split_by_kind(tmp_path):
  """report.stage_seconds reads each finished stage's split from its marker; stages
  recorded by earlier code (no split) are left out, and the sentence says how many."""
  import json  # pylint: disable=g-import-not-at-top
  from alignment.study import report  # pylint: disable=g-import-not-at-top
  from alignment.study.stages import Stage  # pylint: disable=g-import-not-at-top
  split = lambda steps, other: {**dict.fromkeys(timing.PHASES, 0.0), "steps": steps,
                                "other": other}
  markers = {"sft": ("sft", 10.0, split(6.0, 4.0)), "online_s0": ("online", 20.0, split(9.0, 11.0)),
             "online_s1": ("online", 10.0, split(5.0, 5.0)), "old": ("online", 50.0, None)}
  for name, (kind, seconds, s) in markers.items():
    (tmp_path / name).mkdir()
    info = {"stage": name, "kind": kind, "seconds": seconds}
    if s:
      info["seconds_by_phase"] = s
    (tmp_path / name / "STAGE.json").write_text(json.dumps(info))
  stages = [Stage(name, kind) for name, (kind, _, _) in markers.items()]
  got = report.stage_seconds(str(tmp_path), stages)
  assert got["online"]["stages"] == 2 and got["online"]["total"] == 30.0
  assert got["online"]["steps"] == 14.0 and got["all"]["steps"] == 20.0
  assert got["all"]["total"] == 40.0 and got["all"]["other"] == 20.0
  sentence = report.split_sentence(got)
  assert "over the 3 stages that recorded it" in sentence and "training steps 50%" in sentence
  assert report.split_sentence({}) == ""
