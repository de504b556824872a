"""Resolving dotted import paths from the config into Python objects, with errors that name the key."""
import importlib
from typing import Any, Dict, Mapping

from exportkit.errors import ModelSourceError


def import_object(path: str, key: str) -> Any:
    """``"pkg.mod.Name"`` -> the object; ``key`` is the config key it came from, for the message."""
    module_name, _, attr = str(path).rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ModelSourceError(f"{key}={path!r}: cannot import module {module_name!r} ({e}); check the "
                               f"spelling and that its directory is on PYTHONPATH") from e
    try:
        return getattr(module, attr)
    except AttributeError as e:
        raise ModelSourceError(f"{key}={path!r}: module {module_name!r} has no attribute {attr!r}") from e


def import_custom_objects(paths: Mapping[str, str]) -> Dict[str, Any]:
    return {name: import_object(path, f"custom_objects.{name}") for name, path in paths.items()}
