"""Named extension points: one registry type and one error for an unknown name.

Pruning methods (:data:`jaxticket.pruning.METHODS`), models (:data:`jaxticket.models.MODELS`),
datasets (:data:`jaxticket.data.DATASETS`), presets (:data:`jaxticket.configs.PRESETS`)
and branch kinds are each a :class:`Registry`: the same words for the same operations
(``register(name, obj, overwrite=False)``, ``get(name)``, ``names()``, ``name in
registry``), and the same :class:`UnknownNameError` naming the closest valid name and
all of them. Each package keeps its own friendly functions on top (``pruning.register``
as a decorator, ``data.register_dataset(spec)``, ``models.register_model(...)``).

Example:
    >>> shapes = Registry("shape", hint="your own: shapes.register(name, sides)")
    >>> shapes.register("triangle", 3)
    3
    >>> shapes.get("triangle"), "square" in shapes, shapes.names()
    (3, False, ('triangle',))
    >>> shapes.get("triangel")
    Traceback (most recent call last):
    ...
    jaxticket.registry.UnknownNameError: unknown shape 'triangel' (did you mean 'triangle'?); valid shapes: triangle; your own: shapes.register(name, sides).
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Iterator, Optional, Sequence, Union

__all__ = ["Registry", "UnknownNameError"]

_MISSING = object()


class UnknownNameError(ValueError):
    """A name that no registry entry has.

    The message is one line: ``unknown <kind> 'x'[: <reason>] (did you mean 'y'?); valid
    <kinds>: a, b, c[; <hint>].`` Attributes: ``kind``, ``name``, ``valid`` (the names),
    ``suggestion`` (the closest valid name, or None), ``reason``.

    Example:
        >>> str(UnknownNameError("model", "resnt20", ["lenet5", "resnet20"]))
        "unknown model 'resnt20' (did you mean 'resnet20'?); valid models: lenet5, resnet20."
    """

    def __init__(self, kind: str, name: Any, valid: Sequence[str], *, plural: Optional[str] = None,
                 reason: str = "", hint: str = ""):
        self.kind, self.name, self.valid, self.reason = kind, name, tuple(valid), reason
        close = difflib.get_close_matches(name, self.valid, n=1) if isinstance(name, str) else []
        self.suggestion = close[0] if close else None
        message = f"unknown {kind} {name!r}"
        if reason:
            message += f": {reason}"
        if self.suggestion is not None:
            message += f" (did you mean {self.suggestion!r}?)"
        message += f"; valid {plural or kind + 's'}: {', '.join(self.valid) or '(none registered)'}"
        if hint:
            message += f"; {hint.rstrip('.')}"
        super().__init__(message + ".")


class Registry:
    """Names to objects, with one vocabulary and one error for an unknown name.

    ``kind`` names what is registered in messages (``"dataset"``, ``"pruning method"``);
    ``plural`` its plural (default ``kind + "s"``); ``hint`` (text, or a function returning
    it) ends the unknown-name message, e.g. how to register one of your own.

    The mapping operations work too (``registry[name]``, ``registry[name] = obj`` replaces,
    ``del registry[name]``, ``pop``, ``len``, iteration over the sorted names), so tools such
    as ``pytest``'s ``monkeypatch.setitem`` can add an entry for one test.
    ``get(name, default)`` returns ``default`` for an unknown name; without a default it
    raises :class:`UnknownNameError`.

    Example:
        >>> colours = Registry("colour")
        >>> colours.register("red", (255, 0, 0))
        (255, 0, 0)
        >>> colours.register("red", (200, 0, 0))
        Traceback (most recent call last):
        ...
        ValueError: colour 'red' is registered already; pass overwrite=True to replace it
        >>> colours.get("blue", None) is None, list(colours)
        (True, ['red'])
    """

    def __init__(self, kind: str, *, plural: Optional[str] = None, hint: Union[str, Callable[[], str]] = ""):
        self.kind = kind
        self.plural = plural or kind + "s"
        self._hint = hint
        self._entries: dict[str, Any] = {}

    # ------------------------------------------------------------------ the vocabulary

    def register(self, name: str, obj: Any, *, overwrite: bool = False) -> Any:
        """Adds ``obj`` under ``name`` and returns it. Registering a name again is a
        ``ValueError`` unless ``overwrite=True`` or the object is the same (or equal)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name is a non-empty string, got {name!r}")
        if name in self._entries and not overwrite and not _same(self._entries[name], obj):
            raise ValueError(f"{self.kind} {name!r} is registered already; pass overwrite=True to replace it")
        self._entries[name] = obj
        return obj

    def get(self, name: str, default: Any = _MISSING) -> Any:
        """The object registered as ``name``; ``default`` if given and there is none, else
        :class:`UnknownNameError` (the closest name and all valid ones)."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            if default is not _MISSING:
                return default
            raise self.unknown(name) from None

    def names(self) -> tuple[str, ...]:
        """The registered names, sorted."""
        return tuple(sorted(self._entries))

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries
        except TypeError:  # an unhashable "name"
            return False

    def unknown(self, name: Any, *, reason: str = "", valid: Optional[Sequence[str]] = None) -> UnknownNameError:
        """The :class:`UnknownNameError` for ``name`` (to raise): for registries whose
        lookup is more than a dict (parametric model names give a ``reason``, and list
        ``valid`` names beyond the registered ones)."""
        hint = self._hint() if callable(self._hint) else self._hint
        return UnknownNameError(self.kind, name, self.names() if valid is None else valid,
                                plural=self.plural, reason=reason, hint=hint)

    # ------------------------------------------------------------------ mapping operations

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __setitem__(self, name: str, obj: Any) -> None:
        self.register(name, obj, overwrite=True)

    def __delitem__(self, name: str) -> None:
        del self._entries[name]  # KeyError when absent, as a dict

    def pop(self, name: str, *default: Any) -> Any:
        """Removes ``name`` and returns its object (``default`` if given and absent)."""
        return self._entries.pop(name, *default)

    def items(self) -> list[tuple[str, Any]]:
        """``(name, object)`` pairs, sorted by name."""
        return sorted(self._entries.items())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001: objects whose == is not a truth value
        return False
