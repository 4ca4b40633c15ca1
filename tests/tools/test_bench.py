"""The benchmarks (`python -m alignment.bench sampler|train|online|profile|families|all`)
run end to end at a toy size and write their JSON.

One `bench all --quick` run (toy sizes on CPU) serves every benchmark's checks: each
reads its benchmark's result from that run's JSON, and its table as
`python -m alignment.bench <name>` prints it. Only the online benchmark's RLOO
variant, which needs other flags, runs on its own.
"""
import contextlib
import io
import json

import pytest

import hf_models  # noqa: F401  (skips the module without torch/transformers)
from alignment import bench

# Needs torch and transformers: the module imports hf_models (the sampler, train and
# profile benchmarks run Hugging Face / PyTorch models beside ours).
pytestmark = [pytest.mark.hf]


@pytest.fixture(scope="module")
def quick_all(tmp_path_factory):
  """(the JSON `bench all --quick` wrote, what it printed): every benchmark at toy size."""
  out = tmp_path_factory.mktemp("bench_all")
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    rc = bench.main(["all", f"--json={out}", "--quick"])
  return rc, json.loads((out / "all.json").read_text()), printed.getvalue()


def _result(quick_all, name):
  """One benchmark's result from the `all` run, and its own table as printed alone."""
  rc, out, _ = quick_all
  result = out["results"][name]
  assert rc == 0 and result["status"] == "ok", result.get("reason")
  return result, bench.BENCHMARKS[name][2](result)


@pytest.mark.slow  # the `bench all --quick` fixture: about 100-150 s for every benchmark
def test_all_quick_runs_every_benchmark_and_prints_one_table(quick_all):
  rc, out, printed = quick_all
  assert rc == 0 and list(out["results"]) == list(bench.BENCHMARKS)
  assert all(r["status"] == "ok" and r["seconds"] > 0 for r in out["results"].values())
  assert out["device_kind"] and out["platform"] == "cpu"
  p = out["peaks"]  # CPU: measured peaks, the table's never
  assert p["float32"]["source"] == p["bandwidth"]["source"] == "measured on this device"
  assert p["float32"]["flops"] == pytest.approx(out["measured"]["float32_gflops"] * 1e9)
  for name in bench.BENCHMARKS:  # progress lines, one table, a row per thing timed
    assert f"{name}: ok in" in printed
    assert any(r["benchmark"] == name and r["median_s"] > 0 for r in out["rows"])
  assert printed.count("| benchmark | timed |") == 1 and "wrote " in printed
  rows = {(r["benchmark"], r["timed"]): r for r in out["rows"]}
  step = rows[("train", "t5-nano: IPO step, 2 pairs (ours)")]
  train = out["results"]["train"]
  assert step["mfu"] == pytest.approx(train["model_flops"]["total"] / step["median_s"]
                                      / p["float32"]["flops"])
  assert step["mbu"] == pytest.approx(train["ours"]["ours"]["xla_bytes_accessed"]
                                      / step["median_s"] / p["bandwidth"]["bytes_per_s"])
  bf16 = rows[("train", "t5-nano: IPO step, 2 pairs (ours/bfloat16)")]
  assert bf16["peak_flops"] == p["bfloat16"]["flops"] and bf16["dtype"] == "bfloat16"
  sample = rows[("sampler", "t5-nano: sample 4 x 3 tokens (float32 cache)")]
  assert sample["mbu"] > 0 and sample["mfu"] > 0
  online_step = rows[("online", "t5-nano contrastive: online step")]
  online = out["results"]["online"]
  assert online_step["mfu"] == pytest.approx(online["model_flops"]["step"]
                                             / online_step["median_s"] / p["float32"]["flops"])
  assert online_step["mbu"] is None  # not counted
  assert f"| {step['mfu'] * 100:.2f}% |" in printed


def test_all_records_a_failing_benchmark_and_runs_the_others(tmp_path, monkeypatch, capsys,
                                                             bench_all_unmeasured):
  def broken(args):
    raise RuntimeError("no baseline here\nsecond line")
  monkeypatch.setitem(bench.BENCHMARKS, "broken", (lambda p: None, broken, None))
  monkeypatch.setattr(bench.suite, "QUICK_CPU", {**bench.suite.QUICK_CPU, "broken": []})
  out = tmp_path / "a.json"
  assert bench.main(["all", f"--json={out}", "--quick", "--only=broken,profile"]) == 1
  result = json.loads(out.read_text())
  assert result["results"]["broken"]["reason"] == "RuntimeError: no baseline here"
  assert result["results"]["profile"]["status"] == "ok"
  (failed, ok) = result["rows"]
  assert failed["timed"].startswith("FAILED: RuntimeError") and failed["mfu"] is None
  assert ok["mfu"] == pytest.approx(4e9 / 2.0 / 2e9)  # FLOPs / median / measured fp32 peak
  printed = capsys.readouterr().out
  assert "broken: failed in" in printed and "| profile | m: IPO step traced" in printed


def test_all_only_names_an_unknown_benchmark():
  with pytest.raises(SystemExit, match="unknown benchmark 'nope'"):
    bench.main(["all", "--json=x.json", "--only=nope"])


@pytest.mark.slow  # reads the `bench all --quick` fixture
def test_sampler_bench_writes_json(quick_all):
  result, table = _result(quick_all, "sampler")
  assert result["benchmark"] == "sampler" and result["machine"]["cpu_count"] >= 1
  (r,) = result["results"]
  ours, hf = r["ours"]["float32"], r["hf"]
  assert ours["tokens_per_s"] > 0 and hf["tokens_per_s"] > 0 and ours["compile_s"] > 0
  assert r["ratio"]["float32"] == pytest.approx(ours["tokens_per_s"] / hf["tokens_per_s"])
  assert r["ratio_of_fastest_runs"]["float32"] >= 0.5 * r["ratio"]["float32"] > 0
  assert ours["best"]["s"] <= ours["median_s"]
  assert ours["bytes_per_step"]["total"] > ours["bytes_per_step"]["lm_head"] > 0
  assert "| t5-nano |" in table
  # HF's static-cache path under torch.compile, interleaved with the rest (toy runs:
  # the eager backend; the figures use inductor).
  compiled = r["hf_compiled"]
  assert compiled["backend"] == "eager" and compiled["torch_threads"] == 1
  assert compiled["tokens_per_s"] > 0 and compiled["compile_s"] > 0
  assert r["ratio_vs_compiled"]["float32"] == pytest.approx(
      ours["tokens_per_s"] / compiled["tokens_per_s"])
  assert "HF compiled tok/s" in table


def test_unknown_benchmark_is_an_error():
  with pytest.raises(SystemExit):
    bench.main(["nonsense", "--json=x"])


@pytest.mark.slow  # reads the `bench all --quick` fixture
def test_train_bench_writes_json(quick_all):
  result, table = _result(quick_all, "train")
  ours, plain, torch_ = (result["ours"]["ours"], result["ours"]["ours/plain"],
                         result["torch"])
  assert ours["median_s"] > 0 and torch_["median_s"] > 0 and 0 < ours["mfu"]
  assert result["speedup_over_torch"] == pytest.approx(torch_["median_s"] / ours["median_s"])
  # The same step three ways: the first losses agree (same weights, batch and loss).
  loss = result["first_step_loss"]
  assert loss["ours"] == pytest.approx(loss["torch"], rel=1e-3, abs=1e-4)
  assert loss["ours/plain"] == pytest.approx(loss["ours"], rel=1e-4, abs=1e-5)
  # The torch.compile'd step starts from its own copy of the same weights.
  assert loss["torch/compiled"] == pytest.approx(loss["torch"], rel=1e-5)
  compiled = result["torch_compiled"]
  assert compiled["backend"] == "eager" and compiled["median_s"] > 0
  assert result["speedup_over_torch_compiled"] == pytest.approx(
      compiled["median_s"] / ours["median_s"])
  assert "torch.compile" in table
  assert ours["xla_flops"] > 0 and plain["counted_flops_executed"] > result["model_flops"]["total"]
  bf16 = result["ours"]["ours/bfloat16"]
  assert bf16["mfu_against"] == "bfloat16 matmul peak" and bf16["speedup_over_float32"] > 0
  # bfloat16 activations stay close to float32 (the benchmark reports how close).
  assert bf16["accuracy"]["loss_float32"] == pytest.approx(loss["ours"], rel=1e-5)  # same weights
  assert bf16["accuracy"]["grad_cosine"] > 0.9
  assert bf16["accuracy"]["logp_max_rel_diff"] < 0.05
  assert "PyTorch" in table
  # --xla_option: the same float32 step compiled with XNNPACK's dots, timed beside it.
  xnn = result["ours"]["ours/xnn"]
  assert xnn["median_s"] > 0 and xnn["compile_s"] > 0 and "| ours/xnn |" in table
  assert loss["ours/xnn"] == pytest.approx(loss["ours"], rel=1e-5)


@pytest.mark.parametrize("flag, says", [
    ("xnn", "expected LABEL:KEY=VALUE"),
    ("xnn:xla_cpu_experimental_xnn_fusion_type", "is not KEY=VALUE"),
    ("xnn:xla_cpu_no_such_option=1", "No such compile option: 'xla_cpu_no_such_option'"),
    ("xnn:xla_cpu_experimental_xnn_fusion_type=dot", "'dot' is not a valid enum value")])
def test_train_bench_refuses_an_xla_option_in_one_line(flag, says, capsys):
  """Checked as the flags are read, before any model is built."""
  with pytest.raises(SystemExit):
    bench.main(["train", "--json=unused.json", f"--xla_option={flag}"])
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert err.startswith("python -m alignment.bench train: error: argument --xla_option:")
  assert says in err, err


@pytest.mark.slow  # reads the `bench all --quick` fixture
def test_online_bench_writes_json(quick_all):
  result, table = _result(quick_all, "online")
  share = result["share"]
  assert set(share) == {"sample", "judge", "update"}
  assert sum(share.values()) == pytest.approx(1.0, rel=0.05)
  assert result["median_s"]["reference_scoring"] > 0
  assert result["settings"]["policy"] == "t5-nano"
  stale = result["staleness"]  # the loop's rollouts 1 step behind, overlapped and not
  assert stale["k"] == 1 and all(len(v) == 1 for v in stale["step_times_s"].values())
  assert stale["median_step_s"]["overlap"] > 0 and stale["median_step_s"]["sequential"] > 0
  assert "| sample |" in table and "staleness 1: step" in table
  f = result["model_flops"]  # flops.online_step at the quick run's shapes
  assert f["step"] == pytest.approx(f["sample"] + f["judge"] + f["update"]) and f["judge"] > 0
  assert result["mfu"]["update"] == pytest.approx(
      f["update"] / result["median_s"]["update"] / 1e9 / result["peak_gflops_used"])


@pytest.mark.slow  # about 30 s: RLOO's programs (flags `bench all` does not run)
def test_online_bench_times_k_samples_per_prompt(tmp_path):
  out = tmp_path / "online.json"
  assert bench.main(["online", f"--json={out}", "--config=configs/online.py:tiny",
                     "--pm_config=configs/pm.py:tiny", "--warmup=1", "--repeats=1",
                     "--set", "rl.method='rloo'", "--set", "rl.samples=4"]) == 0
  result = json.loads(out.read_text())
  assert result["settings"]["samples_per_prompt"] == 4 and result["settings"]["method"] == "rloo"
  assert "reference_scoring" not in result["median_s"]  # fused into RLOO's preparation
  assert sum(result["share"].values()) == pytest.approx(1.0, rel=0.05)


@pytest.mark.slow  # reads the `bench all --quick` fixture
def test_families_bench_times_both_families_side_by_side(quick_all):
  result, table = _result(quick_all, "families")
  t5, llama = result["models"]
  assert (t5["model"], llama["model"]) == ("t5-nano", "llama-nano")
  for m in (t5, llama):
    assert [len(m["times_s"][p]) for p in ("sft", "update", "sample")] == [2, 1, 1]
    assert m["median_s"]["online_less_judge"] == pytest.approx(
        m["median_s"]["update"] + m["median_s"]["sample"])
    assert m["params"] > 0 and all(f > 0 for f in m["flops"].values())
  (ratio,) = result["ratios"]
  assert ratio["params"] == pytest.approx(llama["params"] / t5["params"])
  assert ratio["time"]["sft"] == pytest.approx(llama["median_s"]["sft"] / t5["median_s"]["sft"])
  assert ratio["flops"]["sft"] > 1  # the decoder runs the prompt through every layer
  assert "| llama-nano / t5-nano |" in table


@pytest.mark.slow  # reads the `bench all --quick` fixture
def test_profile_bench_splits_the_step_by_op_category(quick_all):
  result, table = _result(quick_all, "profile")
  p = result["profiles"]["float32"]
  assert p["categories"]["matmul"]["gflop"] > 0 and p["op_ms"] > 0
  assert sum(c["share"] for c in p["categories"].values()) == pytest.approx(1.0)
  assert "| matmul |" in table
  # The matmuls split by who runs them (a kernel library's fusions or XLA's own code):
  # the same ops, time and FLOPs as the matmul row.
  by = p["matmuls_by_runner"]
  assert set(by) <= {"YNNPACK", "XNNPACK", "oneDNN", "XLA"} and by
  assert sum(v["ms"] for v in by.values()) == pytest.approx(p["categories"]["matmul"]["ms"])
  assert sum(v["gflop"] for v in by.values()) == pytest.approx(
      p["categories"]["matmul"]["gflop"])
  assert "matmuls by who runs them:" in table


def test_library_fusions_name_the_kernel_library():
  """XLA:CPU's library fusions, by their backend config; a loop fusion is XLA's own."""
  hlo = """HloModule m

ENTRY %main (a: f32[4,3], b: f32[3,5]) -> f32[4,5] {
  %a = f32[4,3]{1,0} parameter(0)
  %b = f32[3,5]{1,0} parameter(1)
  %ynn_fusion = f32[4,5]{1,0} fusion(%a, %b), kind=kCustom, calls=%f, backend_config={"fusion_config":{"kind":"__ynn_fusion"},"outer_dimension_partitions":[]}
  %xnn_fusion.2 = f32[4,5]{1,0} fusion(%a, %b), kind=kCustom, calls=%g, backend_config={"fusion_config":{"kind":"__xnn_fusion"}}
  ROOT %loop_fusion = f32[4,5]{1,0} fusion(%ynn_fusion, %xnn_fusion.2), kind=kLoop, calls=%h
}
"""
  assert bench.library_fusions(hlo) == {"ynn_fusion": "YNNPACK", "xnn_fusion.2": "XNNPACK"}


def test_hlo_op_kinds_counts_dot_flops():
  hlo = """HloModule m

ENTRY %main (a: f32[4,3], b: f32[3,5]) -> f32[4,5] {
  %a = f32[4,3]{1,0} parameter(0)
  %b = f32[3,5]{1,0} parameter(1)
  ROOT %dot.1 = f32[4,5]{1,0} dot(%a, %b), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}
"""
  assert bench.hlo_op_kinds(hlo)["dot.1"] == ("matmul", 2 * 4 * 5 * 3)
