"""The export context: what the stages read and add as the pipeline runs.

Every stage receives the context and returns it. A stage declares the fields it ``needs``
and the fields it ``adds`` (see ``exportkit.stages.base.Stage``), so the runner can say
which stage is missing when a user disables one that a later stage depends on. What the run
itself carries (the model source, the reporter, the hash cache, the recorded overrides) travels
here too, never in module globals.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from omegaconf import DictConfig

from exportkit.artifact.digests import HashCache
from exportkit.artifact.op_libraries import OpLibrary
from exportkit.background import Background
from exportkit.report import Reporter


@dataclass
class Graph:
    """One MetaGraphDef to write: its tag, its signatures, the variable groups they use."""

    tag: str
    functions: Dict[str, Any]  # signature key -> tf ConcreteFunction
    variable_groups: List[str]  # keys of ExportContext.variables this graph captures
    # attribute name -> tf.function on the saved root, beside the signatures; write_graphs saves
    # the serve graph with the positional `serve` too, unless one is here (tracing.positional_endpoint)
    endpoints: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Training:
    """What a compiled model adds: the train and eval steps and the state they update.

    ``step_specs(inputs, outputs)`` gives the steps' named input specs from the serving
    signature's input specs and output specs (the model's inputs plus one target per output).
    ``train_fn``/``eval_fn`` take a dict of those tensors and return a dict of named outputs.
    ``variables()`` is called after tracing (optimizer slots and metric state exist only then)
    and returns the extra variable groups; ``eval_excludes`` are the groups eval never touches.
    """

    step_specs: Callable[[Dict[str, Any], Dict[str, Any]], Dict[str, Any]]
    train_fn: Callable[[Dict[str, Any]], Dict[str, Any]]
    eval_fn: Callable[[Dict[str, Any]], Dict[str, Any]]
    variables: Callable[[], Dict[str, List[Any]]]
    eval_excludes: Tuple[str, ...] = ()
    # graph tag ("train", "eval") -> fn(dict of numpy step inputs) -> dict of numpy outputs the
    # exported step must reproduce ("loss", "predictions/<output>"), from the source model's own
    # training API on a copy of its state; verify checks each graph it has a reference for
    reference: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = field(default_factory=dict)


@dataclass
class StageRecord:
    name: str
    status: str  # ok | failed | skipped
    seconds: float
    detail: str = ""


@dataclass
class Verification:
    """Whether the export was verified, as the manifest's ``verification`` records it: the cases
    run (over every device), the devices verified and those not (with why), the verification
    process (``pid``, ``started_at``, ``ready_at``, ``served``, ``peak_rss_mib``), the latency it
    measured per device, and the warmup records it replayed; or, unverified, the ``reason``."""

    verified: bool = False
    cases: int = 0
    devices_verified: List[str] = field(default_factory=list)
    devices_not_verified: Dict[str, str] = field(default_factory=dict)
    worker: Dict[str, Any] = field(default_factory=dict)
    latency: Dict[str, Any] = field(default_factory=dict)
    warmup_replayed: Optional[int] = None
    reason: str = ""

    def to_dict(self) -> Dict[str, Any]:
        if not self.verified:
            return {"verified": False, "cases": self.cases, "reason": self.reason}
        out: Dict[str, Any] = {
            "verified": True,
            "cases": self.cases,
            "devices_verified": list(self.devices_verified),
            "devices_not_verified": dict(self.devices_not_verified),
            "worker": dict(self.worker),
        }
        if self.latency:
            out["latency"] = self.latency
        return out


@dataclass
class ServingRecord:
    """What a release for TensorFlow Serving did (``exportkit.serving``), as the manifest's
    ``serving`` records it: the model name; under a base path the version, the base path and the
    version before it; the warmup file (``records``, ``bytes``, and how many the verification
    process ``replayed``); the contract check."""

    model_name: str
    base_path: Optional[str] = None
    version: Optional[int] = None
    previous: Optional[int] = None
    warmup: Optional[Dict[str, Any]] = None
    contract_check: Optional[Dict[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"model_name": self.model_name}
        if self.version is not None:
            out.update(base_path=self.base_path, version=self.version, previous=self.previous)
        if self.warmup is not None:
            out["warmup"] = dict(self.warmup)
        if self.contract_check is not None:
            out["contract_check"] = dict(self.contract_check)
        return out


@dataclass
class Conversion:
    """How the jax2tf stage converted a JAX model: the platforms lowered for, the XlaCallModule
    calling convention version, whether the SavedModel carries JAX's gradient, and the params
    whose variables are named otherwise than their keys; the manifest records it as ``conversion``."""

    platforms: List[str]
    calling_convention_version: int
    with_gradient: bool
    # param pytree path -> its variable's name, where the two differ (a name TensorFlow takes:
    # exportkit.jax.variables.variable_name); the checkpoint's keys follow the pytree's order
    renamed: Dict[str, str] = field(default_factory=dict)


@dataclass
class FormatRecord:
    """One deployment format of the export (``exportkit.formats``), as the manifest's ``formats``
    records it: the plugin and its options, the files written (under ``formats/<name>/``), the
    conversion's seconds; after verification the runtime's load seconds, warm latency per case,
    the largest error (absolute, and relative to the outputs' scale) and the top-1 agreement,
    against the tolerance and the least agreement asked. ``status``: ``ok``, ``failed`` (an
    optional format left out, with the ``reason``) or ``unverified`` (verification off)."""

    target: str
    options: Dict[str, Any]
    optional: bool
    tolerance: float
    min_top1: float
    status: str = "unverified"
    reason: str = ""
    files: List[str] = field(default_factory=list)
    size_bytes: int = 0
    convert_s: float = 0.0
    load_s: Optional[float] = None
    latency: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # signature -> case -> p50_ms...
    max_abs_error: Optional[float] = None
    max_scaled_error: Optional[float] = None
    top1_agreement: Optional[float] = None


@dataclass
class Run:
    """What the run carries, the same for every stage: set by the runner before the first one."""

    cfg: DictConfig
    export_dir: Path  # where the finished export will be published
    work_dir: Path  # the staging directory every stage writes into
    source: Any = None  # the model source (exportkit.sources.base.Source) chosen by model._target_
    reporter: Reporter = field(default_factory=Reporter)
    hashes: HashCache = field(default_factory=HashCache)  # each file of the export hashed once
    overrides: List[str] = field(default_factory=list)  # the command line's, for the manifest
    records: List[StageRecord] = field(default_factory=list)  # each stage's outcome, as it ran
    # the verification process (exportkit.verification.process.Verifier) the runner started with the
    # export, for the verify stage; None: the verify stage starts its own
    verifier: Any = None
    # work stages left running (write_checkpoint's write), finished by the runner before it is needed
    background: Background = field(default_factory=Background)


@dataclass
class Model:
    """What the source knows of the model: the object itself and what every graph serves."""

    instance: Any = None  # the source model (a keras.Model, or a JAX model)
    custom_objects: Dict[str, Any] = field(default_factory=dict)
    # signature key -> ordered {input name: tf.TensorSpec}; from `signatures`, or inferred
    signatures: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    # fn(dict of input tensors) -> dict of named output tensors: what every signature serves
    serving_fn: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None
    # signature key -> fn(dict of numpy inputs) -> dict of numpy outputs, from the source model
    reference: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = field(default_factory=dict)
    # input name -> what its values may be, for verify's generated inputs (the source knows its
    # model, verify does not): {"low": 0, "high": 50, "integer": True} (integers in [low, high)),
    # or {"values": [...], "sentence": True} (drawn from these; sentence: words joined by spaces
    # for a string input); each with "origin", the layer it came from, for messages
    input_hints: Dict[str, Dict[str, Any]] = field(default_factory=dict)


@dataclass
class ExportContext:
    """The run (``run``), the model (``model``), its training (``training``, for a compiled
    model), and what the stages write: the variables, the graphs, the files, the records the
    manifest keeps."""

    run: Run
    model: Model = field(default_factory=Model)
    training: Optional[Training] = None  # set by a source whose model is compiled
    # variable group name ("model", "optimizer", ...) -> list of tf.Variable
    variables: Dict[str, List[Any]] = field(default_factory=dict)
    graphs: Dict[str, Graph] = field(default_factory=dict)  # tag -> Graph
    # the non-variable resources (lookup tables) write_checkpoint saved, for write_graphs to check
    # against what the graphs capture (a pipeline may write the checkpoint before it traces)
    checkpointed_resources: Optional[List[Any]] = None
    # files written under the export's assets/ (relative name -> text), e.g. saved_model.json
    assets: Dict[str, str] = field(default_factory=dict)
    saved_model_file: Optional[Path] = None
    # package -> the ops of the graphs it registers (exportkit.artifact.op_libraries), by write_graphs
    op_libraries: Dict[str, OpLibrary] = field(default_factory=dict)
    formats: Dict[str, FormatRecord] = field(default_factory=dict)  # name -> record, by the convert stage
    verify_report: Dict[str, Any] = field(default_factory=dict)
    verification: Verification = field(default_factory=Verification)  # set by the verify stage
    serving: Optional[ServingRecord] = None  # set by the runner (exportkit.serving)
    conversion: Optional[Conversion] = None  # set by the jax2tf stage
    extra: Dict[str, Any] = field(default_factory=dict)  # room for users' own stages; exportkit keeps nothing here
