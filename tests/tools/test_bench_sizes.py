"""`bench all --quick`'s accelerator sizes, checked without an accelerator.

No GPU or TPU has run `python -m alignment.bench all --quick` yet, so its sizes for
one (`suite.flags_for` on a "gpu" or "tpu" platform) are exercised nowhere else:
a misspelt flag, a model the zoo lacks or a config override that does not apply
would first show on the first machine lent. Here each benchmark's own parser reads
its flags, every model named resolves in the zoo, and the online benchmark's config,
with its overrides, passes the config checks a run makes. Nothing is compiled.
"""
import argparse
import json

import pytest

from alignment import bench
from alignment import config as config_lib
from alignment.bench import online as online_bench
from alignment.bench import suite
from alignment.models import zoo


def _parsed(name, flags):
  parser = argparse.ArgumentParser(prog=name)
  bench.BENCHMARKS[name][0](parser)
  return parser.parse_args(flags)


@pytest.mark.parametrize("platform", ["gpu", "tpu", "cpu"])
def test_quick_sizes_are_flags_each_benchmark_accepts(platform, tmp_path):
  flags = suite.flags_for(platform, True, str(tmp_path))
  assert list(flags) == list(bench.BENCHMARKS)  # every benchmark has its sizes
  args = {name: _parsed(name, f) for name, f in flags.items()}
  for name in args["sampler"].models:
    zoo.get(name)  # raises on a name the zoo does not have
  zoo.get(args["train"].model)
  zoo.get(args["profile"].model)
  config = online_bench._load_config(args["online"].config, args["online"].set)  # pylint: disable=protected-access
  pm_config = online_bench._load_config(args["online"].pm_config)  # pylint: disable=protected-access
  config_lib.validate(config, 1)
  config_lib.validate(pm_config, 1)
  zoo.get(config.model.name)
  if platform != "cpu":  # the accelerator's sizes are the ones its docstring names
    assert config.model.name == "t5-small" and config.data.batch_size == 64
    assert args["sampler"].models == ["t5-small"] and args["train"].model == "t5-small"
    assert args["profile"].model == "t5-base"
  assert args["profile"].trace_dir == str(tmp_path / "profile_trace")


def test_all_records_flags_a_benchmark_rejects_and_runs_the_others(tmp_path, monkeypatch,
                                                                    capsys, bench_all_unmeasured):
  # argparse exits on a flag it does not know; `bench all` records that benchmark as
  # failed and goes on, as for any other failure.
  monkeypatch.setattr(bench.suite, "QUICK_CPU", {**bench.suite.QUICK_CPU,
                                                 "train": ["--modle=t5-nano"]})
  out = tmp_path / "a.json"
  assert bench.main(["all", f"--json={out}", "--quick", "--only=train,profile"]) == 1
  result = json.loads(out.read_text())["results"]
  assert result["train"]["status"] == "failed"
  assert result["train"]["reason"] == ("ValueError: flags rejected by its parser: "
                                       "--modle=t5-nano")
  assert result["profile"]["status"] == "ok"
  captured = capsys.readouterr()
  assert "unrecognized arguments: --modle=t5-nano" in captured.err
  assert "train: failed in" in captured.out and "profile: ok in" in captured.out
