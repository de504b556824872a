"""Composing exportkit's config outside the CLI (the API, reproduce, tests): one place that
initializes Hydra on ``exportkit.conf`` and restores any outer Hydra state afterwards.

>>> cfg = compose(["model=keras", "model.build._target_=my_models.mlp", "export_dir=/tmp/m"])
>>> group_options("model")
['example', 'in_memory', 'jax', 'keras', 'keras_file']
"""
import contextlib
from typing import Iterator, List, Sequence

from omegaconf import DictConfig


@contextlib.contextmanager
def _hydra() -> Iterator[None]:
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from exportkit import schema

    schema.register()
    global_hydra = GlobalHydra.instance()
    outer = global_hydra.hydra  # a user's own Hydra app may be running: restore it afterwards
    global_hydra.clear()
    try:
        with initialize_config_module("exportkit.conf", version_base="1.3"):
            yield
    finally:
        global_hydra.hydra = outer


def compose(overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """The config ``python -m exportkit OVERRIDES`` would run (with the ``hydra`` node too
    when ``return_hydra_config``)."""
    from hydra import compose as hydra_compose

    with _hydra():
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def group_options(group: str) -> List[str]:
    """The options of a config group (``model``: example, keras, ...), schema nodes aside."""
    from hydra.core.global_hydra import GlobalHydra

    with _hydra():
        options = GlobalHydra.instance().config_loader().get_group_options(group)
    return [o for o in options if not o.endswith("_schema")]
