"""The benchmarks (`python -m alignment.bench sampler|train|online|profile|families`) run
end to end at a toy size and write their JSON."""
import json

import pytest

import hf_models  # noqa: F401  (skips the module without torch/transformers)
from alignment import bench

# Needs torch and transformers: the module imports hf_models (the sampler, train and
# profile benchmarks run Hugging Face / PyTorch models beside ours).
pytestmark = [pytest.mark.hf]


def test_sampler_bench_writes_json(tmp_path, capsys):
  out = tmp_path / "sampler.json"
  assert bench.main(["sampler", f"--json={out}", "--models=t5-nano", "--batch=4",
                     "--prompt_len=5", "--new_tokens=3", "--repeats=1", "--hf_threads=1",
                     "--cache_dtypes=float32"]) == 0
  result = json.loads(out.read_text())
  assert result["benchmark"] == "sampler" and result["machine"]["cpu_count"] >= 1
  (r,) = result["results"]
  ours, hf = r["ours"]["float32"], r["hf"]
  assert ours["tokens_per_s"] > 0 and hf["tokens_per_s"] > 0 and ours["compile_s"] > 0
  assert r["ratio"]["float32"] == pytest.approx(ours["tokens_per_s"] / hf["tokens_per_s"])
  assert r["ratio_of_fastest_runs"]["float32"] >= 0.5 * r["ratio"]["float32"] > 0
  assert ours["best"]["s"] <= ours["median_s"]
  assert ours["bytes_per_step"]["total"] > ours["bytes_per_step"]["lm_head"] > 0
  assert "| t5-nano |" in capsys.readouterr().out


def test_unknown_benchmark_is_an_error():
  with pytest.raises(SystemExit):
    bench.main(["nonsense", "--json=x"])


@pytest.mark.slow  # about 25-50 s: three step variants, HF T5 and an accuracy check
def test_train_bench_writes_json(tmp_path, capsys):
  out = tmp_path / "train.json"
  assert bench.main(["train", f"--json={out}", "--model=t5-nano", "--batch=2", "--prompt_len=6",
                     "--response_len=4", "--repeats=1", "--torch_threads=1"]) == 0
  result = json.loads(out.read_text())
  ours, plain, torch_ = (result["ours"]["ours"], result["ours"]["ours/plain"],
                         result["torch"])
  assert ours["median_s"] > 0 and torch_["median_s"] > 0 and 0 < ours["mfu"]
  assert result["speedup_over_torch"] == pytest.approx(torch_["median_s"] / ours["median_s"])
  # The same step three ways: the first losses agree (same weights, batch and loss).
  loss = result["first_step_loss"]
  assert loss["ours"] == pytest.approx(loss["torch"], rel=1e-3, abs=1e-4)
  assert loss["ours/plain"] == pytest.approx(loss["ours"], rel=1e-4, abs=1e-5)
  assert ours["xla_flops"] > 0 and plain["counted_flops_executed"] > result["model_flops"]["total"]
  bf16 = result["ours"]["ours/bfloat16"]
  assert bf16["mfu_against"] == "bfloat16 matmul peak" and bf16["speedup_over_float32"] > 0
  # bfloat16 activations stay close to float32 (the benchmark reports how close).
  assert bf16["accuracy"]["loss_float32"] == pytest.approx(loss["ours"], rel=1e-5)  # same weights
  assert bf16["accuracy"]["grad_cosine"] > 0.9
  assert bf16["accuracy"]["logp_max_rel_diff"] < 0.05
  assert "PyTorch" in capsys.readouterr().out


@pytest.mark.slow  # about 30 s: a data set, three models, four compiles
def test_online_bench_writes_json(tmp_path, capsys):
  out = tmp_path / "online.json"
  assert bench.main(["online", f"--json={out}", "--config=configs/online.py:tiny",
                     "--pm_config=configs/pm.py:tiny", "--warmup=1", "--repeats=1",
                     "--staleness=1", "--blocks=1"]) == 0
  result = json.loads(out.read_text())
  share = result["share"]
  assert set(share) == {"sample", "judge", "update"}
  assert sum(share.values()) == pytest.approx(1.0, rel=0.05)
  assert result["median_s"]["reference_scoring"] > 0
  assert result["settings"]["policy"] == "t5-nano"
  stale = result["staleness"]  # the loop's rollouts 1 step behind, overlapped and not
  assert stale["k"] == 1 and all(len(v) == 1 for v in stale["step_times_s"].values())
  assert stale["median_step_s"]["overlap"] > 0 and stale["median_step_s"]["sequential"] > 0
  printed = capsys.readouterr().out
  assert "| sample |" in printed and "staleness 1: step" in printed


@pytest.mark.slow  # about 30 s: RLOO's programs
def test_online_bench_times_k_samples_per_prompt(tmp_path):
  out = tmp_path / "online.json"
  assert bench.main(["online", f"--json={out}", "--config=configs/online.py:tiny",
                     "--pm_config=configs/pm.py:tiny", "--warmup=1", "--repeats=1",
                     "--set", "rl.method='rloo'", "--set", "rl.samples=4"]) == 0
  result = json.loads(out.read_text())
  assert result["settings"]["samples_per_prompt"] == 4 and result["settings"]["method"] == "rloo"
  assert "reference_scoring" not in result["median_s"]  # fused into RLOO's preparation
  assert sum(result["share"].values()) == pytest.approx(1.0, rel=0.05)


@pytest.mark.slow  # about 40-90 s: two matmul peaks, two models' SFT, IPO and sampler programs
def test_families_bench_times_both_families_side_by_side(tmp_path, capsys):
  out = tmp_path / "families.json"
  assert bench.main(["families", f"--json={out}", "--rungs=nano", "--batch=2",
                     "--prompt_len=6", "--response_len=4", "--repeats=2",
                     "--online_repeats=1"]) == 0
  result = json.loads(out.read_text())
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
  assert "| llama-nano / t5-nano |" in capsys.readouterr().out


@pytest.mark.slow  # about 20-40 s: HF T5, a compile and a trace
def test_profile_bench_splits_the_step_by_op_category(tmp_path, capsys):
  out = tmp_path / "profile.json"
  assert bench.main(["profile", f"--json={out}", "--model=t5-nano", "--batch=2",
                     "--prompt_len=6", "--response_len=4", "--steps=1", "--dtypes=float32",
                     f"--trace_dir={tmp_path / 'trace'}"]) == 0
  p = json.loads(out.read_text())["profiles"]["float32"]
  assert p["categories"]["matmul"]["gflop"] > 0 and p["op_ms"] > 0
  assert sum(c["share"] for c in p["categories"].values()) == pytest.approx(1.0)
  assert "| matmul |" in capsys.readouterr().out


def test_hlo_op_kinds_counts_dot_flops():
  hlo = """HloModule m

ENTRY %main (a: f32[4,3], b: f32[3,5]) -> f32[4,5] {
  %a = f32[4,3]{1,0} parameter(0)
  %b = f32[3,5]{1,0} parameter(1)
  ROOT %dot.1 = f32[4,5]{1,0} dot(%a, %b), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}
"""
  assert bench.hlo_op_kinds(hlo)["dot.1"] == ("matmul", 2 * 4 * 5 * 3)
