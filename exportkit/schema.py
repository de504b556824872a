"""The config schema: dataclasses in Hydra's ConfigStore, mirroring ``conf/``.

Hydra validates every composed config against ``ExportConfig``, so a misspelt key or a value
of the wrong type is rejected with the key named. Each ``model`` option has its own node (stored
in the ``model`` group, named first in that option's YAML), so a required field is ``MISSING``
there; the model source class is the node's ``_target_``. Rules that span several fields live
in ``validate`` below. Defaults are stated here, once: ``conf/config.yaml`` only picks options.
"""

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from exportkit.errors import ConfigError

# ``layout``: how the graphs of a compiled model are laid out (see ``exportkit.artifact.files``).
LAYOUTS = ("serving", "tf1")


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


@dataclass
class JaxInMemoryModelConf:
    """``model=jax_in_memory``: ``(apply_fn, params)`` or a Flax module handed over by the Python API."""

    _target_: str = "exportkit.jax.source.JaxInMemory"
    description: Optional[str] = None  # what the API was given, e.g. "(apply_fn, params): pkg.apply"


@dataclass
class TfKerasModelConf:
    """``model=tf_keras``: a legacy Keras 2 (``tf-keras``) ``.h5``/``.keras`` file or SavedModel directory."""

    _target_: str = "exportkit.tf_keras.source.TfKerasFile"
    path: str = MISSING


@dataclass
class TfKerasInMemoryModelConf:
    """``model=tf_keras_in_memory``: a ``tf_keras.Model`` handed over by the Python API."""

    _target_: str = "exportkit.tf_keras.source.TfKerasInMemory"
    description: Optional[str] = None  # what the API was given, e.g. "tf_keras Sequential 'mlp'"


# option name -> the schema node its YAML names first (``defaults: [keras_schema, _self_]``)
MODEL_SCHEMAS = {
    "keras_schema": KerasModelConf,
    "keras_file_schema": KerasFileModelConf,
    "in_memory_schema": InMemoryModelConf,
    "jax_schema": JaxModelConf,
    "jax_in_memory_schema": JaxInMemoryModelConf,
    "tf_keras_schema": TfKerasModelConf,
    "tf_keras_in_memory_schema": TfKerasInMemoryModelConf,
}


def model_option(target: str) -> str:
    """``model=NAME`` for the option whose source class is ``target``, else ``model._target_=...``."""
    for name, node in MODEL_SCHEMAS.items():
        if getattr(node, "_target_", None) == target:
            return f"model={name[: -len('_schema')]}"
    return f"model._target_={target}"


@dataclass
class TargetConf:
    """Where the export will run: verify runs there, JAX lowers for ``platforms``."""

    name: str = "cpu"
    devices: List[str] = field(default_factory=lambda: ["/CPU:0"])
    jit_compile: bool = False
    platforms: List[str] = field(default_factory=lambda: ["cpu"])

    @staticmethod
    def check(target) -> None:
        if not target.devices:
            raise ConfigError(
                "target.devices=[] names no device to verify on; give at least one, "
                "e.g. target.devices=[/CPU:0] or [/GPU:0]"
            )
        for device in target.devices:
            if not isinstance(device, str) or not DEVICE.match(device):
                raise ConfigError(
                    f"target.devices has {device!r}, which is not a TensorFlow device name; "
                    f"write /CPU:0, /GPU:0, /GPU:1 ... (target.devices=[/GPU:0])"
                )


@dataclass
class PipelineConf:
    """Ordered stage name -> ``_target_`` node; ``null`` disables a stage."""

    stages: Dict[str, Any] = field(default_factory=dict)


@dataclass
class LatencyConf:
    """Latency measured by verify's fresh process, per serve signature and case (``verify.latency``):
    the first call, then up to ``runs`` warm calls (median / p90 / p99), stopping once ``budget_s``
    seconds of warm calls are spent on one case."""

    enabled: bool = True
    runs: int = 20
    budget_s: float = 5.0


@dataclass
class VerifyConf:
    atol: float = 1e-5
    rtol: float = 1e-5
    batch_sizes: List[int] = field(default_factory=lambda: [1, 3])
    # Publish an export in which no verify case ran (the summary then says UNVERIFIED). Off:
    # such an export is never published.
    allow_unverified: bool = False
    inputs: Optional[str] = None  # a .npz of real examples, used instead of generated inputs
    values: Dict[str, Any] = field(default_factory=dict)  # input -> {low, high} or a list of values
    dims: Dict[str, List[int]] = field(default_factory=dict)  # <input>_<axis> or a jax2tf symbol -> sizes
    dim_sizes: List[int] = field(default_factory=lambda: [2, 5])  # every other dynamic dimension
    # output -> {atol, rtol} (either may be left out: verify.atol / verify.rtol); a typed node
    # could not be set from the command line (+verify.tolerances.out={atol: 1e-3})
    tolerances: Dict[str, Any] = field(default_factory=dict)
    top1: Any = False  # true: every output whose last dim > 1; or a list of output names
    steps: bool = True  # also verify the train/eval graphs against the source's own training API
    latency: LatencyConf = field(default_factory=LatencyConf)  # verify.latency.enabled=false: not measured
    # seconds the verify process may take to answer (to load and run the export); past it the
    # process is killed and the export fails
    timeout_s: float = 600.0
    # start the verification process with the export, so its imports overlap the build (and share
    # one across a sweep's jobs); false: the verify stage starts its own when it runs
    early_start: bool = True
    # modules the verification process imports before it loads the export, for ops exportkit
    # cannot trace to a package (the op libraries it finds and custom_objects' modules it imports anyway)
    imports: List[str] = field(default_factory=list)

    @staticmethod
    def check(verify: DictConfig) -> None:
        """``verify``'s batch sizes, tolerances, ``dims``, ``dim_sizes``, ``tolerances`` and ``top1``
        (``values`` and ``inputs`` need the model's inputs: the verify stage checks them). A
        configuration that would verify no case is an error, never a pass."""
        if not verify.batch_sizes:
            raise ConfigError(
                "verify.batch_sizes=[] would verify no case; give at least one batch size "
                "(verify.batch_sizes=[1,3]), or disable verification with pipeline.stages.verify=null"
            )
        timeout = verify.timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
            shown = f"{timeout:g}" if isinstance(timeout, (int, float)) else repr(timeout)
            raise ConfigError(
                f"verify.timeout_s={shown}: the verify process needs a positive number of seconds "
                f"to answer in (verify.timeout_s=600)"
            )
        for size in verify.batch_sizes:
            if size < 1:
                raise ConfigError(
                    f"verify.batch_sizes has {size}; batch sizes are positive integers (verify.batch_sizes=[1,3])"
                )
        for key in ("atol", "rtol"):
            value = verify[key]
            if not math.isfinite(value) or value < 0:
                raise ConfigError(
                    f"verify.{key}={value} is not a tolerance; give a finite number >= 0 (verify.{key}=1e-5)"
                )
        for key, sizes in [("dim_sizes", verify.dim_sizes)] + [(f"dims.{k}", v) for k, v in verify.dims.items()]:
            if not sizes or any(size < 1 for size in sizes):
                raise ConfigError(
                    f"verify.{key}={list(sizes or [])}: give a non-empty list of positive sizes, e.g. verify.{key}=[1,7,64]"
                )
        for name, tolerance in verify.tolerances.items():
            if (
                not isinstance(tolerance, DictConfig)
                or not tolerance
                or set(tolerance) - {"atol", "rtol"}
                or any(not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 for v in tolerance.values())
            ):
                raise ConfigError(
                    f"verify.tolerances.{name}={tolerance!r}: give {{atol: A, rtol: R}} (either may be "
                    f"left out), numbers >= 0, e.g. +verify.tolerances.{name}={{atol: 1e-3}}"
                )
        latency = verify.get("latency")
        if latency is not None and (latency.runs < 1 or not latency.budget_s > 0):
            raise ConfigError(
                f"verify.latency: runs={latency.runs}, budget_s={latency.budget_s}; give runs >= 1 and "
                f"budget_s > 0 (verify.latency.runs=20), or turn it off with verify.latency.enabled=false"
            )
        top1 = verify.top1
        if not isinstance(top1, bool) and not (OmegaConf.is_list(top1) and all(isinstance(n, str) for n in top1)):
            raise ConfigError(
                f"verify.top1={top1!r}: give true (every output whose last dimension is > 1) or a list of output names"
            )


@dataclass
class ServingConf:
    """Releasing for TensorFlow Serving: versions under a model base path, warmup, the contract gate.

    With ``base_path`` set, the export is published at ``base_path/VERSION`` (``export_dir`` is
    not used); ``exportkit.artifact.versions`` picks the version and keeps the base path tidy.
    """

    base_path: Optional[str] = None  # a TF Serving model base path; null: publish at export_dir
    version: Any = "auto"  # "auto" (one more than the highest on disk or reserved) or an integer
    model_name: Optional[str] = None  # null: base_path's last component ("default" without one)
    keep: Optional[int] = None  # keep the N highest versions (+ labelled ones, and the new one and any above it)
    labels: Dict[str, int] = field(default_factory=dict)  # e.g. {stable: 3, canary: 4}
    model_config_file: Optional[str] = None  # a ModelServerConfig text file to write or update
    warmup: bool = True  # assets.extra/tf_serving_warmup_requests for the serve graph
    compare_to: Optional[str] = None  # an export (or a base path) whose contract this one must keep
    allow_breaking: bool = False  # publish even if the contract breaks the previous version's

    @staticmethod
    def check(serving: DictConfig) -> None:
        """``serving.*``: a version is ``auto`` or an integer >= 0; keys that place versions need a base path."""
        version = serving.version
        if version != "auto" and (isinstance(version, bool) or not isinstance(version, int) or version < 0):
            raise ConfigError(
                f"serving.version={version!r} is neither `auto` nor an integer >= 0; write "
                f"serving.version=auto (the next free version) or serving.version=3"
            )
        if serving.base_path is None:
            for key, value in (
                ("version", None if version == "auto" else version),
                ("keep", serving.keep),
                ("labels", dict(serving.labels) or None),
                ("model_config_file", serving.model_config_file),
            ):
                if value is not None:
                    raise ConfigError(
                        f"serving.{key} needs serving.base_path: set serving.base_path=/srv/models/NAME "
                        f"(versions are published as its numbered subdirectories)"
                    )
            return
        if not str(serving.base_path).strip():
            raise ConfigError("serving.base_path is empty: set serving.base_path=/srv/models/NAME or null")
        if serving.keep is not None and serving.keep < 1:
            raise ConfigError(
                f"serving.keep={serving.keep} keeps no version; give serving.keep=N with N >= 1, "
                f"or null to keep every version"
            )
        for label, number in serving.labels.items():
            if number < 0:
                raise ConfigError(f"serving.labels.{label}={number} is not a version number (an integer >= 0)")
        if serving.model_name is not None and not str(serving.model_name).strip():
            raise ConfigError("serving.model_name is empty: give a name or null (base_path's last component)")


@dataclass
class CompileConf:
    """``model.compile`` arguments for a model built uncompiled (names or ``_target_`` nodes), and
    the target inputs of the ``train``/``eval`` graphs.

    ``loss``, ``loss_weights``, ``metrics`` and ``weighted_metrics`` take every form
    ``model.compile`` takes: one value, a list (one per output) or a dict keyed by output name.
    ``targets`` (output name -> ``{shape, dtype}``) overrides the ``<output>_target`` input the
    loss implies, for a compiled model from any source (e.g. int32 class ids).
    """

    optimizer: Any = None  # null: the model is exported as its factory built it
    loss: Any = None
    loss_weights: Any = None
    metrics: Any = None
    weighted_metrics: Any = None
    # Dict[str, TensorSpecConf], checked by ``validate``: OmegaConf cannot take a whole spec from
    # the command line (+compile.targets.label={shape: [null], dtype: int32}) into a typed dict.
    targets: Dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def check_target(name: str, spec: Any) -> None:
        """``compile.targets.NAME`` is ``{shape: [null], dtype: int32}`` (dtype float32 if omitted)."""
        from exportkit.signatures import DTYPES, TensorSpecConf, checked_node

        where = f"compile.targets.{name}"
        node = checked_node(TensorSpecConf, spec, where, "{shape: [null], dtype: int32}")
        if node.dtype not in DTYPES:
            raise ConfigError(f"{where}.dtype={node.dtype!r} is not supported; use one of {', '.join(DTYPES)}")


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
    # serving: `serve` alone in saved_model.pb (every consumer reads it), train/eval under graphs/;
    # tf1: TF 1.14's three MetaGraphDefs in one saved_model.pb
    layout: str = "serving"
    seed: int = 0
    verify: VerifyConf = field(default_factory=VerifyConf)
    serving: ServingConf = field(default_factory=ServingConf)
    # name -> a deployment format's node (+formats=[litert,onnx,openvino]; exportkit.formats)
    formats: Dict[str, Any] = field(default_factory=dict)


def register() -> None:
    """Store the schema so ``conf/config.yaml`` and each ``conf/model/*.yaml`` can name theirs."""
    store = ConfigStore.instance()
    store.store(name="exportkit_schema", node=ExportConfig)
    for name, node in MODEL_SCHEMAS.items():
        store.store(group="model", name=name, node=node)


# what tf.DeviceSpec.from_string takes for one device: /CPU:0, /device:GPU:1, /job:w/task:0/device:GPU:0, gpu
DEVICE = re.compile(r"^(/job:\w+)?(/replica:\d+)?(/task:\d+)?/?(device:)?(CPU|GPU|TPU)(:\d+)?$", re.IGNORECASE)
SEED_LIMIT = 2**32  # NumPy's and TensorFlow's seeds are 32-bit


def validate(cfg: DictConfig) -> None:
    """Check the rules that span fields and the values a type alone does not rule out; raise
    ``ConfigError`` naming the key and the fix."""
    if not isinstance(cfg.model, DictConfig) or not cfg.model.get("_target_"):
        raise ConfigError(
            "model has no `_target_`; pick a model option (model=example, model=keras, "
            "model=keras_file or model=jax) or name your own source class as model._target_"
        )
    for key in sorted(OmegaConf.missing_keys(cfg.model)):
        raise ConfigError(
            f"model.{key} is required and not set: set model.{key}=VALUE (e.g. "
            + (
                "model.build._target_=your_module.your_factory)"
                if key.startswith("build")
                else "model.path=/path/to/model.keras)"
                if key == "path"
                else "...)"
            )
        )
    if not str(cfg.export_dir).strip():
        raise ConfigError("export_dir is empty: set export_dir=/path/to/saved_model")
    if (cfg.compile.optimizer is None) != (cfg.compile.loss is None):
        raise ConfigError(
            "compile needs both compile.optimizer and compile.loss (e.g. compile.optimizer=adam "
            "compile.loss=mse), or neither"
        )
    for name, spec in cfg.compile.targets.items():
        CompileConf.check_target(name, spec)
    if not 0 <= cfg.seed < SEED_LIMIT:
        raise ConfigError(f"seed={cfg.seed} is out of range; give an integer from 0 to {SEED_LIMIT - 1}")
    TargetConf.check(cfg.target)
    for key, signature in (cfg.signatures or {}).items():
        if not isinstance(signature, DictConfig):
            raise ConfigError(
                f"signatures.{key}={signature!r} is not a signature; write it as "
                f"+signatures.{key}={{inputs: {{NAME: {{shape: [null, 8], dtype: float32}}}}}}"
            )
    if cfg.layout not in LAYOUTS:
        raise ConfigError(
            f"layout={cfg.layout!r} is not a layout; use layout=serving (the default: serve "
            f"alone in saved_model.pb, train/eval under graphs/) or layout=tf1 (TF 1.14's "
            f"three MetaGraphDefs in one saved_model.pb)"
        )
    VerifyConf.check(cfg.verify)
    ServingConf.check(cfg.serving)
    for name, path in cfg.custom_objects.items():
        if "." not in str(path):
            raise ConfigError(
                f"custom_objects.{name}={path!r} is not a dotted import path; "
                f"write +custom_objects.{name}=package.module.{name}"
            )


def _field_types(node_type) -> Dict[str, Any]:
    if dataclasses.is_dataclass(node_type):
        hints = typing.get_type_hints(node_type)
        return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(node_type)}
    return {}


def schema_keys() -> List[str]:
    """Every dotted key the schema knows (``verify.atol``, ``model.path``, ...): what a misspelt
    key is matched against for a "did you mean"."""
    keys: List[str] = []

    def walk(node_type, prefix: str) -> None:
        for name, kind in _field_types(node_type).items():
            keys.append(prefix + name)
            walk(kind, f"{prefix}{name}.")

    walk(ExportConfig, "")
    for node in MODEL_SCHEMAS.values():
        walk(node, "model.")
    keys += [
        f"pipeline.stages.{name}" for name in ("build", "jax2tf", "trace", "write_checkpoint", "write_graphs", "verify")
    ]
    return sorted(set(keys))


_KINDS = {bool: "a bool (true or false)", int: "an integer", float: "a number", str: "a string"}


def expected_kind(full_key: str) -> Optional[str]:
    """What the schema expects at ``full_key`` (``verify.batch_sizes[0]`` -> "an integer"), or None
    where it does not say (a free-form node such as ``model.build``)."""
    kind: Any = ExportConfig
    models = list(MODEL_SCHEMAS.values())
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", full_key):
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        if part.startswith("["):
            kind = args[0] if origin in (list, List) and args else Any
            continue
        if kind is Any and part in {n for m in models for n in _field_types(m)}:
            kind = next(_field_types(m)[part] for m in models if part in _field_types(m))
            continue
        kind = _field_types(kind).get(part, Any)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union and type(None) in args:  # Optional[X]
        inner = _KINDS.get(next(a for a in args if a is not type(None)))
        return f"{inner} or null" if inner else None
    if origin in (list, List):
        inner = _KINDS.get(args[0]) if args else None
        return f"a list of {inner.split(' ', 1)[1].split(' (')[0]}s" if inner else "a list"
    if origin in (dict, Dict):
        return "a mapping"
    if dataclasses.is_dataclass(kind):
        return "a mapping"
    return _KINDS.get(kind)
