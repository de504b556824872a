"""The files a SavedModel directory is recognised by, and where each graph of an export lives.

``layout=serving`` (the default): ``saved_model.pb`` at the export's root holds the ``serve``
graph alone, so every reader of a single-graph SavedModel takes it (``tf.saved_model.load``
without tags, ``keras.layers.TFSMLayer``, the TFLite converter, tf2onnx). Each other graph is a
SavedModel of its own under ``graphs/<tag>/``, whose ``variables`` (and ``assets``) are relative
symlinks to the root's, so one checkpoint serves every graph::

    saved_model.pb              serve
    variables/                  the one checkpoint
    assets/  fingerprint.pb  assets.extra/
    graphs/train/saved_model.pb train
    graphs/train/variables  -> ../../variables
    graphs/eval/saved_model.pb  eval
    graphs/eval/variables   -> ../../variables

``layout=tf1``: TF 1.14's layout, every graph a MetaGraphDef of the root's ``saved_model.pb``.
"""

import os
from pathlib import Path
from typing import Optional

SAVED_MODEL_PB = "saved_model.pb"
SAVED_MODEL_PBTXT = "saved_model.pbtxt"
GRAPHS = "graphs"  # layout=serving: graphs/<tag>/ holds each graph but serve
SHARED = ("variables", "assets")  # what every graph's directory links to at the root


def saved_model_file(directory: Path) -> Optional[Path]:
    """The directory's ``saved_model.pb`` or ``saved_model.pbtxt``, or None when it has neither.

    >>> saved_model_file(Path("/tmp/nothing_here")) is None
    True
    """
    for name in (SAVED_MODEL_PB, SAVED_MODEL_PBTXT):
        if (Path(directory) / name).is_file():
            return Path(directory) / name
    return None


def graph_dir(export_dir: Path, tag: str) -> Path:
    """The SavedModel directory to load the ``tag`` graph from (with ``tags=[tag]``), in either
    layout: ``graphs/<tag>/`` when the export has it, else the export's root.

    >>> graph_dir(Path("/srv/model/1"), "serve")
    PosixPath('/srv/model/1')
    >>> # tf.compat.v1.saved_model.load(sess, ["train"], str(graph_dir(export_dir, "train")))
    """
    nested = Path(export_dir) / GRAPHS / tag
    return nested if saved_model_file(nested) is not None else Path(export_dir)


def link_shared(directory: Path, root: Path) -> None:
    """Make ``directory`` (a ``graphs/<tag>/``) a SavedModel directory on its own: relative
    symlinks to the root's ``variables/`` (and ``assets/``), which TensorFlow's loaders read
    there. Relative, so they survive the export's rename into place, ``cp -a``, ``tar`` and
    ``rsync -a``; a copy that follows links (``cp -rL``, object stores) still loads, it only
    holds the checkpoint twice."""
    for name in SHARED:
        if (root / name).is_dir():
            os.symlink(os.path.relpath(root / name, directory), directory / name, target_is_directory=True)


def read_saved_model(directory: Path):
    """The ``SavedModel`` proto of ``directory``'s ``saved_model.pb`` or ``.pbtxt``; None without one."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    path = saved_model_file(directory)
    if path is None:
        return None
    proto = saved_model_pb2.SavedModel()
    if path.name == SAVED_MODEL_PBTXT:
        text_format.Parse(path.read_text(), proto)
    else:
        proto.ParseFromString(path.read_bytes())
    return proto
