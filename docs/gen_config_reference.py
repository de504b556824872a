"""Write docs/config.md, the config reference, from the schema (exportkit/schema.py) and conf/.

    python docs/gen_config_reference.py           # (re)write docs/config.md
    python docs/gen_config_reference.py --check   # exit 1 if docs/config.md is not what this writes

One table per config node (key, type, default, description). The dataclasses in
``exportkit.schema`` give the keys, types and defaults; ``conf/`` gives the group options, the
options' own values and the pipelines' stages. A field's description is, in this order: its
``metadata["help"]`` (or ``"doc"``, ``"description"``) in the schema; the entry for it in
``DESCRIPTIONS`` below (user-facing text for fields whose schema comment is missing or written
for maintainers); else the comment at the end of its line or on the lines right above it in
exportkit/schema.py. Only Hydra and OmegaConf are imported (no TensorFlow), and the output
depends on nothing but those files.
"""

import argparse
import ast
import dataclasses
import inspect
import io
import re
import sys
import tokenize
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "config.md"
CONF = ROOT / "conf"
sys.path.insert(0, str(ROOT))

from omegaconf import MISSING, OmegaConf  # noqa: E402

from exportkit import schema  # noqa: E402

# User-facing descriptions, keyed "DataclassName.field", for the fields exportkit/schema.py does
# not describe (no comment) or describes for its maintainers (why a field is typed as it is).
# A field's metadata={"help": ...} in the schema wins over an entry here; delete the entry then.
DESCRIPTIONS = {
    "ExportConfig.model": "the model source: a group option (table below), or your own source class as "
    "`model._target_` (see [Extending](extending.md))",
    "ExportConfig.target": "where the export will run: verify runs there, JAX lowers for it ([`target`](#target))",
    "ExportConfig.pipeline": "the stages, in order ([`pipeline`](#pipeline)); `model=jax` picks `pipeline=jax`",
    "ExportConfig.signatures": "signature key -> `{inputs: {NAME: {shape: [null, 8], dtype: float32}}}` (`null`: a "
    "dynamic dimension; `dtype: string` too), set as `+signatures.serving_default={...}`. Omitted for a built "
    "Keras model: `serving_default` is inferred from its inputs, batch dimension dynamic. Required for JAX. "
    "Checked against the model before tracing",
    "ExportConfig.custom_objects": "name -> dotted import path of a custom layer, loss or function "
    "(`+custom_objects.Scale=my_layers.Scale`)",
    "ExportConfig.compile": "compile arguments for a model built uncompiled ([`compile`](#compile))",
    "ExportConfig.export_dir": "where the finished export appears (not used with `serving.base_path`)",
    "ExportConfig.overwrite": "replace a non-empty `export_dir`, once the new export is complete",
    "ExportConfig.as_text": "write `saved_model.pbtxt` instead of `saved_model.pb`",
    "ExportConfig.serving_only": "only the `serve` graph, even for a compiled model",
    "ExportConfig.seed": "an integer from 0 to 2**32-1: seeds Python, NumPy and TensorFlow before the model is "
    "built, and verify's generated inputs",
    "ExportConfig.verify": "how the export is checked before it is published ([`verify`](#verify))",
    "ExportConfig.serving": "versioned publishing for TensorFlow Serving ([`serving`](#serving))",
    "KerasModelConf.build": "a `_target_` node: the factory returning a `keras.Model`; its keyword arguments stand "
    "beside `_target_` (`+model.build.units=8`)",
    "KerasFileModelConf.path": "a `.keras` or `.h5` file",
    "JaxModelConf.build": "a `_target_` node: the factory returning `(apply_fn, params)`; its keyword arguments "
    "stand beside `_target_`",
    "TfKerasModelConf.path": "a `.h5` or `.keras` file, or a SavedModel directory written by tf_keras",
    "TargetConf.name": "the target's name (`cpu`, `gpu`)",
    "TargetConf.devices": "the devices verify runs the reloaded export on; those this machine lacks are recorded "
    "as not verified (`/CPU:0` is used when none is present)",
    "TargetConf.jit_compile": "XLA-compile the traced functions (`jit_compile=True`)",
    "TargetConf.platforms": "the platforms a JAX model is lowered for: `cpu`, `cuda`, `rocm`, `tpu`",
    "PipelineConf.stages": "ordered stage name -> `_target_` node (the stage's arguments beside it); `null` "
    "disables a stage",
    "CompileConf.optimizer": "a name (`adam`) or a `_target_` node; `null` (with `loss` `null`): the model is "
    "exported as its factory built it",
    "CompileConf.loss": "one loss, a list (one per output) or a dict keyed by output name; needs `optimizer`",
    "CompileConf.loss_weights": "as `model.compile` takes them",
    "CompileConf.metrics": "as `model.compile` takes them: one list, a list per output, or a dict by output",
    "CompileConf.weighted_metrics": "as `model.compile` takes them",
    "CompileConf.targets": "output name -> `{shape, dtype}` (dtype `float32` if left out): the `<output>_target` "
    "input of the `train`/`eval` graphs (`+compile.targets.label={shape: [null], dtype: int32}`)",
    "VerifyConf.atol": "absolute tolerance, as `numpy.allclose`",
    "VerifyConf.rtol": "relative tolerance, as `numpy.allclose`",
    "VerifyConf.batch_sizes": "the batch sizes every signature is verified at (at least one)",
    "VerifyConf.tolerances": "output -> `{atol, rtol}` (either may be left out: `verify.atol` / `verify.rtol` "
    "apply), e.g. `+verify.tolerances.logits={atol: 1e-3}`",
    "VerifyConf.latency": "the latency verify's process measures ([`verify.latency`](#verifylatency))",
    "VerifyConf.inputs": "a `.npz` of real examples used instead of generated inputs; keys `[signature/][case/]input` "
    "(`x`, `serving_default/x`, `serving_default/a/x`)",
    "LatencyConf.enabled": "measure latency (`verify.latency.enabled=false`: not measured)",
    "LatencyConf.runs": "at most this many warm calls are timed per case",
    "LatencyConf.budget_s": "warm calls stop once this many seconds are spent on one case",
}
GENERIC = {"_target_": "the class Hydra instantiates for this node"}

TITLE = "# Config reference"
PREAMBLE = """\
<!-- Generated by docs/gen_config_reference.py from exportkit/schema.py and conf/: do not edit.
     Run `python docs/gen_config_reference.py` after changing them; `make docs` checks it. -->

Every key of the composed config, as `exportkit/schema.py` declares it. Hydra checks each
composed config against this schema, so a misspelt key or a value of the wrong type is an error
naming the key.

Set a key on the command line as `KEY=VALUE` (`verify.atol=1e-4`), add an entry to a mapping
with `+KEY=VALUE` (`+custom_objects.Scale=my_layers.Scale`), remove one with `~KEY`, and sweep
with `-m KEY=A,B`. The Python API takes the same strings: `overrides=["verify.batch_sizes=[1,64]"]`.
`python -m exportkit --cfg job` prints the composed config.

Types: `X or null` may be `null`; `any` is checked where it is used (see the description).
"required" has no default: the run stops with an error naming the key.
"""


# --- descriptions from the schema's source ------------------------------------------------------


def comments_by_line(source: str) -> Dict[int, str]:
    """Line number -> the text of the comment on it."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found[token.start[0]] = token.string.lstrip("#").strip()
    return found


def field_comments(module) -> Dict[Tuple[str, str], str]:
    """``(class name, field name)`` -> the comment above the field (contiguous comment lines)
    followed by the comment at the end of its line(s)."""
    source = inspect.getsource(module)
    lines = source.splitlines()
    comments = comments_by_line(source)
    found = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if not isinstance(item, ast.AnnAssign) or not isinstance(item.target, ast.Name):
                continue
            above: List[str] = []
            number = item.lineno - 1
            while number >= 1 and lines[number - 1].strip().startswith("#") and number in comments:
                above.insert(0, comments[number])
                number -= 1
            trailing = [comments[n] for n in range(item.lineno, (item.end_lineno or item.lineno) + 1) if n in comments]
            text = " ".join(part for part in above + trailing if part)
            if text:
                found[(node.name, item.target.id)] = text
    return found


def rst_to_md(text: str) -> str:
    """``code`` (reStructuredText) -> `code`, lines joined, ``<`` and ``>`` outside code escaped."""
    return plain(re.sub(r"``(.+?)``", r"`\1`", " ".join(line.strip() for line in text.split())))


def plain(text: str) -> str:
    """``<`` and ``>`` outside `code` as entities, so ``<input>_<axis>`` is text, not HTML."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def docstring(node_type) -> str:
    """A dataclass's own docstring (not the one dataclasses makes up), one paragraph per line."""
    text = node_type.__dict__.get("__doc__") or ""
    if text.startswith(node_type.__name__ + "("):
        return ""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(rst_to_md(p) for p in paragraphs if p.strip())


def describe(node_type, item: dataclasses.Field, comments: Dict[Tuple[str, str], str]) -> str:
    for key in ("help", "doc", "description"):
        if item.metadata.get(key):
            return rst_to_md(str(item.metadata[key]))
    curated = DESCRIPTIONS.get(f"{node_type.__name__}.{item.name}")
    if curated:
        return curated
    comment = comments.get((node_type.__name__, item.name))
    if comment:
        return rst_to_md(comment)
    return GENERIC.get(item.name, "")


# --- types and defaults -------------------------------------------------------------------------


def type_name(kind) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return "any"
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        named = " or ".join(type_name(a) for a in inner)
        return f"{named} or null" if len(inner) < len(args) else named
    if origin in (list, List):
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin in (dict, Dict):
        return f"dict[{', '.join(type_name(a) for a in args)}]" if args else "dict"
    if dataclasses.is_dataclass(kind):
        return "node"
    return getattr(kind, "__name__", str(kind))


def value_text(value) -> str:
    """A value as it is written in YAML or on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {value_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def default_of(item: dataclasses.Field) -> Any:
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return MISSING


def missing(value) -> bool:
    """No default: OmegaConf's ``MISSING`` (``"???"``), or no default at all."""
    return isinstance(value, str) and value == MISSING


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def code(text: str) -> str:
    return f"`{text}`" if text else ""


# --- conf/ --------------------------------------------------------------------------------------


def group_options(group: str) -> List[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def yaml(path: Path) -> Dict[str, Any]:
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return {str(k): v for k, v in node.items()} if isinstance(node, dict) else {}


def primary_defaults() -> Dict[str, str]:
    """conf/config.yaml's defaults list: group -> option."""
    chosen = {}
    for entry in yaml(CONF / "config.yaml").get("defaults", []):
        if isinstance(entry, dict):
            chosen.update({str(k): str(v) for k, v in entry.items()})
    return chosen


def schema_node_of(option_file: Path) -> Optional[str]:
    """The schema node a model option names first in its defaults list (``keras_schema``)."""
    for entry in yaml(option_file).get("defaults", []):
        if isinstance(entry, str) and entry in schema.MODEL_SCHEMAS:
            return entry
    return None


def yaml_comments(path: Path) -> Dict[str, str]:
    """Dotted key -> the comment lines right above it in a YAML file (indentation gives nesting)."""
    found: Dict[str, str] = {}
    stack: List[str] = []
    above: List[str] = []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"^(\s*)([A-Za-z_][\w]*):", line)
        if match:
            depth = len(match.group(1)) // 2
            del stack[depth:]
            stack.append(match.group(2))
            if above:
                found[".".join(stack)] = " ".join(above)
        above = []
    return found


def flat(node: Dict[str, Any], prefix: str = "") -> List[Tuple[str, Any]]:
    out = []
    for key, value in node.items():
        if isinstance(value, dict) and value and "_target_" not in value:
            out += flat(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


# --- the page -----------------------------------------------------------------------------------


def node_table(prefix: str, node_type, comments, overrides: Optional[Dict[str, str]] = None) -> List[str]:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    hints = typing.get_type_hints(node_type)
    for item in dataclasses.fields(node_type):
        kind = hints.get(item.name, Any)
        default = default_of(item)
        if overrides and item.name in overrides:
            shown = overrides[item.name]
        elif dataclasses.is_dataclass(kind) and not missing(default):
            shown = f"see [`{prefix}{item.name}`](#{anchor(prefix + item.name)})"
        elif missing(default):
            shown = "required"
        elif dataclasses.is_dataclass(default):
            shown = f"see [`{prefix}{item.name}`](#{anchor(prefix + item.name)})"
        else:
            shown = code(value_text(default))
        rows.append(
            f"| `{prefix}{item.name}` | {cell(type_name(kind))} | {cell(shown)} | "
            f"{cell(describe(node_type, item, comments))} |"
        )
    return rows


def anchor(key: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "", key.lower().replace(".", ""))


def section(key: str, node_type, comments, intro: str = "", overrides=None) -> List[str]:
    lines = [f"## `{key}` {{#{anchor(key)}}}", ""]
    text = intro or docstring(node_type)
    if text:
        lines += [text, ""]
    lines += node_table(key + ".", node_type, comments, overrides)
    return lines + [""]


def groups_section() -> List[str]:
    chosen = primary_defaults()
    lines = [
        "## Config groups",
        "",
        "A group is chosen as a whole (`model=keras`, `target=gpu`); `experiment` options are added "
        "with `+experiment=NAME` (several: `+experiment=[serving_only,text]`). "
        "The options are the YAML files under `conf/GROUP/`.",
        "",
        "| group | options | default |",
        "|---|---|---|",
    ]
    for group in ("model", "target", "pipeline", "formats", "experiment", "hydra/launcher"):
        options = ", ".join(f"`{o}`" for o in group_options(group))
        lines.append(f"| `{group}` | {options} | {code(chosen.get(group, ''))} |")
    lines += [
        "",
        "`hydra/launcher` also takes the options the installed Hydra launcher plugins bring "
        "(`joblib`, `submitit_local`, `submitit_slurm`, `ray`); see [Sweeps](sweeps.md).",
        "",
    ]
    return lines


def experiment_section() -> List[str]:
    lines = ["## Experiments {#experiments}", "", "| `+experiment=` | what it sets | comment |", "|---|---|---|"]
    for option in group_options("experiment"):
        path = CONF / "experiment" / f"{option}.yaml"
        node = yaml(path)
        sets = [f"{k}={value_text(v)}" for k, v in flat({k: v for k, v in node.items() if k != "defaults"})]
        sets += [
            f"{k.split('/')[-1].split('@')[0]}={v}"
            for entry in node.get("defaults", [])
            if isinstance(entry, dict)
            for k, v in entry.items()
        ]
        comment = plain(
            " ".join(
                line.lstrip("#").strip()
                for line in path.read_text().splitlines()
                if line.startswith("#") and "@package" not in line
            )
        )
        lines.append(f"| `{option}` | {cell(', '.join(f'`{s}`' for s in sets))} | {cell(comment)} |")
    return lines + [""]


def model_sections(comments) -> List[str]:
    users: Dict[str, List[str]] = {name: [] for name in schema.MODEL_SCHEMAS}
    values: Dict[str, Dict[str, Any]] = {}
    for option in group_options("model"):
        node_name = schema_node_of(CONF / "model" / f"{option}.yaml")
        if node_name:
            users[node_name].append(option)
            values[option] = {k: v for k, v in yaml(CONF / "model" / f"{option}.yaml").items() if k != "defaults"}
    lines = [
        "## `model` options {#model}",
        "",
        "Each `model` option is a schema node of its own; its `_target_` is the model source class, "
        "and its other keys are that class's constructor arguments. The `*_in_memory` options take a "
        "model object: `exportkit.export_saved_model` picks them from the object's type, and they are "
        "not for the command line.",
        "",
    ]
    for name, node_type in schema.MODEL_SCHEMAS.items():
        options = users.get(name) or [name[: -len("_schema")]]
        lines += [f"### `{'`, `'.join('model=' + o for o in options)}` {{#model-{anchor(options[0])}}}", ""]
        text = docstring(node_type)
        if text:
            lines += [text, ""]
        for option in options:
            set_here = [
                f"`model.{k}: {value_text(v)}`" for k, v in flat(values.get(option, {})) if "???" not in value_text(v)
            ]
            if set_here:
                lines += [f"`model={option}` sets {', '.join(set_here)}.", ""]
        lines += node_table("model.", node_type, comments) + [""]
    return lines


def target_values() -> List[str]:
    options = group_options("target")
    nodes = {o: yaml(CONF / "target" / f"{o}.yaml") for o in options}
    lines = ["Values per option:", "", "| key | " + " | ".join(f"`target={o}`" for o in options) + " |"]
    lines.append("|---|" + "---|" * len(options))
    keys = [f.name for f in dataclasses.fields(schema.TargetConf)]
    for key in keys:
        lines.append(f"| `target.{key}` | " + " | ".join(code(value_text(nodes[o].get(key))) for o in options) + " |")
    return lines + [""]


def pipeline_values() -> List[str]:
    lines = []
    for option in group_options("pipeline"):
        path = CONF / "pipeline" / f"{option}.yaml"
        stages = yaml(path).get("stages", {})
        notes = yaml_comments(path)
        lines += [
            f"`pipeline={option}` runs, in this order:",
            "",
            "| stage | `_target_` | arguments |",
            "|---|---|---|",
        ]
        for name, node in stages.items():
            node = node or {}
            arguments = []
            for key, value in node.items():
                if key == "_target_":
                    continue
                note = plain(notes.get(f"stages.{name}.{key}", ""))
                arguments.append(f"`{key}: {value_text(value)}`" + (f": {note}" if note else ""))
            lines.append(f"| `{name}` | `{node.get('_target_', '')}` | {cell('<br>'.join(arguments))} |")
        lines.append("")
    lines += [
        "Every stage also takes `required` (default `true`): a required stage that fails aborts the "
        "export; `pipeline.stages.NAME.required=false` records the failure and goes on.",
        "",
    ]
    return lines


def render() -> str:
    comments = field_comments(schema)
    chosen = primary_defaults()
    group_default: Dict[str, str] = {
        key: f"group, `{key}={chosen[key]}`" for key in ("model", "target", "pipeline") if key in chosen
    }
    lines = [TITLE, "", PREAMBLE]
    lines += groups_section()
    lines += ["## Top-level keys {#top-level}", ""]
    text = docstring(schema.ExportConfig)
    if text:
        lines += [text, ""]
    lines += node_table("", schema.ExportConfig, comments, group_default) + [""]
    lines += model_sections(comments)
    lines += section("target", schema.TargetConf, comments)[:-1] + [""] + target_values()
    lines += section("pipeline", schema.PipelineConf, comments)[:-1] + [""] + pipeline_values()
    for key, node_type in nested_nodes(schema.ExportConfig, ""):
        if key not in ("target", "pipeline"):
            lines += section(key, node_type, comments)
    lines += formats_section()
    lines += experiment_section()
    return "\n".join(lines).rstrip("\n") + "\n"


def formats_section() -> List[str]:
    """Each ``conf/formats`` option's keys, defaults and the comments beside them."""
    lines = [
        "## `formats` options {#formats}",
        "",
        "Deployment formats converted from the SavedModel and verified with their own runtimes "
        "([Deployment formats](formats.md)): `+formats=[litert,onnx]` adds the chosen ones, each under "
        "`formats.<name>` (`formats.litert.quantize=int8`).",
        "",
    ]
    for option in group_options("formats"):
        path = CONF / "formats" / f"{option}.yaml"
        lines += [f"### `formats.{option}`", "", "| key | default | comment |", "|---|---|---|"]
        for line in path.read_text().splitlines():
            match = re.match(r"^([A-Za-z_]\w*):\s*([^#]*?)\s*(?:#\s*(.*))?$", line)
            if match:
                key, value, note = match.groups()
                lines.append(f"| `{key}` | {code(value or 'null')} | {cell(plain(note or ''))} |")
        lines.append("")
    return lines


def nested_nodes(node_type, prefix: str) -> List[Tuple[str, Any]]:
    """Every dataclass-typed field under ``node_type``, depth first: ``[("verify", VerifyConf),
    ("verify.latency", LatencyConf), ...]``."""
    out = []
    hints = typing.get_type_hints(node_type)
    for item in dataclasses.fields(node_type):
        kind = hints.get(item.name)
        if dataclasses.is_dataclass(kind):
            out.append((prefix + item.name, kind))
            out += nested_nodes(kind, f"{prefix}{item.name}.")
    return out


def stale_fallbacks() -> List[str]:
    known = {f"{t.__name__}.{f.name}" for _, t in nested_nodes(schema.ExportConfig, "") for f in dataclasses.fields(t)}
    known |= {f"ExportConfig.{f.name}" for f in dataclasses.fields(schema.ExportConfig)}
    known |= {f"{t.__name__}.{f.name}" for t in schema.MODEL_SCHEMAS.values() for f in dataclasses.fields(t)}
    return sorted(set(DESCRIPTIONS) - known)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/config.md is out of date")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where to write (default: docs/config.md)")
    args = parser.parse_args(argv)
    for key in stale_fallbacks():
        print(f"gen_config_reference: DESCRIPTIONS has {key}, which the schema no longer has", file=sys.stderr)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.is_file() else None
        if current != text:
            print(
                f"{args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output} is out of "
                f"date with exportkit/schema.py and conf/; run: python docs/gen_config_reference.py",
                file=sys.stderr,
            )
            return 1
        return 0
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
