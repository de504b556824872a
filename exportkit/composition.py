"""Composing exportkit's config outside the CLI (the API, reproduce, tests): one place that
initializes Hydra on ``exportkit.conf`` and restores any outer Hydra state afterwards.

>>> cfg = compose(["model=keras", "model.build._target_=my_models.mlp", "export_dir=/tmp/m"])
>>> group_options("model")
['example', 'in_memory', 'jax', 'keras', 'keras_file']
"""

import contextlib
import difflib
import re
from typing import Iterator, List, Optional, Sequence

from omegaconf import DictConfig

from exportkit.errors import ConfigError, one_line


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

    if isinstance(overrides, str):  # a string is a sequence too: "seed=3" would be 6 overrides
        raise ConfigError(
            f"overrides={overrides!r} is a string; give a list of KEY=VALUE strings, overrides=[{overrides!r}]"
        )
    for override in overrides:
        if not isinstance(override, str):
            raise ConfigError(
                f"overrides has {override!r} ({type(override).__name__}); each override is a "
                f"KEY=VALUE string, e.g. 'seed=3'"
            )
    try:
        with _hydra():
            return hydra_compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)
    except Exception as error:  # noqa: BLE001 - Hydra's composition errors become one ConfigError
        translated = composition_error(error)
        if translated is None:
            raise
        raise translated from error


def composition_error(error: BaseException) -> Optional[ConfigError]:
    """Hydra's and OmegaConf's composition errors (unknown key, wrong type, unknown group option,
    override syntax) as one ``ConfigError`` naming the key or value, what was expected and the
    fix; None for any other exception (a bug keeps its traceback).

    >>> str(composition_error(hydra_error_for("verify.atoll=1")))
    'unknown config key verify.atoll (did you mean verify.atol?); ...'
    """
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(error, ConfigError):
        return error
    if not isinstance(error, (HydraException, OmegaConfBaseException, ValueError)):
        return None
    text, cause = str(error), error.__cause__
    if isinstance(error, OverrideParseException):
        reason = " ".join(
            line for line in text.splitlines()[:2] if not line.startswith(("See https", "Error parsing override"))
        )
        return ConfigError(
            f"cannot parse the override {error.override!r}: {reason}; write KEY=VALUE "
            f"(quote a value with spaces or brackets: 'KEY=[1, 2]'), +KEY=VALUE to add a "
            f"key, ~KEY to delete one"
        )
    if isinstance(error, MissingConfigException):
        return _missing_option(text)
    unknown = re.match(r"Could not override '([^']+)'", text)
    if unknown:
        return ConfigError(
            f"unknown config key {unknown.group(1)}{did_you_mean(unknown.group(1))}; "
            f"`python -m exportkit --cfg job` lists the keys"
        )
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        return _bad_value(text, cause)
    config_dir = re.match(r"Additional config directory '([^']+)' not found", text)
    if config_dir:
        return ConfigError(
            f"--config-dir {config_dir.group(1)}: no such directory; give the directory that "
            f"holds your own config groups (e.g. examples/conf)"
        )
    appended = re.match(r"Could not append to config\. An item is already at '([^']+)'", text)
    if appended:
        key = appended.group(1)
        return ConfigError(
            f"+{key}: {key} is already in the config; write {key}=VALUE to change it "
            f"(+ is for a key the config does not have)"
        )
    deleted = re.match(r"Could not delete from config\. '([^']+)' does not exist", text)
    if deleted:
        key = deleted.group(1)
        return ConfigError(f"~{key}: no key {key} to delete{did_you_mean(key)}")
    return ConfigError(
        one_line(error).rstrip(".")
        + (f" ({one_line(cause)})" if cause is not None else "")
        + "; check the overrides (KEY=VALUE each)"
    )


def _missing_option(text: str) -> ConfigError:
    found = re.search(r"Could not (?:find|load) '([^']+)/([^'/]+)'", text)
    if not found:
        return ConfigError(
            f"{one_line(ValueError(text.split('Config search path')[0]))}; check --config-name and --config-dir"
        )
    group, option = found.groups()
    listed = re.search(r"Available options in '[^']+':\n((?:\t.*\n?)*)", text)
    options = [
        o.strip()
        for o in (listed.group(1).splitlines() if listed else [])
        if o.strip() and not o.strip().endswith("_schema")
    ]
    if not options:  # "Could not load" (a list-valued group, +formats=[...]) lists none: exportkit's own
        from importlib import resources

        shipped = resources.files("exportkit.conf").joinpath(*group.split("/"))
        options = (
            sorted(p.name[: -len(".yaml")] for p in shipped.iterdir() if p.name.endswith(".yaml"))
            if shipped.is_dir()
            else []
        )
    group_key = group.split("/")[-1]
    close = difflib.get_close_matches(option, options, n=1)
    return ConfigError(
        f"{group_key}={option} is not an option of {group}"
        + (f" (did you mean {group_key}={close[0]}?)" if close else "")
        + (
            f"; choose one of {', '.join(options)}"
            if options
            else f"; no config group {group!r} here (add --config-dir DIR for your own)"
        )
    )


def _bad_value(text: str, cause) -> ConfigError:
    from exportkit import schema

    key = re.sub(r"\[\d+\]", "", str(cause.full_key))
    expected = schema.expected_kind(key)
    given = re.match(r"Error merging override (.+)$", text.splitlines()[0])
    where = given.group(1) if given else str(cause.full_key)
    reason = one_line(cause).rstrip(".")
    if "not in struct" in reason or "not in '" in reason:
        return ConfigError(
            f"unknown config key {cause.full_key}{did_you_mean(str(cause.full_key))}; "
            f"`python -m exportkit --cfg job` lists the keys"
        )
    return ConfigError(f"{where}: {reason}" + (f"; {key} expects {expected}" if expected else ""))


def did_you_mean(key: str) -> str:
    """`` (did you mean verify.atol?)`` for a misspelt ``verify.atoll``; "" when nothing is close."""
    from exportkit import schema

    key = key.lstrip("+~")
    depth = key.count(".")  # verfy.atol -> verify.atol; model.nokey is not model.path's misspelling
    candidates = [k for k in schema.schema_keys() if k.count(".") == depth]
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.75)
    if close and close[0] == key:  # model.path given to model=keras
        return f" (for this option; {key} is a key of another option of its group)"
    return f" (did you mean {close[0]}?)" if close else ""


def group_options(group: str) -> List[str]:
    """The options of a config group (``model``: example, keras, ...), schema nodes aside."""
    from hydra.core.global_hydra import GlobalHydra

    with _hydra():
        options = GlobalHydra.instance().config_loader().get_group_options(group)
    return [o for o in options if not o.endswith("_schema")]
