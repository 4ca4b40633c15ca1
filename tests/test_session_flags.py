"""The test session's XLA flags (tests/xla_env.py) and the study's cache floor."""
import jax

import xla_env


def test_the_session_flags_keep_a_given_optimisation_level_and_set_the_devices():
  got = xla_env.session_flags("--xla_force_host_platform_device_count=2 --xla_dump_to=/d", 8)
  assert got.split() == ["--xla_dump_to=/d", *xla_env.CODEGEN,
                         "--xla_force_host_platform_device_count=8"]
  given = "--xla_backend_optimization_level=2"
  assert xla_env.session_flags(given, 1).split() == [
      given, "--xla_force_host_platform_device_count=1"]


def test_a_process_a_test_starts_gets_the_session_flags_with_its_devices():
  """conftest set XLA_FLAGS before JAX started; `flags(n)` changes the devices only."""
  session = xla_env.flags(8).split()
  assert session[-1] == "--xla_force_host_platform_device_count=8"
  assert len(jax.devices()) == 8
  one = xla_env.flags(1).split()
  assert one[:-1] == session[:-1] and one[-1] == "--xla_force_host_platform_device_count=1"


def test_a_study_keeps_programs_by_the_environment_s_floor(tmp_path, monkeypatch):
  from alignment.study import runner  # pylint: disable=g-import-not-at-top
  old = (jax.config.jax_compilation_cache_dir,
         jax.config.jax_persistent_cache_min_compile_time_secs)
  try:
    monkeypatch.setenv("ALIGNMENT_XLA_CACHE", str(tmp_path / "xla"))
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    runner._enable_compilation_cache(str(tmp_path))
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xla")
    monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")
    runner._enable_compilation_cache(str(tmp_path))
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.5
  finally:
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])


def test_bits_are_compared_across_programs_only_with_the_default_emitters(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", xla_env.session_flags("", 8))
  assert not xla_env.same_bits_across_programs()  # CODEGEN: the elemental emitter
  monkeypatch.setenv("XLA_FLAGS", xla_env.session_flags("--xla_backend_optimization_level=2", 8))
  assert xla_env.same_bits_across_programs()
