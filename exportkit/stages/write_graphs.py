"""write_graphs: the MetaGraphDefs (``serve``, and ``train`` / ``eval`` for a compiled model),
all restoring from the one checkpoint in ``variables/``, laid out as ``layout`` says.

TensorFlow 2 writes one MetaGraphDef per save. Each graph is saved on its own from a root that
holds only its variable groups, so it carries only the functions its signatures need (and, for
``serve``, the positional endpoint ``serve``: ``endpoints``). Then:

* ``layout=serving`` (default): ``serve`` alone in the root's ``saved_model.pb``, because
  TensorFlow uses its object-graph loader (``tf.saved_model.load`` without tags, ``TFSMLayer``,
  tf2onnx's TF2 path) only for a single MetaGraphDef; every other graph in ``graphs/<tag>/``,
  sharing the root's checkpoint through relative symlinks (``exportkit.artifact.files``).
* ``layout=tf1``: TF 1.14's layout, the MetaGraphDefs retagged and joined into one proto.
"""

import tempfile
from pathlib import Path
from typing import Any, Dict

from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2

from exportkit import serving, tracing
from exportkit.artifact import canonical, files, op_libraries
from exportkit.context import ExportContext, Graph
from exportkit.errors import ModelSourceError
from exportkit.stages.base import Stage
from exportkit.variables import all_graph_resources, holder, trackable_root, untracked_captures

# SignatureDef method names per graph, as TF 1.14 wrote them.
METHOD_NAMES = {
    "serve": "tensorflow/serving/predict",
    "train": "tensorflow/supervised/training",
    "eval": "tensorflow/supervised/eval",
}


class WriteGraphs(Stage):
    needs = ("graphs", "variables")
    adds = ("saved_model_file",)
    reads_files = False  # the graphs are built while the checkpoint is written; see write_fingerprint

    def __call__(self, ctx: ExportContext) -> ExportContext:
        meta_graphs, version = {}, 0
        with tempfile.TemporaryDirectory(prefix="exportkit-graph-") as tmp:
            for tag, graph in ctx.graphs.items():
                meta_graphs[tag], version = save_meta_graph(ctx, graph, Path(tmp) / tag)
                ctx.run.reporter.progress(
                    f"{tag}: signatures {', '.join(graph.functions)} "
                    f"({len(meta_graphs[tag].graph_def.library.function)} functions)"
                )
        for name, text in ctx.assets.items():
            (ctx.run.work_dir / "assets").mkdir(exist_ok=True)
            (ctx.run.work_dir / "assets" / name).write_text(text)
        ctx.op_libraries = op_libraries.needed(op_libraries.graph_ops(meta_graphs.values()))
        for package, library in ctx.op_libraries.items():
            ctx.run.reporter.progress(f"op library {package} {library.version}: {', '.join(library.ops)}")
        ctx.saved_model_file = write_layout(
            meta_graphs, version, ctx.run.work_dir, ctx.run.cfg.layout, ctx.run.cfg.as_text
        )
        serving.write_warmup(ctx)  # assets.extra/tf_serving_warmup_requests (serving.warmup)
        ctx.run.background.finish(ctx.run.reporter)  # the checkpoint, which the fingerprint hashes
        write_fingerprint(ctx.run.work_dir, ctx.run.hashes)
        return ctx


def write_layout(meta_graphs: Dict[str, Any], version: int, root: Path, layout: str, as_text: bool) -> Path:
    """Write the MetaGraphDefs (tag -> MetaGraphDef, ``serve`` first) under ``root`` as ``layout``
    says; return the root's ``saved_model.pb``/``.pbtxt``. ``variables/`` (and ``assets/``) must
    be in ``root`` already, the checkpoint's files not yet: the nested graphs link the directories."""
    if layout == "tf1":
        groups = {root: list(meta_graphs.values())}
    else:
        top = "serve" if "serve" in meta_graphs else next(iter(meta_graphs))
        groups = {
            (root if tag == top else root / files.GRAPHS / tag): [meta_graph] for tag, meta_graph in meta_graphs.items()
        }
    for directory, graphs in groups.items():
        saved_model = saved_model_pb2.SavedModel(saved_model_schema_version=version, meta_graphs=graphs)
        canonical.saved_model(saved_model)  # same model, same bytes (see exportkit.artifact.canonical)
        directory.mkdir(parents=True, exist_ok=True)
        write_saved_model(saved_model, directory, as_text)
        if directory != root:
            files.link_shared(directory, root)
    written = files.saved_model_file(root)
    assert written is not None  # written just above
    return written


def save_meta_graph(ctx: ExportContext, graph: Graph, directory: Path):
    # The graph alone: the variables are already in the export's checkpoint (write_checkpoint),
    # so TF's save is told not to write them again. The root also holds every lookup table (and
    # other non-variable resource) the export's graphs capture, as the checkpoint's root does.
    from tensorflow.python.saved_model.save import save_and_return_nodes

    check_resources_tracked(ctx, graph)
    resources = all_graph_resources(ctx.graphs)
    if ctx.checkpointed_resources is not None and {id(r) for r in resources} != {
        id(r) for r in ctx.checkpointed_resources
    }:
        raise ModelSourceError(
            f"the {graph.tag} graph captures {len(resources)} resource(s) (lookup tables) but the checkpoint "
            f"was written with {len(ctx.checkpointed_resources)}: run write_checkpoint after trace "
            f"(pipeline.stages order) so that it saves what the graphs use"
        )
    root = trackable_root(ctx.variables, graph.variable_groups, resources)
    for name, endpoint in endpoints(ctx, graph).items():
        setattr(root, name, endpoint)
    try:
        save_and_return_nodes(root, str(directory), signatures=dict(graph.functions), experimental_skip_checkpoint=True)
    except AssertionError as e:
        if "untracked" not in str(e):
            raise
        raise ModelSourceError(
            f"the {graph.tag} graph uses a TensorFlow resource that exportkit cannot track: "
            f"{str(e).splitlines()[-1].strip()}; create it inside a layer (a variable with "
            f"add_weight, a table as a tf.lookup table attribute)"
        ) from e
    copy_table_assets(directory, ctx.run.work_dir)
    single = saved_model_pb2.SavedModel()
    single.ParseFromString((directory / "saved_model.pb").read_bytes())
    meta_graph = single.meta_graphs[0]
    del meta_graph.meta_info_def.tags[:]
    meta_graph.meta_info_def.tags.append(graph.tag)
    for key, signature in meta_graph.signature_def.items():
        if not key.startswith("__"):  # leave TF's own __saved_model_init_op alone
            signature.method_name = METHOD_NAMES.get(graph.tag, signature.method_name)
    return meta_graph, single.saved_model_schema_version


def endpoints(ctx: ExportContext, graph: Graph) -> Dict[str, Any]:
    """The graph's endpoints beside its signatures; for ``serve``, the positional one Keras'
    ``model.export()`` writes too (``tracing.positional_endpoint``), for ``TFSMLayer``, unless a
    stage put its own there. Traced here, not in the trace stage, so that it is traced while the
    checkpoint is written."""
    out = dict(graph.endpoints)
    if graph.tag == "serve" and tracing.ENDPOINT not in out:
        key = "serving_default" if "serving_default" in graph.functions else next(iter(graph.functions))
        out[tracing.ENDPOINT] = tracing.positional_endpoint(graph.functions[key], ctx.model.signatures[key])
    return out


def check_resources_tracked(ctx: ExportContext, graph: Graph) -> None:
    """A captured resource that is neither a variable of the graph's groups nor a trackable
    resource (a table) cannot be restored by a loader: name the layer holding it."""
    held = [v for group in graph.variable_groups for v in ctx.variables[group]]
    untracked = untracked_captures(graph.functions.values(), held)
    if not untracked:
        return
    tensor, owner = untracked[0]
    where = holder(ctx.model.instance, tensor, owner) if ctx.model.instance is not None else None
    what = f"a {type(owner).__name__}" if owner is not None else "a raw resource handle"
    if where:
        raise ModelSourceError(
            f"the {graph.tag} graph uses {what} held by {where}, outside Keras' tracking: it is "
            f"not among the model's variables (nor a stateful RNN's states, which are exported) "
            f"nor a TensorFlow resource object (tf.lookup table), so it cannot be exported; "
            f"assign the state to a layer attribute directly (self.x = self.add_weight(...) or "
            f"keras.Variable, keras.random.SeedGenerator), where Keras tracks it, and tables as "
            f"tf.lookup tables"
        )
    raise ModelSourceError(
        f"the {graph.tag} graph uses {what} that exportkit found on no layer of the model (it "
        f"searches each layer's attributes, lists and dicts): a global random generator, or a "
        f"variable created outside the model? Create it in a layer, as a layer attribute (e.g. "
        f"keras.random.SeedGenerator, self.add_weight)"
    )


def copy_table_assets(directory: Path, work_dir: Path) -> None:
    """Files a table is initialized from (``tf.lookup.TextFileInitializer``): TF's save copied
    them to ``assets/``, and the MetaGraphDef names them relative to it."""
    import shutil

    for source in sorted((directory / "assets").glob("*")) if (directory / "assets").is_dir() else []:
        (work_dir / "assets").mkdir(exist_ok=True)
        shutil.copyfile(source, work_dir / "assets" / source.name)


def write_saved_model(saved_model, directory: Path, as_text: bool) -> Path:
    path = directory / (files.SAVED_MODEL_PBTXT if as_text else files.SAVED_MODEL_PB)
    if as_text:
        path.write_text(text_format.MessageToString(saved_model))
    else:
        path.write_bytes(saved_model.SerializeToString(deterministic=True))
    return path


def write_fingerprint(directory: Path, hashes=None) -> None:
    """TF's ``fingerprint.pb`` for the joined proto and the checkpoint (what TF's own save writes)."""
    from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting

    (directory / "fingerprint.pb").write_bytes(fingerprinting.CreateFingerprintDef(str(directory)))
    canonical.fingerprint_file(directory, hashes)  # its uuid is random otherwise
