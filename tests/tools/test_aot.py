"""alignment.aot at tiny size: compiles for a mesh, and its per-device bytes are
what a real sharded state puts on a device."""
import json
import os

import jax
import numpy as np
import pytest

from alignment import aot
from alignment import config as config_lib
from alignment import sharding
from alignment.data import tasks
from alignment.data import vocab as vocab_lib
from alignment.models import heads, zoo
from alignment.train import online
from alignment.train import state as state_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "online.py:tiny")


@pytest.mark.slow  # about 50 s on 2 busy cores: three AOT compiles, then a real sharded state
def test_tiny_figures_match_a_real_sharded_state(tmp_path, capsys):
  out = tmp_path / "aot.json"
  assert aot.main([f"--config={TINY}", "--mesh=data=2,fsdp=2,tensor=2", "--hbm_gib=1",
                   f"--json={out}"]) == 0
  text = capsys.readouterr().out
  assert "on 8 cpu devices" in text and "against 1 GiB per device: fits" in text
  fig = json.loads(out.read_text())
  assert fig["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
  # The same state, built for real on the same mesh: bytes on device 0.
  c = config_lib.load(TINY)
  config_lib.apply_overrides(c, ["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"])
  mesh, rules = sharding.mesh_and_rules(c.mesh)
  vocab_size = vocab_lib.model_vocab_size(tasks.task_vocabulary(c.data.task))
  cfg = zoo.from_section(c.model, vocab_size)
  model = heads.LanguageModel(cfg)
  state, _ = state_lib.create(heads.init_fn(model, c.data.prompt_len, c.data.response_len),
                              state_lib.make_optimizer(c.optimizer), mesh, rules, 0)
  on_device0 = lambda tree: sum(
      s.data.nbytes for x in jax.tree.leaves(tree) for s in x.addressable_shards
      if s.device == jax.devices()[0])
  assert fig["per_device"]["params"] == on_device0(state.params)
  assert fig["per_device"]["optimizer"] == on_device0(state.opt_state)
  assert fig["params_total"] == sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  for part in ("train_step_compiler", "sampler_compiler", "judge_compiler"):
    assert fig[part]["temporaries"] > 0, part
  # T5's decode state: self-attention caches and the cross-attention keys/values.
  rows = 2 * c.data.batch_size // 4  # 2 samples per prompt; rows over data x fsdp
  per_layer = 2 * rows * (cfg.num_heads // 2) * cfg.head_dim * 4  # k and v, heads / tensor
  want = cfg.num_decoder_layers * per_layer * (c.data.response_len + c.data.prompt_len)
  assert fig["per_device"]["kv_cache"] == want


@pytest.mark.slow  # about 45 s: the online loop's set-up, then the AOT compiles
def test_aot_compiles_the_step_the_loop_runs(tmp_path, monkeypatch):
  # Every Program `online.build` makes, whoever asks: the loop, then the AOT check.
  built = []
  build = online.build
  monkeypatch.setattr(online, "build", lambda *a, **k: built.append(build(*a, **k)) or built[-1])
  overrides = ["loss.name='dpo'", "loss.beta=0.37", "loss.reduction='mean'",
               "judge.kind='golden'", "train.num_steps=0", "train.write_stream=False"]
  loop_config = config_lib.apply_overrides(config_lib.load(TINY), overrides)
  online.run(loop_config, str(tmp_path / "run"))  # builds its step; 0 steps to run
  fig = aot.analyse(config_lib.apply_overrides(config_lib.load(TINY), overrides))
  assert len(built) == 2 and fig["train_step_compiler"]["temporaries"] > 0
  loop_step, aot_step = (p.train.lower().as_text() for p in built)
  assert loop_step == aot_step  # the same jitted function with the same static arguments
  assert "3.700000e-01" in aot_step  # the config's beta is in the compiled step (DPO: beta*h)
  assert built[0].sampler.config == built[1].sampler.config


@pytest.mark.parametrize("argv,message", [
    (["--mesh=data=3"], "config.mesh: mesh"),
    (["--mesh=data=two"], "--mesh='data=two': 'data=two' is not axis=integer"),
    (["--topology=v9x:1x1"], "--topology=v9x:1x1: cannot describe this TPU slice"),
    (["--devices=4", "--topology=v5e:2x2"], "not both"),
    (["--config.model.nmae=t5-xl"], "config has no key 'model.nmae'"),
])
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
  assert aot.main([f"--config={TINY}", *argv]) == 2
  err = capsys.readouterr().err
  assert message in err and err.count("\n") == 1


class _Device:
  def __init__(self, *coords):
    self.coords = coords


def test_hbm_per_device_shares_a_chip_among_its_devices():
  # A v4 topology has a device per TensorCore: two devices on each chip's coordinates.
  v4_cores = [_Device(x, y, 0) for x in range(2) for y in range(2) for _ in range(2)]
  assert aot._default_hbm("v4:2x2x1", v4_cores) == 16.0  # pylint: disable=protected-access
  v5p_chips = [_Device(x, y, 0) for x in range(2) for y in range(2)]
  assert aot._default_hbm("v5p:2x2x1", v5p_chips) == 95.0  # pylint: disable=protected-access
  assert aot._default_hbm("", None) == 0.0  # pylint: disable=protected-access


@pytest.mark.slow  # about 40 s: a decoder-only online loop's programs, compiled ahead of time
def test_decoder_only_online_figures_and_time_estimates(tmp_path, capsys):
  """A Llama-style policy and proxy PM; the time estimates are the compiled
  programs' own costs against the given peak and bandwidth."""
  out = tmp_path / "aot.json"
  assert aot.main([f"--config={TINY}", "--config.model.name=llama-tiny", "--pm=llama-tiny",
                   "--mesh=data=2,fsdp=2,tensor=2", "--peak_tflops=0.1", "--hbm_gbps=10",
                   "--steps=100", f"--json={out}"]) == 0
  text = capsys.readouterr().out
  assert "online llama-tiny" in text and "(proxy PM llama-tiny)" in text
  assert "time per step (roofline bound: 0.1 TFLOP/s, 10 GB/s per device)" in text
  assert "the paper's study (" in text
  fig = json.loads(out.read_text())
  cost, est = fig["cost"], fig["estimate"]
  for part in ("train_step", "prefill", "decode_step", "judge"):
    assert cost[part]["flops"] > 0 and cost[part]["bytes"] > 0, part
  c = config_lib.load(TINY)
  assert cost["new_tokens"] == c.data.response_len
  t = est["seconds"]
  roofline = lambda part: max(cost[part]["flops"] / 1e11, cost[part]["bytes"] / 1e10)
  assert t["train_step"] == roofline("train_step")
  assert t["sampling"] == pytest.approx(roofline("prefill") +
                                        cost["new_tokens"] * roofline("decode_step"))
  assert t["online_step"] == pytest.approx(t["sampling"] + roofline("judge") + t["train_step"])
  # CPU devices carry no chip coordinates: one device per chip, 8 chips.
  assert est["chips"] == 8 and est["steps"] == 100
  assert est["chip_hours"]["online_run"] == pytest.approx(t["online_step"] * 100 * 8 / 3600)
  runs = aot.paper_study_runs()
  assert runs["online"] >= 10 and runs["offline"] >= 10  # Fig. 1's sweep and the ablations
  assert est["chip_hours"]["study"] == pytest.approx(
      runs["online"] * est["chip_hours"]["online_run"] +
      runs["offline"] * est["chip_hours"]["offline_run"])
  # Why sampling is estimated from its phases: the compiler counts the sampler's while
  # loop once, so the whole sampler's figure is about one prefill and one decode step,
  # far below the `new_tokens` decode steps it runs.
  assert cost["new_tokens"] >= 8
  assert cost["prefill"]["flops"] < cost["sampler"]["flops"] < (
      cost["prefill"]["flops"] + 3 * cost["decode_step"]["flops"])


def test_devices_per_chip_reads_the_compilers_coordinates():
  v4_cores = [_Device(x, y, 0) for x in range(2) for y in range(2) for _ in range(2)]
  assert aot.devices_per_chip(v4_cores) == 2
  assert aot.devices_per_chip([_Device(x, 0, 0) for x in range(4)]) == 1
  assert aot.devices_per_chip(jax.devices()) == 1  # CPU devices: no coordinates
  flops, bandwidth = aot._default_peak("v5p:2x2x1", None)  # pylint: disable=protected-access
  assert (flops, bandwidth) == aot.CHIP_PEAK["v5p"]
  flops, _ = aot._default_peak("v4:2x2x1", v4_cores)  # pylint: disable=protected-access
  assert flops == aot.CHIP_PEAK["v4"][0] / 2
