"""Names for the callables a run is built from, precise enough to tell two experiments apart.

A run directory records what it was made with (its task's loss and metrics, its pruner)
and refuses to resume with anything else. A function importable by name (a library's
loss, a registered pruner) is recorded by that name. A function that is not (a lambda,
a closure, a function of a notebook or script, i.e. ``__main__``) is recorded by its name
*and* a hash of what it does: its source (or bytecode when there is none), its default
arguments, the values it closes over and the simple module-level constants it reads.
So ``lambda p, m, k: magnitude(0.5)(p, m, k)`` and the same with ``0.9`` are two different
pruners, and so are two closures of one factory with different arguments.

Example:
    >>> half = lambda params, mask, key: 0.5
    >>> most = lambda params, mask, key: 0.9
    >>> callable_fingerprint(half) == callable_fingerprint(most)
    False
    >>> callable_fingerprint(half).startswith("jaxticket.fingerprints.<lambda>#")
    True
    >>> import math; callable_fingerprint(math.sqrt)   # importable by name: the name
    'math.sqrt'
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import types
from typing import Any, Callable

import numpy as np

__all__ = ["callable_fingerprint", "qualified_name"]

_SIMPLE = (bool, int, float, complex, str, bytes, type(None))
_MAX_DEPTH = 12


def qualified_name(fn: Callable) -> str:
    """``module.qualname`` of a function or class, else of the object's type.

    Example:
        >>> import math; qualified_name(math.sqrt)
        'math.sqrt'
    """
    if hasattr(fn, "__qualname__"):
        return f"{getattr(fn, '__module__', None) or '?'}.{fn.__qualname__}"
    cls = type(fn)
    return f"{cls.__module__}.{cls.__qualname__}"


def _importable(fn) -> bool:
    """Whether the name alone identifies ``fn``: a module-level function or class of a
    module other than ``__main__``."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    return (module not in (None, "__main__") and qualname is not None and "<" not in qualname
            and not isinstance(fn, functools.partial))


def callable_fingerprint(fn: Callable) -> str:
    """``module.qualname`` for a function importable by that name, else
    ``module.qualname#<12 hex digits>`` (see the module docstring for what is hashed).

    Deterministic across processes and Python versions for the same source, arguments and
    captured values (objects without a stable description contribute their type's name).
    """
    if _importable(fn):
        return qualified_name(fn)
    digest = hashlib.sha256()
    _feed(digest, fn, 0)
    return f"{qualified_name(getattr(fn, 'func', fn))}#{digest.hexdigest()[:12]}"


def _feed(digest, value: Any, depth: int) -> None:
    digest.update(_describe(value, depth).encode())


def _describe(value: Any, depth: int) -> str:
    """A stable text for ``value``: what it is, never where it lives in memory."""
    if depth > _MAX_DEPTH:
        return f"<{type(value).__name__}>"
    if isinstance(value, _SIMPLE):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return type(value).__name__ + "(" + ",".join(_describe(v, depth + 1) for v in value) + ")"
    if isinstance(value, dict):
        items = sorted((_describe(k, depth + 1), _describe(v, depth + 1)) for k, v in value.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    if isinstance(value, np.ndarray) or type(value).__module__.startswith(("jax", "jaxlib")) and hasattr(value, "dtype"):
        arr = np.asarray(value)
        return f"array({arr.dtype},{arr.shape},{hashlib.sha256(arr.tobytes()).hexdigest()[:16]})"
    if isinstance(value, functools.partial):
        return (f"partial({_describe(value.func, depth + 1)},{_describe(value.args, depth + 1)},"
                f"{_describe(value.keywords, depth + 1)})")
    if isinstance(value, types.ModuleType):
        return f"module({value.__name__})"
    if isinstance(value, types.MethodType):
        return f"method({_describe(value.__func__, depth + 1)},{_describe(value.__self__, depth + 1)})"
    if isinstance(value, types.FunctionType):
        return _describe_function(value, depth)
    wrapped = getattr(value, "__wrapped__", None)  # jax.jit, functools.wraps decorators
    if wrapped is not None and wrapped is not value:
        return f"wrapped({qualified_name(type(value))},{_describe(wrapped, depth + 1)})"
    if _importable(value):  # classes and library functions
        return qualified_name(value)
    config = getattr(value, "config", None)
    if callable(config):  # pruners and schedules describe themselves as plain data
        try:
            return f"{qualified_name(value)}({_describe(config(), depth + 1)})"
        except Exception:  # noqa: BLE001 - an unregistered pruner: fall through
            pass
    text = repr(value)
    if " at 0x" in text:  # the default repr names an address, not a value
        fields = getattr(value, "__dict__", None)
        call = getattr(type(value), "__call__", None)
        parts = [qualified_name(type(value))]
        if isinstance(call, types.FunctionType):
            parts.append(_describe_function(call, depth + 1))
        if fields is not None:
            parts.append(_describe(fields, depth + 1))
        return "object(" + ",".join(parts) + ")"
    return f"{qualified_name(type(value))}:{text}"


def _describe_function(fn: types.FunctionType, depth: int) -> str:
    try:  # the source, and the code's constants and names (two lambdas on one line differ there)
        body = inspect.getsource(fn) + _describe_code(fn.__code__, bytecode=False)
    except (OSError, TypeError):
        body = _describe_code(fn.__code__, bytecode=True)
    closure = [cell.cell_contents for cell in (fn.__closure__ or ()) if _cell_has_value(cell)]
    constants = {name: fn.__globals__[name] for name in sorted(_global_names(fn.__code__))
                 if isinstance(fn.__globals__.get(name, _Missing), _SIMPLE + (tuple,))}
    return "function(" + ",".join([qualified_name(fn), body, _describe(fn.__defaults__, depth + 1),
                                   _describe(fn.__kwdefaults__, depth + 1), _describe(closure, depth + 1),
                                   _describe(constants, depth + 1)]) + ")"


class _Missing:
    pass


def _cell_has_value(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _describe_code(code: types.CodeType, bytecode: bool) -> str:
    """The code's constants and names (stable across Python versions), and its bytecode
    when asked (when there is no source to hash)."""
    consts = [(_describe_code(c, bytecode) if isinstance(c, types.CodeType) else repr(c)) for c in code.co_consts]
    return f"code({code.co_code.hex() if bytecode else ''},{consts},{code.co_names})"


def _global_names(code: types.CodeType) -> set:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names
