"""Cloud TPU launcher: the dry run prints exactly the gcloud commands it would run."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TPU = os.path.join(ROOT, "launch", "tpu.py")


def _dry(*args):
  args = list(args)
  at = args.index("--") if "--" in args else len(args)  # flags after -- go to the experiment
  args.insert(at, "--dry_run")
  out = subprocess.run([sys.executable, TPU, *args], capture_output=True,
                       text=True, check=True, cwd=ROOT)
  return out.stdout.strip().splitlines()


COMMON = ("--name=al-1", "--zone=us-central2-b", "--project=proj")


def test_create_vm_and_queued_resource():
  assert _dry("create", *COMMON, "--accelerator=v4-32") == [
      "gcloud compute tpus tpu-vm create al-1 --accelerator-type=v4-32 "
      "--version=tpu-ubuntu2204-base --zone=us-central2-b --project=proj"]
  assert _dry("create", *COMMON, "--queued", "--spot") == [
      "gcloud compute tpus queued-resources create al-1-qr --node-id=al-1 "
      "--accelerator-type=v4-32 --runtime-version=tpu-ubuntu2204-base "
      "--zone=us-central2-b --project=proj --spot"]


def test_install_ships_the_tree_to_every_worker():
  lines = _dry("install", *COMMON)
  assert lines[0] == "git archive --format=tar.gz --output=alignment.tar.gz HEAD"
  assert lines[1] == ("gcloud compute tpus tpu-vm scp alignment.tar.gz 'al-1:~' --worker=all "
                      "--zone=us-central2-b --project=proj")
  assert lines[2].startswith("gcloud compute tpus tpu-vm ssh al-1 --worker=all ")
  import shlex
  remote = shlex.split(lines[2])[-1]
  assert remote.startswith("--command=mkdir -p alignment && tar -xzf alignment.tar.gz")
  assert remote.endswith("pip install -q -e '.[tpu]'")


def test_run_on_all_workers_then_fetch_and_delete():
  lines = _dry("all", *COMMON, "--", "--config=configs/online.py:paper",
               "--workdir=gs://b/run")
  assert [l.split()[4] for l in lines[:1]] == ["create"]
  run = [l for l in lines if "alignment.main" in l]
  assert len(run) == 1 and "--worker=all" in run[0]
  assert "--config=configs/online.py:paper --workdir=gs://b/run" in run[0]
  assert lines[-2] == "gcloud storage cp --recursive gs://b/run runs/tpu"
  assert lines[-1] == ("gcloud compute tpus tpu-vm delete al-1 --zone=us-central2-b "
                       "--project=proj --quiet")


def test_detached_run_logs_and_delete_queued():
  run = _dry("run", *COMMON, "--detach", "--", "--config=configs/sft.py:paper",
             "--workdir=gs://b/sft")[0]
  assert "nohup bash -c" in run and "> ~/run.log" in run
  assert _dry("logs", *COMMON) == [
      "gcloud compute tpus tpu-vm ssh al-1 --worker=0 --zone=us-central2-b --project=proj "
      "'--command=tail -n 200 -f ~/run.log'"]
  assert _dry("delete", *COMMON, "--queued") == [
      "gcloud compute tpus queued-resources delete al-1-qr --zone=us-central2-b "
      "--project=proj --force --quiet"]


def test_run_without_experiment_flags_is_a_usage_error():
  out = subprocess.run([sys.executable, TPU, "run", *COMMON, "--dry_run"],
                       capture_output=True, text=True, cwd=ROOT)
  assert out.returncode == 2 and "needs the experiment's flags after --" in out.stderr


def test_queued_all_waits_for_the_slice_then_runs_the_study_and_deletes():
  lines = _dry("all", *COMMON, "--queued", "--study", "--", "--config=configs/study.py:default",
               "--workdir=gs://b/study")
  assert [l.split()[3:5] for l in lines[:2]] == [["queued-resources", "create"],
                                                 ["queued-resources", "describe"]]
  assert lines[1] == ("gcloud compute tpus queued-resources describe al-1-qr "
                      "--zone=us-central2-b --project=proj '--format=value(state.state)'")
  run = [l for l in lines if "--command=cd alignment" in l]
  assert len(run) == 1 and "--worker=all" in run[0] and "-m alignment.study" in run[0]
  assert lines[-2] == "gcloud storage cp --recursive gs://b/study runs/tpu"
  assert lines[-1].startswith("gcloud compute tpus queued-resources delete al-1-qr")


def test_copy_of_a_local_workdir_comes_from_worker_0():
  assert _dry("copy", *COMMON, "--local=out", "--", "--workdir=runs/online") == [
      "gcloud compute tpus tpu-vm scp --recurse 'al-1:~/alignment/runs/online' out "
      "--worker=0 --zone=us-central2-b --project=proj"]


def test_local_workdir_warns_and_all_cannot_detach():
  out = subprocess.run([sys.executable, TPU, "run", *COMMON, "--dry_run", "--",
                        "--config=configs/online.py:tiny", "--workdir=runs/x"],
                       capture_output=True, text=True, cwd=ROOT)
  assert out.returncode == 0 and "needs --workdir=gs://" in out.stderr
  out = subprocess.run([sys.executable, TPU, "all", *COMMON, "--detach", "--dry_run", "--",
                        "--workdir=gs://b/x"], capture_output=True, text=True, cwd=ROOT)
  assert out.returncode == 2 and "cannot --detach" in out.stderr


def test_a_study_runs_on_every_worker_of_the_slice():
  """`study` starts the study's command on every worker, as `run` does an experiment's:
  each worker is one process of the study (alignment.study.runner), which runs each
  alignment stage across all of them; --detach leaves it running, logging to
  ~/run.log."""
  assert _dry("study", *COMMON, "--", "--config=configs/study.py:tpu",
              "--config.seeds=[0,1]", "--workdir=gs://b/study") == [
      "gcloud compute tpus tpu-vm ssh al-1 --worker=all --zone=us-central2-b --project=proj "
      "'--command=cd alignment && ~/venv/bin/python -m alignment.study "
      "--config=configs/study.py:tpu '\"'\"'--config.seeds=[0,1]'\"'\"' "
      "--workdir=gs://b/study'"]
  detached = _dry("study", *COMMON, "--detach", "--", "--config=configs/study.py:tpu",
                  "--workdir=gs://b/study")[0]
  assert "--worker=all" in detached and "nohup bash -c" in detached
  assert "-m alignment.study --config=configs/study.py:tpu --workdir=gs://b/study" in detached
  assert detached.endswith("> ~/run.log 2>&1 &'")
