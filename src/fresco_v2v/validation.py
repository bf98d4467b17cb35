"""Config validation on pydantic v2, in fresco-v2v's words.

The config classes are frozen pydantic dataclasses made by :func:`config_class`: construction validates, and
``dataclasses.replace`` (which constructs) and ``dataclasses.fields`` keep working. Strictness is per field, in the
leaf types below (:func:`flag`, :func:`integer`, :func:`number`, :func:`text`, :func:`choice`, ...): a boolean is
never a number or a string, an integer never a boolean or a float, a number is finite, and each leaf says in words
what it expects. :func:`config_error` turns any pydantic ``ValidationError`` into one :class:`ConfigError` that
names the field by its dotted path in a config file; no pydantic wording reaches the user.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import typing
from collections.abc import Callable
from dataclasses import fields
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    ConfigDict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    WrapValidator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass

from .errors import ConfigError

#: ``strict=True`` here would make pydantic dataclasses refuse a mapping for a nested section (they would want an
#: instance), so strictness lives in the leaf types instead; unknown names are errors; no inf or nan anywhere.
_MODEL_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)

#: Seeds: what numpy's and torch's generators all take, and small enough that the propagation stage's per-frame
#: seeds (``propagate.synthesis.frame_seed``) stay in torch's range.
MAX_SEED = 2**32 - 1

_NOTHING = object()  # "no value was given" (a missing field), as opposed to null
_UNKNOWN_NAME = ("unexpected_keyword_argument", "invalid_key", "extra_forbidden")


class Invalid(ValueError):
    """Raised inside validators: pydantic wraps it in its ValidationError, :func:`config_error` reads it back.

    ``given`` defaults to the value being validated; ``at`` is a path below the validated value (a model check names
    the field it is about)."""

    def __init__(self, expected: str, given: object = _NOTHING, at: tuple = ()):
        super().__init__(expected)
        self.expected, self.given, self.at = expected, given, at


# -- the classes -----------------------------------------------------------------------------------------------------


def config_class(path: str = "", label: str | None = None):
    """Class decorator: a frozen, validating pydantic dataclass whose construction raises :class:`ConfigError`.

    ``path`` is where the class sits in a config file (``"fresco.attention"``), so that an error names the field as a
    config file would, however the instance was made. ``label`` names the whole (an unknown top-level name); by
    default the path or the class name.
    """

    def make(cls):
        cls = pydantic_dataclass(frozen=True, config=_MODEL_CONFIG)(cls)
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            try:
                init(self, *args, **kwargs)
            except ValidationError as e:
                raise config_error(e, cls) from None

        cls.__init__ = __init__
        cls._config_path = path
        cls._config_label = label or path or cls.__name__
        return cls

    return make


def from_data(cls, data: object, path: str | None = None):
    """An instance of the config class ``cls`` from plain data (nested mappings for its sections); errors are named
    from ``path`` (default: the class's own)."""
    try:
        return _adapter(cls).validate_python(data)
    except ValidationError as e:
        raise config_error(e, cls, path) from None


@functools.cache
def _adapter(cls) -> TypeAdapter:
    return TypeAdapter(cls)


def field_default(cls, name: str):
    """The default of field ``name`` of a config class, as constructing it without that field gives (None for a
    required field)."""
    info = cls.__pydantic_fields__[name]
    return None if info.is_required() else info.get_default(call_default_factory=True)


def field_help(cls, name: str) -> str:
    """The short description of field ``name`` (what the command line shows as help), or ''."""
    return cls.__pydantic_fields__[name].description or ""


# -- leaf types ------------------------------------------------------------------------------------------------------

# The bases are pydantic's Strict* types: a boolean is not an int, no number is a str; StrictFloat still takes an
# int (as 5.0): YAML's 5 is a fine number.


def leaf(base, expected: str, ok: Callable[[Any], bool] | None = None, convert: Callable | None = None):
    """``base`` validated by pydantic (strict types), then ``ok``; any failure is reported as ``expected``.
    ``convert`` runs first (a YAML list to a tuple, a Path to its str)."""

    def check(value, handler):
        if convert is not None:
            value = convert(value)
        try:
            value = handler(value)
        except ValidationError:
            raise Invalid(expected) from None
        if ok is not None and not ok(value):
            raise Invalid(expected)
        return value

    return Annotated[base, WrapValidator(check)]


def _or_null(base, expected: str, ok, null: str | None):
    """``null``: what None means for this field, when None is allowed."""
    if null is None:
        return base, expected, ok
    return base | None, f"{expected}, or null ({null})", (lambda v: v is None or ok(v)) if ok else None


def flag():
    return leaf(StrictBool, "a boolean")


def text(expected: str = "a text", ok: Callable[[str], bool] | None = None):
    return leaf(StrictStr, expected, ok)


def nonblank(value: str) -> bool:
    return bool(value.strip())


def path_text(expected: str, ok: Callable[[str], bool] | None = None, null: str | None = None):
    """A path as text: a str, or an ``os.PathLike`` (kept as its str, which run.json can hold)."""
    return leaf(*_or_null(StrictStr, expected, ok, null), convert=_fspath)


def _fspath(value):
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def integer(
    ge: int | None = None,
    le: int | None = None,
    expected: str | None = None,
    ok: Callable[[int], bool] | None = None,
    null: str | None = None,
):
    """An integer (never a boolean or a float) in [ge, le]; ``ok``: a further rule, worded in ``expected``."""
    if expected is None:
        expected = "an integer" + (
            f" in {ge}..{le}" if ge is not None and le is not None else _bound(">=", ge, "<=", le)
        )

    def in_range(v: int) -> bool:
        return (ge is None or v >= ge) and (le is None or v <= le) and (ok is None or ok(v))

    return leaf(*_or_null(StrictInt, expected, in_range, null))


def number(gt: float | None = None, ge: float | None = None, le: float | None = None, expected: str | None = None):
    """A finite number (an int is taken as a float; a boolean is not a number) in (gt or [ge, le]."""
    if expected is None:
        low = "(" if gt is not None else "["
        lo = gt if gt is not None else ge
        if lo is not None and le is not None:
            expected = f"a number in {low}{lo}, {le}]"
        else:
            expected = "a finite number" + (_bound(">", gt, "<=", le) if gt is not None else _bound(">=", ge, "<=", le))

    def in_range(v: float) -> bool:
        return (gt is None or v > gt) and (ge is None or v >= ge) and (le is None or v <= le)

    return leaf(StrictFloat, expected, in_range)


def _bound(lo_op: str, lo, hi_op: str, hi) -> str:
    return f" {lo_op} {lo}" if lo is not None else f" {hi_op} {hi}" if hi is not None else ""


def choice(*values, expected: str | None = None):
    """One of ``values`` (strings and booleans, each matched strictly: 1 is not true, "true" is not true)."""
    kinds = {type(v) for v in values}
    base = functools.reduce(lambda a, b: a | b, [StrictBool if k is bool else StrictStr for k in kinds])
    if expected is None:
        shown = [_yaml(v) for v in values]
        expected = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"
    return leaf(base, expected, lambda v: any(type(v) is type(c) and v == c for c in values))


def _yaml(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else repr(value)


def seq(item, expected: str, nonempty: bool = False, null: str | None = None):
    """A list of ``item`` (a tuple; a YAML list is taken): ``expected`` words the whole, an item says its own.
    ``null``: what None means for this field, when None is allowed."""
    if null is not None:
        expected = f"{expected}, or null ({null})"

    def as_tuple(value):
        if value is None and null is not None:
            return None
        if isinstance(value, list):
            value = tuple(value)
        if not isinstance(value, tuple) or (nonempty and not value):
            raise Invalid(expected)
        return value

    kind = tuple[item, ...] if null is None else tuple[item, ...] | None
    return Annotated[kind, BeforeValidator(as_tuple)]


def mapping(value_type=Any, expected: str = "a mapping"):
    """A mapping with text keys; null is taken as an empty one (a YAML section with nothing under it)."""

    def as_dict(value):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise Invalid(expected)
        return value

    return Annotated[dict[StrictStr, value_type], BeforeValidator(as_dict)]


def section(cls):
    """A nested config class; null is taken as its defaults (a YAML section with nothing under it)."""
    return Annotated[cls, BeforeValidator(lambda v: {} if v is None else v)]


# -- ValidationError -> ConfigError ------------------------------------------------------------------------------


def config_error(err: ValidationError, root, path: str | None = None) -> ConfigError:
    """One ConfigError for a failed validation of the config class ``root``: unknown names first (one message with
    every unknown name of the section and a did-you-mean), else the first wrong value."""
    path = root._config_path if path is None else path
    errors = err.errors(include_url=False)
    unknown = [e for e in errors if e["type"] in _UNKNOWN_NAME]
    if unknown:
        return _unknown_names(unknown, root, path)
    return _wrong_value(errors[0], root, path)


def _unknown_names(errors: list[dict], root, path: str) -> ConfigError:
    parent = errors[0]["loc"][:-1]
    names = [e["input"] if e["type"] == "invalid_key" else e["loc"][-1] for e in errors if e["loc"][:-1] == parent]
    cls = _class_at(root, parent)
    known = [f.name for f in fields(cls)] if cls is not None else []
    kind = "sections" if known and all(_field_class(cls, k) for k in known) else "names"  # fresco: its sections
    expected = names_expected(names, known, kind)
    return ConfigError(_dotted(root, path, parent), expected, names, shown=_short(names))


def _wrong_value(e: dict, root, path: str) -> ConfigError:
    loc, kind, given = tuple(e["loc"]), e["type"], e.get("input", _NOTHING)
    error = (e.get("ctx") or {}).get("error")
    if isinstance(error, Invalid):
        expected, loc = error.expected, loc + error.at
        given = given if error.given is _NOTHING else error.given
    elif loc[-1:] == ("[key]",):  # a mapping's key: name the mapping
        expected, loc = "names (texts) as keys", loc[:-2]
    elif kind in ("missing", "missing_argument"):
        expected, given = "a value", _NOTHING
    elif kind == "dataclass_type":
        expected = "a mapping of option names to values"
    elif kind == "unexpected_positional_argument":
        cls = _class_at(root, loc[:-1])
        expected, loc = f"at most {len(fields(cls)) if cls else 0} values by position", loc[:-1]
    else:
        expected = _TYPE_WORDS.get(kind, "a valid value")
    return ConfigError(_dotted(root, path, loc), expected, given, shown=describe(given))


#: pydantic's types of error for values no leaf type wraps (a section's own keys and values).
_TYPE_WORDS = {
    "bool_type": "a boolean",
    "int_type": "an integer",
    "float_type": "a number",
    "finite_number": "a finite number",
    "string_type": "a text",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a mapping",
}


def _dotted(root, path: str, loc: tuple) -> str:
    parts = [path] if path else []
    parts += [str(p) for p in _by_name(root, loc)]
    return ".".join(parts) or root._config_label


def _by_name(root, loc: tuple) -> tuple:
    """``loc`` with the positions of arguments given by position (``FrescoConfig(AttentionConfig(...))``) replaced by
    the fields' names; an index into a list stays an index."""
    out, cls = [], root
    for p in loc:
        if _is_config_class(cls) and isinstance(p, int) and 0 <= p < len(fields(cls)):
            p = fields(cls)[p].name
        out.append(p)
        cls = _field_class(cls, p)
    return tuple(out)


def _class_at(root, loc: tuple):
    """The config class found at ``loc`` below ``root`` (None where ``loc`` leaves the config classes)."""
    cls = root
    for p in _by_name(root, loc):
        cls = _field_class(cls, p)
    return cls


def _field_class(cls, name):
    """The config class of field ``name`` of ``cls``, or None (not a section, or not a config class at all)."""
    if not _is_config_class(cls) or not isinstance(name, str) or name not in cls.__pydantic_fields__:
        return None
    return _config_class_in(cls.__pydantic_fields__[name].annotation)


def _config_class_in(annotation):
    """The config class inside an annotation (``Annotated[X, ...]``, ``X | None``), else None."""
    if _is_config_class(annotation):
        return annotation
    for arg in typing.get_args(annotation):
        found = _config_class_in(arg)
        if found is not None:
            return found
    return None


def _is_config_class(obj) -> bool:
    return isinstance(obj, type) and hasattr(obj, "_config_path")


def names_expected(unknown, known, kind: str = "names") -> str:
    """The 'expected' part of an unknown-name error: the likely intended names, else every known one."""
    guesses = {g for u in unknown for g in difflib.get_close_matches(_as_text(u), known, n=1, cutoff=0.6)}
    guesses = sorted(guesses)
    if guesses:
        return f"known {kind} (did you mean {', '.join(map(repr, guesses))}?)"
    return f"{kind} among {sorted(known)}"


def describe(value) -> str:
    """A given value as a user would recognise it from YAML: 'the string 'false'', 'true (a boolean)', 'null'."""
    if value is _NOTHING:
        return "nothing"
    if isinstance(value, bool):
        return f"{_yaml(value)} (a boolean)"
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"the string {_short(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} (not a finite number)"
    if isinstance(value, (int, float)):
        return _short(value)
    if isinstance(value, (list, tuple)):
        return f"the list {_short(list(value))}"
    if isinstance(value, dict):
        return f"the mapping {_short(value)}"
    return f"{_short(value)} (a {type(value).__name__})"


def _short(value, limit: int = 120) -> str:
    """repr, cut: a wrong value can be a whole pasted text."""
    try:
        r = repr(value)
    except ValueError:  # an int past Python's limit on digits (a YAML key or value can be one)
        return f"a {type(value).__name__} too long to show"
    return r if len(r) <= limit else f"{r[: limit - 5]} ...{r[-1]}"


def _as_text(name) -> str:
    return name if isinstance(name, str) else _short(name)
