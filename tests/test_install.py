"""tools/install.py: pip's settings carried over to uv, and what makes it use pip."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("install", os.path.join(ROOT, "tools",
                                                                       "install.py"))
install = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(install)

# `pip config list` as this machine's pip prints it: a file's settings and PIP_* ones.
LISTING = """\
:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.default-timeout='180'
:env:.disable-pip-version-check='1'
:env:.find-links='/opt/wheels'
global.cert='/etc/other.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/srv/wheels'
"""


def test_the_environment_wins_over_the_files():
  s = install.pip_settings(LISTING)
  assert s == {"cert": "/etc/ssl/certs/ca-certificates.crt", "default-timeout": "180",
               "disable-pip-version-check": "1", "find-links": "/opt/wheels",
               "constraint": "/etc/xdg/pip/constraints.txt",
               "extra-index-url": "file:///opt/pypi/simple file:///opt/pypi-more/simple"}


def test_each_setting_becomes_uvs_flag_or_variable():
  args, env = install.uv_args(install.pip_settings(LISTING))
  assert args == ["--index-strategy", "unsafe-best-match",
                  "--constraints", "/etc/xdg/pip/constraints.txt",
                  "--extra-index-url", "file:///opt/pypi/simple",
                  "--extra-index-url", "file:///opt/pypi-more/simple",
                  "--find-links", "/opt/wheels"]
  assert env == {"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
                 "UV_HTTP_TIMEOUT": "180"}
  args, _ = install.uv_args({"index-url": "https://mirror/simple", "no-index": "true",
                             "trusted-host": "mirror other", "pre": "1"})
  assert args[2:] == ["--index-url", "https://mirror/simple", "--no-index",
                      "--prerelease", "allow", "--allow-insecure-host", "mirror",
                      "--allow-insecure-host", "other"]


def test_a_setting_without_a_counterpart_is_named():
  listing = LISTING + "install.only-binary=':all:'\n"
  with pytest.raises(ValueError, match="only-binary=':all:'"):
    install.uv_args(install.pip_settings(listing))


def test_pip_is_used_when_a_setting_has_no_counterpart(monkeypatch, capsys):
  calls = []

  def run(cmd, env=None):
    calls.append(cmd)
    return True

  monkeypatch.setattr(install, "_run", run)
  monkeypatch.setattr(install.subprocess, "run", lambda *a, **k: type(
      "R", (), {"stdout": "global.require-hashes='1'\n", "returncode": 0})())
  assert install.install(".[test]") == "pip"
  assert "require-hashes='1' has no uv counterpart" in capsys.readouterr().out
  assert all("uv" not in " ".join(c) for c in calls), calls
  assert calls[-1][-2:] == ["-e", ".[test]"]


def test_pip_is_used_when_uv_fails(monkeypatch, capsys):
  calls = []

  def run(cmd, env=None):
    calls.append(cmd)
    return not cmd[0].endswith("/uv")  # pip installs uv; uv then fails

  monkeypatch.setattr(install, "_run", run)
  monkeypatch.setattr(install.subprocess, "run", lambda *a, **k: type(
      "R", (), {"stdout": LISTING, "returncode": 0})())
  assert install.install(".[test]") == "pip"
  assert "installing with pip (uv failed: " in capsys.readouterr().out
  uv = next(c for c in calls if c[0].endswith("/uv"))
  assert uv[uv.index("--find-links") + 1] == "/opt/wheels" and uv[-2:] == ["-e", ".[test]"]
  assert calls[-1][-2:] == ["-e", ".[test]"] and "pip" in calls[-1]


def test_pip_is_used_when_its_settings_cannot_be_read(monkeypatch, capsys):
  """uv without pip's settings could take other wheels (an unpinned index's torch)."""
  calls = []
  monkeypatch.setattr(install, "_run", lambda cmd, env=None: calls.append(cmd) or True)
  monkeypatch.setattr(install.subprocess, "run", lambda *a, **k: type(
      "R", (), {"stdout": "", "stderr": "ERROR: bad config file", "returncode": 1})())
  assert install.install(".[test]") == "pip"
  assert "`pip config list` failed: ERROR: bad config file" in capsys.readouterr().out
  assert all("uv" not in " ".join(c) for c in calls), calls
