#!/usr/bin/env python3
"""Cloud TPU launcher: create a slice, install, run on all workers, fetch, delete.

    python launch/tpu.py create  --name=N --zone=Z --accelerator=v4-32 [--queued] [--spot]
    python launch/tpu.py wait    --name=N --zone=Z --queued   # until the slice is ACTIVE
    python launch/tpu.py install --name=N --zone=Z
    python launch/tpu.py run     --name=N --zone=Z -- --config=configs/online.py:paper \\
                                 --workdir=gs://BUCKET/runs/online
    python launch/tpu.py study   --name=N --zone=Z -- --config=configs/study.py:tpu \\
                                 --workdir=gs://BUCKET/runs/study
    python launch/tpu.py logs    --name=N --zone=Z [--worker=0]
    python launch/tpu.py copy    --name=N --zone=Z --local=runs/tpu -- --workdir=W
    python launch/tpu.py delete  --name=N --zone=Z [--queued]
    python launch/tpu.py all     --name=N --zone=Z --accelerator=v4-32 -- <run args>

Every subcommand takes --dry_run: it prints the exact gcloud commands, one per
line, and runs nothing (the tests check these lines). Without it, each command
runs in turn and the launcher stops at the first that fails. `run` starts the
same command on every worker (`--worker=all`): JAX's multi-controller runtime
finds the slice's hosts by itself (`alignment.distributed.initialize`). `study`
does the same with `alignment.study`: every worker is one process of the study,
which runs each alignment stage across all of them and its pair sets and report
on worker 0 (`alignment.study.runner`). The output streams to this terminal;
the command survives a dropped SSH session only with --detach (then use `logs`). `all` always deletes the slice at the
end, also when the run fails.

A queued resource is granted some time after `create` returns: `wait` (part
of `all --queued`) polls its state, printed as the one `describe` command it
repeats, until ACTIVE (FAILED or SUSPENDED, or --wait_minutes passing, is an
error). A slice of several hosts needs a workdir every host sees, gs://BUCKET/...:
each host writes its own shards of every checkpoint. `copy` then fetches it
with `gcloud storage`; a local workdir (one-host slices) is copied from
worker 0 with scp (relative paths are under ~/alignment there).
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time

RUNTIME = "tpu-ubuntu2204-base"
REPO_TARBALL = "alignment.tar.gz"
REMOTE_DIR = "alignment"


def _base(args) -> list[str]:
  extra = [f"--zone={args.zone}"]
  if args.project:
    extra.append(f"--project={args.project}")
  return extra


def create(args) -> list[list[str]]:
  if args.queued:
    cmd = ["gcloud", "compute", "tpus", "queued-resources", "create", f"{args.name}-qr",
           f"--node-id={args.name}", f"--accelerator-type={args.accelerator}",
           f"--runtime-version={args.runtime}", *_base(args)]
  else:
    cmd = ["gcloud", "compute", "tpus", "tpu-vm", "create", args.name,
           f"--accelerator-type={args.accelerator}", f"--version={args.runtime}", *_base(args)]
  if args.spot:
    cmd.append("--spot")
  return [cmd]


class Poll(list):
  """A command repeated until its output is the wanted state (see `wait`)."""


def wait(args) -> list[list[str]]:
  if not args.queued:  # `tpu-vm create` returns when the VM is ready
    return []
  return [Poll(["gcloud", "compute", "tpus", "queued-resources", "describe", f"{args.name}-qr",
                *_base(args), "--format=value(state.state)"])]


def _poll(cmd: list[str], minutes: float) -> int:
  deadline = time.monotonic() + 60 * minutes
  while True:
    out = subprocess.run(cmd, capture_output=True, text=True)
    state = out.stdout.strip()
    if out.returncode == 0 and state == "ACTIVE":
      return 0
    if state in ("FAILED", "SUSPENDED") or time.monotonic() > deadline:
      print(f"error: queued resource is {state or out.stderr.strip()[-200:]!r} after "
            f"waiting; see `{shlex.join(cmd)}`", file=sys.stderr)
      return 1
    print(f"  state {state or '?'}; waiting", file=sys.stderr, flush=True)
    time.sleep(30)


def _workdir(args) -> str:
  for a in args.rest:
    if a.startswith("--workdir="):
      return a[len("--workdir="):]
  return ""


def _ssh(args, command: str, worker: str = "all") -> list[str]:
  return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.name, f"--worker={worker}",
          *_base(args), f"--command={command}"]


def install(args) -> list[list[str]]:
  """Ships the committed tree (git archive) to every worker and installs it."""
  setup = (f"mkdir -p {REMOTE_DIR} && tar -xzf {REPO_TARBALL} -C {REMOTE_DIR} && "
           f"python3 -m venv ~/venv && ~/venv/bin/pip install -q --upgrade pip && "
           f"cd {REMOTE_DIR} && ~/venv/bin/pip install -q -e '.[tpu]'")
  return [
      ["git", "archive", "--format=tar.gz", f"--output={REPO_TARBALL}", "HEAD"],
      ["gcloud", "compute", "tpus", "tpu-vm", "scp", REPO_TARBALL, f"{args.name}:~",
       "--worker=all", *_base(args)],
      _ssh(args, setup),
  ]


def _python_command(args, module: str) -> str:
  body = (f"cd {REMOTE_DIR} && ~/venv/bin/python -m {module} "
          + " ".join(shlex.quote(a) for a in args.rest))
  if args.detach:
    return f"cd ~ && nohup bash -c {shlex.quote(body)} > ~/run.log 2>&1 &"
  return body


def run(args) -> list[list[str]]:
  return [_ssh(args, _python_command(args, "alignment.main"))]


def study(args) -> list[list[str]]:
  return [_ssh(args, _python_command(args, "alignment.study"))]


def logs(args) -> list[list[str]]:
  return [_ssh(args, "tail -n 200 -f ~/run.log", worker=str(args.worker))]


def copy(args) -> list[list[str]]:
  """The run's workdir to --local: from gs:// with gcloud storage, else from worker 0."""
  workdir = args.remote or _workdir(args)
  if not workdir:
    raise SystemExit("error: copy needs the run's --workdir after -- (or --remote=PATH)")
  if workdir.startswith("gs://"):
    return [["gcloud", "storage", "cp", "--recursive", workdir, args.local]]
  remote = workdir if workdir.startswith(("/", "~")) else f"~/{REMOTE_DIR}/{workdir}"
  return [["gcloud", "compute", "tpus", "tpu-vm", "scp", "--recurse",
           f"{args.name}:{remote}", args.local, "--worker=0", *_base(args)]]


def delete(args) -> list[list[str]]:
  if args.queued:
    return [["gcloud", "compute", "tpus", "queued-resources", "delete", f"{args.name}-qr",
             *_base(args), "--force", "--quiet"]]
  return [["gcloud", "compute", "tpus", "tpu-vm", "delete", args.name, *_base(args), "--quiet"]]


SUBCOMMANDS = {"create": create, "wait": wait, "install": install, "run": run, "study": study,
               "logs": logs, "copy": copy, "delete": delete}


def parse(argv):
  argv = list(argv)
  rest: list[str] = []
  if "--" in argv:
    i = argv.index("--")
    argv, rest = argv[:i], argv[i + 1:]
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("subcommand", choices=sorted(SUBCOMMANDS) + ["all"])
  p.add_argument("--name", required=True, help="TPU VM name")
  p.add_argument("--zone", required=True)
  p.add_argument("--project", default="")
  p.add_argument("--accelerator", default="v4-32", help="e.g. v4-32, v5litepod-16")
  p.add_argument("--runtime", default=RUNTIME)
  p.add_argument("--queued", action="store_true", help="use a queued resource")
  p.add_argument("--spot", action="store_true")
  p.add_argument("--detach", action="store_true", help="run in the background (see logs)")
  p.add_argument("--worker", default="0")
  p.add_argument("--remote", default="", help="copy: the workdir (default: --workdir after --)")
  p.add_argument("--wait_minutes", type=float, default=60.0,
                 help="wait: how long a queued resource may take to become ACTIVE")
  p.add_argument("--study", action="store_true", help="all: run alignment.study, not main")
  p.add_argument("--local", default="runs/tpu")
  p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
  args = p.parse_args(argv)
  args.rest = rest
  if args.subcommand in ("run", "study", "all") and not rest:
    p.error(f"{args.subcommand} needs the experiment's flags after --")
  if args.subcommand == "all" and args.detach:
    p.error("all deletes the slice when the run ends: it cannot --detach")
  return args


def plan(args) -> list[list[str]]:
  if args.subcommand != "all":
    return SUBCOMMANDS[args.subcommand](args)
  return (create(args) + wait(args) + install(args) + (study(args) if args.study else run(args))
          + copy(args))


def main(argv=None) -> int:
  args = parse(sys.argv[1:] if argv is None else argv)
  commands = plan(args)
  cleanup = delete(args) if args.subcommand == "all" else []
  workdir = _workdir(args)
  if args.subcommand in ("run", "study", "all") and not workdir.startswith("gs://"):
    print("warning: a slice of several hosts needs --workdir=gs://... (every host writes its "
          "checkpoint shards there); a local workdir works on one-host slices only",
          file=sys.stderr)
  if args.dry_run:
    for cmd in commands + cleanup:
      print(shlex.join(cmd))
    return 0
  status = 0
  try:
    for cmd in commands:
      print("+ " + shlex.join(cmd), file=sys.stderr, flush=True)
      status = _poll(cmd, args.wait_minutes) if isinstance(cmd, Poll) else subprocess.call(cmd)
      if status:
        print(f"error: command failed with status {status}: {shlex.join(cmd)}",
              file=sys.stderr)
        break
  finally:
    for cmd in cleanup:
      print("+ " + shlex.join(cmd), file=sys.stderr, flush=True)
      subprocess.call(cmd)
  return status


if __name__ == "__main__":
  sys.exit(main())
