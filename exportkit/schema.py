"""The config schema: dataclasses in Hydra's ConfigStore, mirroring ``conf/``.

Hydra validates every composed config against ``ExportConfig``, so a misspelt key or a value
of the wrong type is rejected with the key named. Rules that span several fields live in
``validate`` below, next to the fields they read.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from exportkit.errors import ConfigError, first_line

MODEL_KINDS = ("keras", "keras_file", "jax", "in_memory")
DTYPES = (
    "float16", "bfloat16", "float32", "float64",
    "int8", "int16", "int32", "int64", "uint8", "bool",
)
GRAPH_TAGS = ("serve", "train", "eval")


@dataclass
class TensorSpecConf:
    """One input of a signature: ``shape`` with ``null`` for a dynamic dimension."""

    shape: List[Optional[int]] = MISSING
    dtype: str = "float32"


@dataclass
class SignatureConf:
    """A serving signature: input name -> spec. Outputs are keyed by the model's output names."""

    inputs: Dict[str, TensorSpecConf] = MISSING


@dataclass
class ModelConf:
    """Where the model comes from: ``kind`` picks which of the other fields are read."""

    kind: str = MISSING
    build: Optional[Any] = None  # keras/jax: a Hydra ``_target_`` node and its kwargs
    path: Optional[str] = None  # keras_file: a .keras or .h5 file
    params_path: Optional[str] = None  # jax: parameters saved as .npz


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
class CompileConf:
    """``model.compile`` arguments for a model built uncompiled (names or ``_target_`` nodes)."""

    optimizer: Any = None  # null: the model is exported as its factory built it
    loss: Any = None
    metrics: List[Any] = field(default_factory=list)


@dataclass
class ExportConfig:
    model: ModelConf = MISSING
    target: TargetConf = MISSING
    pipeline: PipelineConf = MISSING
    # Dict[str, SignatureConf], checked by ``signatures()``: OmegaConf cannot take a whole
    # signature from the command line (+signatures.serving_default={...}) into a typed dict.
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
    """Store the schema so ``conf/config.yaml`` can name it first in its defaults list."""
    ConfigStore.instance().store(name="exportkit_schema", node=ExportConfig)


def signatures(cfg: DictConfig) -> Dict[str, SignatureConf]:
    """``cfg.signatures`` checked against ``SignatureConf`` (defaults filled in), by key."""
    from omegaconf.errors import OmegaConfBaseException

    checked = {}
    for key, sig in (cfg.signatures or {}).items():
        try:
            checked[key] = OmegaConf.merge(OmegaConf.structured(SignatureConf), sig)
            OmegaConf.to_container(checked[key], throw_on_missing=True)
        except OmegaConfBaseException as e:
            detail = first_line(e)
            raise ConfigError(f"signatures.{key} is malformed ({detail}); write it as "
                              f"{{inputs: {{NAME: {{shape: [null, 8], dtype: float32}}}}}}") from e
    return checked


def missing_jax_signature_error() -> ConfigError:
    """A JAX function has no input specs to infer a signature from, unlike a built Keras model."""
    from exportkit.errors import SignatureError

    return SignatureError(
        "model.kind=jax needs `signatures`: a JAX function has no input shapes to infer them from; "
        "add e.g. +signatures.serving_default={inputs: {x: {shape: [null, 8], dtype: float32}}} "
        "(null is a dynamic dimension; inputs are passed to apply_fn(params, *inputs) in this order)")


def validate(cfg: DictConfig) -> None:
    """Check the rules that span fields; raise ``ConfigError`` naming the key and the fix."""
    kind = cfg.model.kind
    if kind not in MODEL_KINDS:
        raise ConfigError(f"model.kind={kind!r} is not one of {', '.join(MODEL_KINDS)}; pick a model "
                          f"option: model=example, model=keras, model=keras_file or model=jax")
    build = cfg.model.build
    if kind in ("keras", "jax") and (
        build is None or "_target_" not in build or OmegaConf.is_missing(build, "_target_")
    ):
        raise ConfigError(f"model.build needs a `_target_` for model.kind={kind}: set "
                          f"model.build._target_=your_module.your_factory")
    if kind == "jax" and not cfg.signatures:
        raise missing_jax_signature_error()
    if kind == "keras_file" and not cfg.model.path:
        raise ConfigError("model.path is not set for model=keras_file: set model.path=/path/to/model.keras")
    if not str(cfg.export_dir).strip():
        raise ConfigError("export_dir is empty: set export_dir=/path/to/saved_model")
    for key, sig in signatures(cfg).items():
        if not sig.inputs:
            raise ConfigError(f"signatures.{key}.inputs is empty: give at least one input "
                              f"with a shape and a dtype")
        for name, spec in sig.inputs.items():
            where = f"signatures.{key}.inputs.{name}"
            if not name.isidentifier():
                raise ConfigError(f"{where}: input name {name!r} must be a Python identifier "
                                  f"(letters, digits and '_'), as TensorFlow signatures require")
            if spec.dtype not in DTYPES:
                raise ConfigError(f"{where}.dtype={spec.dtype!r} is not supported; use one of "
                                  f"{', '.join(DTYPES)}")
            for dim in spec.shape:
                if dim is not None and dim < 1:
                    raise ConfigError(f"{where}.shape={list(spec.shape)} has {dim}; each dimension "
                                      f"is a positive size or null for a dynamic one")
    if (cfg.compile.optimizer is None) != (cfg.compile.loss is None):
        raise ConfigError("compile needs both compile.optimizer and compile.loss (e.g. compile.optimizer=adam "
                          "compile.loss=mse), or neither")
    for size in cfg.verify.batch_sizes:
        if size < 1:
            raise ConfigError(f"verify.batch_sizes has {size}; batch sizes are positive integers")
    if cfg.verify.atol < 0 or cfg.verify.rtol < 0:
        raise ConfigError("verify.atol and verify.rtol must be >= 0")
    for name, path in cfg.custom_objects.items():
        if "." not in str(path):
            raise ConfigError(f"custom_objects.{name}={path!r} is not a dotted import path; "
                              f"write +custom_objects.{name}=package.module.{name}")
