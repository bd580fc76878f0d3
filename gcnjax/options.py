"""Command-line options derived from the configs: one mechanism for every command.

Every field of a frozen config dataclass, at any depth of nesting, becomes a
flag named by its path: ``DescriptorConfig.langevin.step_size`` is
``--langevin.step-size 0.01``, ``CoopConfig.descriptor.sigma`` is
``--descriptor.sigma 0.016``. Values are read by the field's type: numbers,
``true``/``false``, ``none`` for an optional field, ``64,64`` for a tuple,
and JSON for anything else (``--layers '[{"features": 64, "kernel": 15}]'``).
The config's own checks then run on the result, so a bad value is refused
with the field's name.

A command adds the flags of its config with :func:`add_config_flags` and
applies what was given with :func:`apply_config_flags`; shortcuts (``--steps``,
``--delta``, ``--lr``, ...) are a table of field paths per command
(:func:`apply_shortcuts`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = ["config_fields", "get_at", "replace_at", "add_config_flags", "apply_config_flags", "given_config_flags",
           "flag_name", "parse_value", "apply_shortcuts", "resume_refusals"]

_PREFIX = "config:"
Path = Tuple[str, ...]


def get_at(config, path: Sequence[str]):
    """The value at ``path`` (field names) in a nested config."""
    for name in path:
        config = getattr(config, name)
    return config


def replace_at(config, path: Sequence[str], value):
    """``config`` with the field at ``path`` replaced by ``value`` (nested
    dataclasses are replaced along the way; every config's checks run)."""
    if not path:
        return value
    head, rest = path[0], tuple(path[1:])
    return dataclasses.replace(config, **{head: replace_at(getattr(config, head), rest, value)})


def config_fields(config_type: type, prefix: Path = ()) -> Iterator[Tuple[Path, Any]]:
    """``(path, type)`` of every leaf field of a config dataclass, depth first."""
    hints = typing.get_type_hints(config_type)
    for field in dataclasses.fields(config_type):
        kind = hints[field.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            yield from config_fields(kind, prefix + (field.name,))
        else:
            yield prefix + (field.name,), kind


def flag_name(path: Sequence[str]) -> str:
    """``("langevin", "step_size") -> "--langevin.step-size"``."""
    return "--" + ".".join(name.replace("_", "-") for name in path)


def _type_text(kind) -> str:
    """``float``, ``float|none``, ``int,...`` (a tuple), ``json``: how a value is written."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Union:
        return "|".join(_type_text(a) for a in args if a is not type(None)) + ("|none" if type(None) in args else "")
    if origin in (tuple, list) and args:
        if any(dataclasses.is_dataclass(a) for a in args):
            return "json"
        return ",".join("..." if a is Ellipsis else _type_text(a) for a in args)
    return getattr(kind, "__name__", "json")


_TRUE, _FALSE, _NONE = ("true", "yes", "1", "on"), ("false", "no", "0", "off"), ("none", "null")


def parse_value(text: str, kind, name: str = "value"):
    """``text`` read as a value of type ``kind``; a ValueError naming ``name``
    and the expected form otherwise."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Union:
        if text.strip().lower() in _NONE and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return parse_value(text, option, name)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(f"{name}: cannot read {text!r} as {' or '.join(_type_text(a) for a in args)}.")
    if kind is bool:
        low = text.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ValueError(f"{name}: expected true or false, got {text!r}.")
    if kind in (int, float, str):
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"{name}: expected {kind.__name__}, got {text!r}.") from None
        return value
    if origin in (tuple, list) and args and all(not dataclasses.is_dataclass(a) for a in args if a is not Ellipsis):
        parts = [p for p in text.replace("[", "").replace("]", "").replace("(", "").replace(")", "").split(",")
                 if p.strip()]
        if len(args) == 2 and args[1] is Ellipsis:
            items = [parse_value(p.strip(), args[0], name) for p in parts]
        elif len(parts) == len(args):
            items = [parse_value(p.strip(), a, name) for p, a in zip(parts, args)]
        else:
            raise ValueError(f"{name}: expected {len(args)} comma-separated values, got {text!r}.")
        return tuple(items)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"{name}: expected JSON for a {_type_text(kind)}, got {text!r}.") from None
    element = args[0] if origin in (tuple, list) and args else None
    if element is not None and dataclasses.is_dataclass(element) and isinstance(value, list):
        try:
            return tuple(element(**v) if isinstance(v, Mapping) else v for v in value)
        except TypeError as err:
            raise ValueError(f"{name}: {err}") from None
    return value


def add_config_flags(parser: argparse.ArgumentParser, config_type: type, *, skip: Sequence[str] = (),
                     title: Optional[str] = None) -> None:
    """One flag per leaf field of ``config_type`` (:func:`flag_name`), in an
    argument group of their own (``title``). A flag the parser already has
    (a shortcut of the same name, such as ``--seed``) is left to it."""
    group = parser.add_argument_group(title or (
        f"every field of {config_type.__name__} (default: the preset's; a resumed run takes only "
        "the run's logging, length and speed fields)"))
    taken = set(parser._option_string_actions)
    for path, kind in config_fields(config_type):
        flag = flag_name(path)
        if flag in taken or ".".join(path) in skip:
            continue
        group.add_argument(flag, dest=_PREFIX + ".".join(path), metavar=_type_text(kind).upper(),
                           default=argparse.SUPPRESS)


def given_config_flags(args: argparse.Namespace) -> Dict[Path, str]:
    """``{path: text}`` of the config flags given on the command line."""
    return {tuple(dest[len(_PREFIX):].split(".")): text for dest, text in vars(args).items()
            if dest.startswith(_PREFIX)}


def apply_config_flags(config, args: argparse.Namespace):
    """``config`` with every field flag given in ``args`` applied, read by
    the field's type."""
    kinds = dict(config_fields(type(config)))
    for path, text in given_config_flags(args).items():
        config = replace_at(config, path, parse_value(text, kinds[path], flag_name(path)))
    return config


def apply_shortcuts(config, args: argparse.Namespace, table: Mapping[str, Union[Path, List[Path]]]):
    """``config`` with the shortcut flags given in ``args`` applied: ``table``
    maps an argument's dest (``"steps"``) to the field path(s) it sets
    (``("langevin", "n_steps")``). ``"delta"`` maps to the path of a
    :class:`gcnjax.langevin.LangevinConfig`, changed by its
    :meth:`~gcnjax.langevin.LangevinConfig.with_delta` (every other setting
    of the chain kept)."""
    for dest, paths in table.items():
        value = getattr(args, dest, None)
        if value is None or value is False:
            continue
        for path in ([paths] if isinstance(paths, tuple) else paths):
            if dest == "delta":
                config = replace_at(config, path, get_at(config, path).with_delta(value))
            else:
                config = replace_at(config, path, value)
    return config


def resume_refusals(config, saved) -> List[str]:
    """What a resumed run cannot take: ``"--flag NEW (the run's: OLD)"`` for
    each leaf field where ``config`` (the saved config with the command's
    flags applied) differs from ``saved``, except the run's logging
    (``run.*``), its length (``n_iterations``, ``n_epochs``) and the
    speed-only fields (``SPEED_FIELDS`` of the config classes). Flags equal
    to the saved settings are no change."""
    refused = []
    for path, _ in config_fields(type(config)):
        new, old = get_at(config, path), get_at(saved, path)
        owner = type(get_at(config, path[:-1]))
        if (new == old or path[0] == "run" or path[-1] in ("n_iterations", "n_epochs")
                or path[-1] in getattr(owner, "SPEED_FIELDS", ())):
            continue
        refused.append(f"{flag_name(path)} {_shown(new)} (the run's: {_shown(old)})")
    return refused


def _shown(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)
