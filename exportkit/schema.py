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
    inputs: Optional[str] = None  # a .npz of real examples, used instead of generated inputs
    values: Dict[str, Any] = field(default_factory=dict)  # input -> {low, high} or a list of values
    dims: Dict[str, List[int]] = field(default_factory=dict)  # <input>_<axis> or a jax2tf symbol -> sizes
    dim_sizes: List[int] = field(default_factory=lambda: [2, 5])  # every other dynamic dimension
    # output -> {atol, rtol} (either may be left out: verify.atol / verify.rtol); a typed node
    # could not be set from the command line (+verify.tolerances.out={atol: 1e-3})
    tolerances: Dict[str, Any] = field(default_factory=dict)
    top1: Any = False  # true: every output whose last dim > 1; or a list of output names
    steps: bool = True  # also verify the train/eval graphs against the source's own training API


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
    validate_verify(cfg.verify)
    for name, path in cfg.custom_objects.items():
        if "." not in str(path):
            raise ConfigError(f"custom_objects.{name}={path!r} is not a dotted import path; "
                              f"write +custom_objects.{name}=package.module.{name}")


def validate_verify(verify: DictConfig) -> None:
    """``verify.dims``, ``dim_sizes``, ``tolerances`` and ``top1`` (``values`` and ``inputs`` need the
    model's inputs: the verify stage checks them)."""
    for key, sizes in [("dim_sizes", verify.dim_sizes)] + [(f"dims.{k}", v) for k, v in verify.dims.items()]:
        if not sizes or any(size < 1 for size in sizes):
            raise ConfigError(f"verify.{key}={list(sizes or [])}: give a non-empty list of positive sizes, "
                              f"e.g. verify.{key}=[1,7,64]")
    for name, tolerance in verify.tolerances.items():
        if not isinstance(tolerance, DictConfig) or not tolerance or set(tolerance) - {"atol", "rtol"} or \
                any(not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 for v in tolerance.values()):
            raise ConfigError(f"verify.tolerances.{name}={tolerance!r}: give {{atol: A, rtol: R}} (either may be "
                              f"left out), numbers >= 0, e.g. +verify.tolerances.{name}={{atol: 1e-3}}")
    top1 = verify.top1
    if not isinstance(top1, bool) and not (OmegaConf.is_list(top1) and all(isinstance(n, str) for n in top1)):
        raise ConfigError(f"verify.top1={top1!r}: give true (every output whose last dimension is > 1) "
                          f"or a list of output names")
