"""Resolving dotted import paths from the config into Python objects, with errors that name the key."""
import importlib
from typing import Any, Dict, Mapping

from exportkit.errors import ModelSourceError, first_line


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


def instantiate_factory(node, key: str, **kwargs) -> Any:
    """Call the ``_target_`` factory of a config node (``model.build``); a failure names the key
    and the factory's own error (Hydra's first line only says "Error in call to target")."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        raise ModelSourceError(f"{key}={node._target_!r} failed: {first_line(e.__cause__ or e)}; check the "
                               f"dotted path and the kwargs given beside it") from e


def import_custom_objects(paths: Mapping[str, str]) -> Dict[str, Any]:
    return {name: import_object(path, f"custom_objects.{name}") for name, path in paths.items()}
