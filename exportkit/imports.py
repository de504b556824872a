"""Resolving dotted import paths and ``_target_`` nodes from the config, with errors that name the key."""

import importlib
from typing import Any, Dict, Mapping, Type

from exportkit.errors import ExportkitError, ModelSourceError, one_line


def import_object(path: str, key: str) -> Any:
    """``"pkg.mod.Name"`` -> the object; ``key`` is the config key it came from, for the message."""
    module_name, _, attr = str(path).rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ModelSourceError(
            f"{key}={path!r}: cannot import module {module_name!r} ({e}); check the "
            f"spelling and that its directory is on PYTHONPATH"
        ) from e
    try:
        return getattr(module, attr)
    except AttributeError as e:
        raise ModelSourceError(f"{key}={path!r}: module {module_name!r} has no attribute {attr!r}") from e


def instantiate(node, key: str, error: Type[ExportkitError], hint: str, **kwargs) -> Any:
    """``hydra.utils.instantiate(node)``; a failure is ``error`` naming ``key``, its ``_target_``,
    the cause's own first line (Hydra's only says "Error in call to target") and ``hint``.

    >>> instantiate(cfg.model.build, "model.build._target_", ModelSourceError, "check the kwargs")
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as e:
        target = node.get("_target_") if hasattr(node, "get") else None
        where = f"{key}={target!r}" if target is not None else key
        # the cause's whole message: Hydra's ImportError puts the reason on its second line
        raise error(f"{where} failed: {one_line(e.__cause__ or e)}; {hint}") from e


def compile_from_config(model, compile_cfg, rejected_by: str = "model.compile") -> None:
    """``model.compile(**compile_cfg)`` from the ``compile`` node: names (``adam``) or ``_target_``
    nodes. ``compile.targets`` is exportkit's own (the train/eval graphs' target specs), not a
    ``compile`` argument, so it is left out. A rejection is a ``ConfigError`` naming the node."""
    from omegaconf import OmegaConf

    from exportkit.errors import ConfigError

    node = OmegaConf.masked_copy(compile_cfg, [k for k in compile_cfg if k != "targets"])
    kwargs = instantiate(
        node, "compile", ConfigError, "give names such as compile.optimizer=adam or _target_ nodes", _convert_="all"
    )
    try:
        model.compile(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"compile={kwargs}: {rejected_by} rejected it: {e}") from e


def import_custom_objects(paths: Mapping[str, str]) -> Dict[str, Any]:
    return {name: import_object(path, f"custom_objects.{name}") for name, path in paths.items()}
