"""`python -m alignment.bench sampler` runs end to end at a toy size and writes its JSON."""
import json

import pytest

import hf_models  # noqa: F401  (skips the module without torch/transformers)
from alignment import bench


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
