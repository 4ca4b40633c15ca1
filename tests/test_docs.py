"""The repository stands alone: its docs and docstrings point only inside it."""
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTSIDE = re.compile(r"\b(PAPER|DESIGN|STYLE)\.md\b|\.\./shared\b")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _tracked(*suffixes):
  files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
  return [f for f in files if f.endswith(suffixes) and os.path.exists(os.path.join(ROOT, f))]


def test_nothing_points_outside_the_repository():
  hits = []
  for path in _tracked(".py", ".md", ".sh", ".gin", "Makefile"):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
      for n, line in enumerate(f, 1):
        if OUTSIDE.search(line) and path != "tests/test_docs.py":
          hits.append(f"{path}:{n}: {line.strip()}")
  assert not hits, "\n".join(hits)


def test_relative_links_in_the_docs_resolve():
  broken = []
  for path in _tracked(".md"):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
      text = f.read()
    for target in LINK.findall(text):
      if "://" in target or target.startswith("mailto:"):
        continue
      if not os.path.exists(os.path.join(ROOT, os.path.dirname(path), target)):
        broken.append(f"{path}: ({target})")
  assert not broken, "\n".join(broken)
