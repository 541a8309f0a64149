"""`plugins: [my_lab.layers, my_lab.penalties]`: modules imported before a run is built.

A plugin module registers its entries when imported (`@register_layer`, `@PENALTIES.register`,
`@SCHEDULES.register`, `@OPS.register`, ...), so a layer or penalty defined in a user's own
package is available to the YAML files that name it — in every job of a sweep, each process of
a joblib sweep and each DDP rank, since each of them runs the entry point.
"""

from __future__ import annotations

import importlib

from reglab.errors import ConfigError


def import_plugins(modules: list[str]) -> None:
    """Import each module of `plugins` (already imported ones are left as they are)."""
    if isinstance(modules, str):  # `plugins=my_lab`: each character would be a module
        raise ConfigError("plugins", f"must be a list of module names (plugins=[{modules}])")
    for index, name in enumerate(modules):
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ConfigError(
                f"plugins[{index}]", f"cannot import {name!r}: {error} (is it on PYTHONPATH?)"
            ) from None
