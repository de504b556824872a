"""The config schema: dataclasses in Hydra's ConfigStore, mirroring ``conf/``.

Hydra validates every composed config against ``ExportConfig``, so a misspelt key or a value
of the wrong type is rejected with the key named. Each ``model`` option has its own node (stored
in the ``model`` group, named first in that option's YAML), so a required field is ``MISSING``
there; the model source class is the node's ``_target_``. Rules that span several fields live
in ``validate`` below. Defaults are stated here, once: ``conf/config.yaml`` only picks options.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from exportkit.errors import ConfigError


@dataclass
class KerasModelConf:
    """``model=keras``: a factory returning a ``keras.Model``; its kwargs beside ``_target_``."""

    _target_: str = "exportkit.keras.source.KerasFactory"
    build: Any = MISSING


@dataclass
class KerasFileModelConf:
    """``model=keras_file``: a ``.keras`` or ``.h5`` file."""

    _target_: str = "exportkit.keras.source.KerasFile"
    path: str = MISSING


@dataclass
class InMemoryModelConf:
    """``model=in_memory``: a model object handed over by the Python API."""

    _target_: str = "exportkit.keras.source.InMemory"


@dataclass
class JaxModelConf:
    """``model=jax``: a factory returning ``(apply_fn, params)``; values optionally from a file."""

    _target_: str = "exportkit.jax.source.JaxFactory"
    build: Any = MISSING
    params_path: Optional[str] = None  # a .npz file or an Orbax checkpoint directory


# option name -> the schema node its YAML names first (``defaults: [keras_schema, _self_]``)
MODEL_SCHEMAS = {
    "keras_schema": KerasModelConf,
    "keras_file_schema": KerasFileModelConf,
    "in_memory_schema": InMemoryModelConf,
    "jax_schema": JaxModelConf,
}


@dataclass
class TargetConf:
    """Where the export will run: verify runs there, JAX lowers for ``platforms``."""

    name: str = "cpu"
    devices: List[str] = field(default_factory=lambda: ["/CPU:0"])
    jit_compile: bool = False
    platforms: List[str] = field(default_factory=lambda: ["cpu"])


@dataclass
class PipelineConf:
    """Ordered stage name -> ``_target_`` node; ``null`` disables a stage."""

    stages: Dict[str, Any] = field(default_factory=dict)


@dataclass
class VerifyConf:
    atol: float = 1e-5
    rtol: float = 1e-5
    batch_sizes: List[int] = field(default_factory=lambda: [1, 3])


@dataclass
class ServingConf:
    """Releasing for TensorFlow Serving: versions under a model base path, warmup, the contract gate.

    With ``base_path`` set, the export is published at ``base_path/VERSION`` (``export_dir`` is
    not used); ``exportkit.artifact.versions`` picks the version and keeps the base path tidy.
    """

    base_path: Optional[str] = None  # a TF Serving model base path; null: publish at export_dir
    version: Any = "auto"  # "auto" (one more than the highest on disk or reserved) or an integer
    model_name: Optional[str] = None  # null: base_path's last component ("default" without one)
    keep: Optional[int] = None  # keep the N highest versions (+ the new one and labelled ones)
    labels: Dict[str, int] = field(default_factory=dict)  # e.g. {stable: 3, canary: 4}
    model_config_file: Optional[str] = None  # a ModelServerConfig text file to write or update
    warmup: bool = True  # assets.extra/tf_serving_warmup_requests for the serve graph
    compare_to: Optional[str] = None  # an export (or a base path) whose contract this one must keep
    allow_breaking: bool = False  # publish even if the contract breaks the previous version's


@dataclass
class CompileConf:
    """``model.compile`` arguments for a model built uncompiled (names or ``_target_`` nodes)."""

    optimizer: Any = None  # null: the model is exported as its factory built it
    loss: Any = None
    metrics: List[Any] = field(default_factory=list)


@dataclass
class ExportConfig:
    model: Any = MISSING  # one of MODEL_SCHEMAS, or a user's own source node with a `_target_`
    target: TargetConf = MISSING
    pipeline: PipelineConf = MISSING
    # Dict[str, SignatureConf], checked by ``exportkit.signatures.parse``: OmegaConf cannot take
    # a whole signature from the command line (+signatures.serving_default={...}) into a typed dict.
    signatures: Dict[str, Any] = field(default_factory=dict)
    custom_objects: Dict[str, str] = field(default_factory=dict)
    compile: CompileConf = field(default_factory=CompileConf)
    export_dir: str = "${hydra:runtime.output_dir}/saved_model"
    overwrite: bool = False
    as_text: bool = False
    serving_only: bool = False
    seed: int = 0
    verify: VerifyConf = field(default_factory=VerifyConf)
    serving: ServingConf = field(default_factory=ServingConf)


def register() -> None:
    """Store the schema so ``conf/config.yaml`` and each ``conf/model/*.yaml`` can name theirs."""
    store = ConfigStore.instance()
    store.store(name="exportkit_schema", node=ExportConfig)
    for name, node in MODEL_SCHEMAS.items():
        store.store(group="model", name=name, node=node)


def validate(cfg: DictConfig) -> None:
    """Check the rules that span fields; raise ``ConfigError`` naming the key and the fix."""
    if not isinstance(cfg.model, DictConfig) or not cfg.model.get("_target_"):
        raise ConfigError("model has no `_target_`; pick a model option (model=example, model=keras, "
                          "model=keras_file or model=jax) or name your own source class as model._target_")
    for key in sorted(OmegaConf.missing_keys(cfg.model)):
        raise ConfigError(f"model.{key} is required and not set: set model.{key}=VALUE (e.g. "
                          + ("model.build._target_=your_module.your_factory)" if key.startswith("build")
                             else "model.path=/path/to/model.keras)" if key == "path" else "...)"))
    if not str(cfg.export_dir).strip():
        raise ConfigError("export_dir is empty: set export_dir=/path/to/saved_model")
    if (cfg.compile.optimizer is None) != (cfg.compile.loss is None):
        raise ConfigError("compile needs both compile.optimizer and compile.loss (e.g. compile.optimizer=adam "
                          "compile.loss=mse), or neither")
    for size in cfg.verify.batch_sizes:
        if size < 1:
            raise ConfigError(f"verify.batch_sizes has {size}; batch sizes are positive integers")
    if cfg.verify.atol < 0 or cfg.verify.rtol < 0:
        raise ConfigError("verify.atol and verify.rtol must be >= 0")
    validate_serving(cfg.serving)
    for name, path in cfg.custom_objects.items():
        if "." not in str(path):
            raise ConfigError(f"custom_objects.{name}={path!r} is not a dotted import path; "
                              f"write +custom_objects.{name}=package.module.{name}")


def validate_serving(serving: DictConfig) -> None:
    """``serving.*``: a version is ``auto`` or an integer >= 0; keys that place versions need a base path."""
    version = serving.version
    if version != "auto" and (isinstance(version, bool) or not isinstance(version, int) or version < 0):
        raise ConfigError(f"serving.version={version!r} is neither `auto` nor an integer >= 0; write "
                          f"serving.version=auto (the next free version) or serving.version=3")
    if serving.base_path is None:
        for key, value in (("version", None if version == "auto" else version), ("keep", serving.keep),
                           ("labels", dict(serving.labels) or None),
                           ("model_config_file", serving.model_config_file)):
            if value is not None:
                raise ConfigError(f"serving.{key} needs serving.base_path: set serving.base_path=/srv/models/NAME "
                                  f"(versions are published as its numbered subdirectories)")
        return
    if not str(serving.base_path).strip():
        raise ConfigError("serving.base_path is empty: set serving.base_path=/srv/models/NAME or null")
    if serving.keep is not None and serving.keep < 1:
        raise ConfigError(f"serving.keep={serving.keep} keeps no version; give serving.keep=N with N >= 1, "
                          f"or null to keep every version")
    for label, number in serving.labels.items():
        if number < 0:
            raise ConfigError(f"serving.labels.{label}={number} is not a version number (an integer >= 0)")
    if serving.model_name is not None and not str(serving.model_name).strip():
        raise ConfigError("serving.model_name is empty: give a name or null (base_path's last component)")
