"""Gin experiment files mapped onto the typed configs of `alignment.config`.

An experiment may also be written as a gin file, as t5x users do. Its bindings
are `section.key = value` (sections are the config's top-level groups;
`experiment.key` for top-level scalars) and it names the Python config it
refines with `base.config = 'configs/<exp>.py:<arg>'`. `from_gin(path)` returns
the same typed, locked ConfigDict that the Python file would, with the bindings
applied; unknown sections or keys, configurable references, scopes and undefined
macros are `ConfigError`s naming the gin file (and line).
"""
from __future__ import annotations

import os
from typing import Any

from alignment.config import ConfigDict, ConfigError, load, set_key



class _GinMacro(str):
  """Placeholder for %NAME; resolved once the whole file is read."""


def _gin_statements(path: str) -> tuple[list[tuple[str, str, Any, int]], dict[str, Any]]:
  """The gin file's bindings (selector, key, value, line) and macro definitions,
  as written: values may still hold %NAME placeholders (a macro may be defined
  after its use)."""
  import gin  # pylint: disable=g-import-not-at-top,unused-import
  import tokenize  # pylint: disable=g-import-not-at-top  (gin's parser raises its TokenError)
  from gin import config_parser  # pylint: disable=g-import-not-at-top
  try:
    with open(path) as f:
      text = f.read()
  except OSError as e:
    raise ConfigError(f"{path}: {e}") from None
  except UnicodeDecodeError as e:
    raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
  bindings: list[tuple[str, str, Any, int]] = []
  macros: dict[str, Any] = {}

  class Delegate(config_parser.ParserDelegate):
    def configurable_reference(self, scoped_name, evaluate):
      raise ConfigError(f"{path}: '@{scoped_name}' - configurable references are not "
                        "supported; bind plain values")

    def macro(self, macro_name):
      return _GinMacro(macro_name)

  try:
    for statement in config_parser.ConfigParser(text, Delegate()):
      line = statement.location.line_num
      if not isinstance(statement, config_parser.BindingStatement):
        raise ConfigError(f"{path}:{line}: only bindings (section.key = value) are supported")
      if statement.scope:
        raise ConfigError(f"{path}:{line}: scopes ({statement.scope}/...) are not supported")
      if not statement.arg_name:  # a macro definition: NAME = value
        macros[statement.selector] = statement.value
      else:
        bindings.append((statement.selector, statement.arg_name, statement.value, line))
  except ConfigError as e:  # the Delegate's, to which gin adds lines quoting the binding
    first, *more = str(e).split("\n")
    raise ConfigError(f"{first} ({more[0].strip()})" if more else first) from None
  except SyntaxError as e:  # gin's messages may quote lines: one line here
    raise ConfigError(f"{path}: gin syntax error: {' '.join(str(e).split())}") from None
  except RecursionError:  # gin's parser recurses into nested lists
    raise ConfigError(f"{path}: gin syntax error: nested too deeply") from None
  except tokenize.TokenError as e:  # an unterminated string or bracket: (message, (line, col))
    raise ConfigError(f"{path}:{e.args[1][0]}: gin syntax error: {e.args[0]}") from None
  return bindings, macros


def _resolve_macros(value, macros: dict[str, Any], path: str, line: int, seen=()):
  """value with each %NAME replaced by its definition, inside lists, tuples and dicts too."""
  if isinstance(value, _GinMacro):
    if value not in macros:
      raise ConfigError(f"{path}:{line}: macro %{value} is not defined")
    if value in seen:  # A = %B, B = %A
      raise ConfigError(f"{path}:{line}: macro %{seen[0]} refers to itself")
    return _resolve_macros(macros[value], macros, path, line, seen + (value,))
  if isinstance(value, (list, tuple)):
    return type(value)(_resolve_macros(v, macros, path, line, seen) for v in value)
  if isinstance(value, dict):
    return {k: _resolve_macros(v, macros, path, line, seen) for k, v in value.items()}
  return value


def _gin_base(path: str, bindings: list[tuple[str, str, Any, int]]) -> ConfigDict:
  """The Python config the gin file refines (its one `base.config`), loaded."""
  base = [(v, line) for s, k, v, line in bindings if (s, k) == ("base", "config")]
  if len(base) != 1:
    raise ConfigError(f"{path}: needs exactly one `base.config = 'configs/<exp>.py:<arg>'`")
  (spec, line), = base
  if not isinstance(spec, str):
    raise ConfigError(f"{path}:{line}: base.config = {repr(spec)[:60]}: expected "
                      "'configs/<exp>.py:<arg>'")
  try:
    return load(_resolve_relative(spec, path))
  except ConfigError as e:  # the config file's error, said where the gin file named it
    raise ConfigError(f"{path}:{line}: base.config: {e}") from None


def from_gin(path: str) -> ConfigDict:
  """The typed config a gin experiment file describes (see the module docstring)."""
  bindings, macros = _gin_statements(path)
  bindings = [(s, k, _resolve_macros(v, macros, path, line), line) for s, k, v, line in bindings]
  config = _gin_base(path, bindings)
  for selector, key, value, line in bindings:
    if selector == "base":
      if key != "config":
        raise ConfigError(f"{path}:{line}: unknown binding base.{key}")
      continue
    dotted = key if selector == "experiment" else f"{selector}.{key}"
    set_key(config, dotted, value, f"{path}:{line}")
  return config


def _resolve_relative(spec: str, gin_path: str) -> str:
  """A base path is taken as given if it exists, else relative to the gin file."""
  path, sep, arg = spec.partition(":")
  if not os.path.exists(path):
    candidate = os.path.join(os.path.dirname(gin_path), path)
    if os.path.exists(candidate):
      path = candidate
  return path + sep + arg
