"""Installs the package into the running Python's environment (the Makefile's `.venv`).

    .venv/bin/python tools/install.py '.[test,hf]'

With uv (pinned below, itself installed by pip) when it can stand in for pip, else
with pip: both resolve the same pinned versions (BUILD_NOTES.md, "Building .venv"),
and uv unpacks and byte-compiles the 3 GB of wheels on every core where pip works
on one (measured on 2 cores: 55 s against 120 s).

uv reads none of pip's configuration, so this reads it (`pip config list`: the
configuration files and the PIP_* variables, the variables winning) and passes it
on: index-url, extra-index-url, find-links, constraint, no-index, trusted-host,
cert, timeout, pre. A pip setting with no such translation here, `--pip`, or a uv
that fails to install, resolve or build makes this use pip, after one line that
says why. uv considers every index for each package, as pip does
(`--index-strategy unsafe-best-match`: uv's default takes a package's versions from
the first index that has any).
"""
import argparse
import ast
import os
import shlex
import subprocess
import sys
import time

UV = "uv==0.13.10"
# pip settings with no bearing on what is installed (pip's own cache and output).
IGNORED = {"disable-pip-version-check", "no-input", "progress-bar", "quiet", "verbose",
           "no-color", "root-user-action", "require-virtualenv", "user-agent", "retries",
           "cache-dir", "no-cache-dir", "log", "no-warn-script-location",
           "no-python-version-warning"}
# Sections of `pip config list`, lowest priority first (pip: environment over files).
SECTIONS = ("global", "install", ":env:")


def pip_settings(listing: str) -> dict:
  """{key: value} from `pip config list` output (`section.key='value'` lines), a key
  of a later section in SECTIONS replacing an earlier one's."""
  found = {}
  for line in listing.splitlines():
    name, sep, raw = line.partition("=")
    section, dot, key = name.rpartition(".")
    if not sep or not dot or section not in SECTIONS:
      continue
    try:
      value = ast.literal_eval(raw)
    except (SyntaxError, ValueError):
      value = raw.strip("'\"")
    found.setdefault(key, {})[section] = str(value)
  return {k: v[max(v, key=SECTIONS.index)] for k, v in found.items()}


def uv_args(settings: dict) -> tuple[list[str], dict]:
  """uv's flags and environment for pip's settings; ValueError names a setting it
  cannot translate."""
  args, env = ["--index-strategy", "unsafe-best-match"], {}
  for key, value in sorted(settings.items()):
    items = value.split()
    if key in IGNORED:
      continue
    elif key == "index-url":
      args += ["--index-url", value]
    elif key in ("extra-index-url", "find-links", "trusted-host"):
      flag = {"trusted-host": "--allow-insecure-host"}.get(key, f"--{key}")
      for item in items:
        args += [flag, item]
    elif key == "constraint":
      for item in items:
        args += ["--constraints", item]
    elif key == "no-index" and value.lower() in ("1", "true", "yes", "on"):
      args.append("--no-index")
    elif key == "pre" and value.lower() in ("1", "true", "yes", "on"):
      args += ["--prerelease", "allow"]
    elif key == "cert":
      env["SSL_CERT_FILE"] = value
    elif key in ("timeout", "default-timeout"):
      env["UV_HTTP_TIMEOUT"] = value
    else:
      raise ValueError(f"pip's setting {key}={value!r} has no uv counterpart here")
  return args, env


def _run(cmd, env=None) -> bool:
  return subprocess.run(cmd, env=env).returncode == 0


def install(spec: str, use_pip: bool = False) -> str:
  """Installs `spec` (pip's requirement syntax, an editable `-e` is implied) into
  sys.executable's environment; returns the installer that did it."""
  py = sys.executable
  start = time.monotonic()
  why = "--pip" if use_pip else None
  if not why:
    listing = subprocess.run([py, "-m", "pip", "config", "list"], capture_output=True,
                             text=True)
    try:
      if listing.returncode != 0:  # uv without pip's settings could pick other wheels
        raise ValueError(f"`pip config list` failed: {listing.stderr.strip()[-500:]}")
      args, extra_env = uv_args(pip_settings(listing.stdout))
    except ValueError as e:
      why = str(e)
  if not why and not _run([py, "-m", "pip", "install", "-q", UV]):
    why = f"pip could not install {UV}"
  if not why:
    uv = os.path.join(os.path.dirname(py), "uv")
    cmd = [uv, "pip", "install", "-q", "--python", py, "--compile-bytecode", *args,
           "-e", spec]
    if _run(cmd, env={**os.environ, **extra_env}):
      print(f"installed {spec} with uv in {time.monotonic() - start:.0f} s", flush=True)
      return "uv"
    why = f"uv failed: {shlex.join(cmd)}"
  print(f"installing with pip ({why})", flush=True)
  if not (_run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"])
          and _run([py, "-m", "pip", "install", "-q", "-e", spec])):
    sys.exit(f"pip could not install {spec}")
  print(f"installed {spec} with pip in {time.monotonic() - start:.0f} s", flush=True)
  return "pip"


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("spec", help="what to install, editable, e.g. '.[test,hf]'")
  p.add_argument("--pip", action="store_true", help="install with pip, not uv")
  a = p.parse_args(argv)
  install(a.spec, use_pip=a.pip)


if __name__ == "__main__":
  main()
