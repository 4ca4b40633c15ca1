"""Every shipped config parses and builds; validation and gin behave."""
import glob
import os
import subprocess
import sys

import jax
import pytest

from alignment import config as config_lib
from alignment import gin_config
from alignment import sharding
from alignment.models import heads, zoo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                      if not os.path.basename(p).startswith("_"))


def _variants(path):
  if path.endswith("study.py"):
    return ["smoke", "default"]
  return ["tiny", "default", "paper"]


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_every_config_parses_and_validates(path):
  for variant in _variants(path):
    c = config_lib.load(f"{path}:{variant}")
    assert c.is_locked
    if "experiment" in c and c.experiment in config_lib.EXPERIMENTS:
      # paper variants target a 16-chip slice (v4-32, v5e-16).
      config_lib.validate(c, 16 if variant == "paper" else 8)


@pytest.mark.parametrize("path", [p for p in CONFIG_FILES if not p.endswith("study.py")],
                         ids=os.path.basename)
def test_tiny_variant_builds(path):
  c = config_lib.load(f"{path}:tiny")
  config_lib.validate(c, len(jax.devices()))
  mesh, rules = sharding.mesh_and_rules(c.mesh)
  cfg = zoo.from_section(c.model, vocab_size=512)
  head = "pairwise" if c.experiment == "pm" else "lm"
  model = heads.make_model(cfg, head)
  b, lp, lr = c.data.batch_size, c.data.prompt_len, c.data.response_len
  p = jax.numpy.zeros((b, lp), jax.numpy.int32)
  r = jax.numpy.zeros((b, lr), jax.numpy.int32)
  args = (p, p, r, r, r, r) if head == "pairwise" else (p, p, r, r)
  params, _ = __import__("alignment.sharding", fromlist=["x"]).create_sharded(
      lambda k: model.init(k, *args)["params"], mesh, rules, jax.random.PRNGKey(0))
  assert sum(x.size for x in jax.tree.leaves(params)) > 1000


def test_unknown_key_is_an_error():
  c = config_lib.load(f"{ROOT}/configs/sft.py:tiny")
  with pytest.raises(config_lib.ConfigError, match="no key 'optimizer.lr'"):
    config_lib.apply_overrides(c, ["optimizer.lr=1e-3"])
  with pytest.raises(config_lib.ConfigError, match="no section 'optimzer'"):
    config_lib.apply_overrides(c, ["optimzer.learning_rate=1e-3"])
  with pytest.raises(config_lib.ConfigError, match="must be int"):
    config_lib.apply_overrides(c, ["data.batch_size='many'"])


@pytest.mark.parametrize("override,message", [
    ("mesh.data=3", "needs 3 devices; 8 are available"),
    ("mesh.tensor=16", "fixed axes use 16 devices"),
    ("data.batch_size=12", "batch_size=12 is not divisible by the data-parallel size 8"),
    ("data.prompt_len=-4", "prompt_len=-4: must be a positive integer"),
    ("model.dtype='float8'", "model.dtype='float8'"),
    ("model.name='t5-huge'", "model.name='t5-huge': not in the zoo"),
    ("optimizer.schedule='exp'", "schedule='exp'"),
    ("train.on_nonfinite='ignore'", "on_nonfinite='ignore'"),
])
def test_validation_names_the_key(override, message):
  c = config_lib.load(f"{ROOT}/configs/sft.py:tiny")
  config_lib.apply_overrides(c, [override])
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(c, 8)
  assert message in str(e.value)


def test_gin_file_equals_its_ml_collections_twin():
  gin_path = os.path.join(ROOT, "configs", "gin", "offline_dpo_tiny.gin")
  from_gin = gin_config.from_gin(gin_path)
  twin = config_lib.load(f"{ROOT}/configs/offline.py:tiny")
  config_lib.apply_overrides(twin, ["loss.name='dpo'", "loss.beta=0.5",
                                    "optimizer.learning_rate=3e-4", "train.num_steps=12",
                                    "seed=3"])
  assert from_gin.to_dict() == twin.to_dict()
  assert from_gin.loss.name == "dpo" and from_gin.seed == 3  # it did change something
  base = config_lib.load(f"{ROOT}/configs/offline.py:tiny")
  assert base.to_dict() != from_gin.to_dict()


def test_gin_errors_name_file_and_line(tmp_path):
  bad = tmp_path / "bad.gin"
  bad.write_text(f"base.config = '{ROOT}/configs/offline.py:tiny'\nloss.betta = 0.5\n")
  with pytest.raises(config_lib.ConfigError, match=r"bad.gin:2: config has no key 'loss.betta'"):
    gin_config.from_gin(str(bad))
  nobase = tmp_path / "nobase.gin"
  nobase.write_text("loss.beta = 0.5\n")
  with pytest.raises(config_lib.ConfigError, match="needs exactly one `base.config"):
    gin_config.from_gin(str(nobase))


def _main(args, tmp_path):
  return subprocess.run([sys.executable, "-m", "alignment.main", *args,
                         f"--workdir={tmp_path}/w"], capture_output=True, text=True, cwd=ROOT,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=120)


def test_main_rejects_unknown_key_without_traceback(tmp_path):
  out = _main(["--config=configs/sft.py:tiny", "--config.optimzer.learning_rate=1"], tmp_path)
  assert out.returncode != 0
  assert "optimzer" in out.stderr and "Traceback" not in out.stderr


def test_main_reports_invalid_config_in_one_line(tmp_path):
  out = _main(["--config=configs/sft.py:tiny", "--config.data.batch_size=7"], tmp_path)
  assert out.returncode == 2, out.stderr
  assert "Traceback" not in out.stderr
  assert "config.data.batch_size=7 is not divisible" in out.stderr
