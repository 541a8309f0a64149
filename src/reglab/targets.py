"""What a config's `_target_` reaches, checked against the modules a config may call.

A check of the target's text is not enough: Hydra resolves `reglab.module.torch.save` by walking
module attributes (reglab.module imports torch) and reaches `torch.save`; `reglab.sweep.os.system`
reaches `os.system`. So the target is resolved here as Hydra resolves it (`hydra.utils.get_class`
and `instantiate` use its private `_locate`: import the first part, then getattr along the path,
importing a submodule where an attribute is missing), and the object reached must be a class or
a function (or a class's classmethod) whose `__module__` lies inside the allowed modules.
"""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType
from typing import Any


class Unresolved(Exception):
    """The target names nothing that can be imported (left to the builder's own message)."""


def resolve(target: str) -> Any:
    """The object `target` names, found as Hydra finds it."""
    parts = target.split(".")
    if not all(parts):
        raise Unresolved(f"{target!r} is not a dotted name")
    try:
        obj: Any = importlib.import_module(parts[0])
    except Exception as error:  # noqa: BLE001 - a module failing on import names nothing
        raise Unresolved(str(error)) from None
    for depth in range(1, len(parts)):
        try:
            obj = getattr(obj, parts[depth])
            continue
        except AttributeError:
            if not isinstance(obj, ModuleType):
                raise Unresolved(f"{target!r}: no {parts[depth]!r} in {obj!r}") from None
        try:  # a submodule not imported by its package yet
            obj = importlib.import_module(".".join(parts[: depth + 1]))
        except Exception as error:  # noqa: BLE001
            raise Unresolved(str(error)) from None
    return obj


def _inside(module: str, allowed: tuple[str, ...]) -> bool:
    return any(module == name or module.startswith(f"{name}.") for name in allowed)


def escape(target: str, allowed: tuple[str, ...]) -> str | None:
    """What `target` reaches when a config may not call it (`reaches a function of
    torch.serialization`), or None when it may, or when it names nothing (building it then
    fails with its own message, and nothing runs)."""
    try:
        obj = resolve(target)
    except Unresolved:
        return None
    if inspect.ismethod(obj) and inspect.isclass(obj.__self__):  # a classmethod: Class.create
        owner = obj.__self__
        kind, module = "a classmethod", getattr(owner, "__module__", None)
    elif inspect.isclass(obj):
        kind, module = "a class", getattr(obj, "__module__", None)
    elif inspect.isfunction(obj):
        kind, module = "a function", getattr(obj, "__module__", None)
    else:
        what = (
            "a module"
            if isinstance(obj, ModuleType)
            else "a built-in function"
            if inspect.isbuiltin(obj)
            else f"a {type(obj).__name__} object"
        )
        name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
        origin = getattr(obj, "__module__", None)
        reached = f" ({origin}.{name})" if name and origin else f" ({name})" if name else ""
        return f"reaches {what}{reached}, not a class or function"
    if not isinstance(module, str) or not _inside(module, allowed):
        return f"reaches {kind} of {module}"
    return None
