"""The op libraries an export needs: packages other than TensorFlow whose import registers ops
the export's graphs use (``tensorflow_text``'s tokenizers, ``tensorflow_io``'s readers). A process
that loads the export (the verification process, ``exportkit verify``, TF Serving) must have them.

A library registers its ops with ``tf.load_op_library``, which returns a module of op wrappers
marked ``_IS_TENSORFLOW_PLUGIN``; the package whose modules hold that module is the library. So
the exporting process, which has every op the graphs use registered, can name them all.

>>> needed({"MatMul", "RegexSplitWithOffsets"})  # doctest: +SKIP
{'tensorflow_text': OpLibrary(distribution='tensorflow-text', version='2.21.1', ops=['RegexSplitWithOffsets'])}
"""

import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any, Dict, Iterable, List, Set

# packages that load TensorFlow's own op plugins, or are this process's scripts: not libraries
NOT_LIBRARIES = {"tensorflow", "keras", "tf_keras", "__main__", "__mp_main__", "exportkit"}


@dataclass
class OpLibrary:
    """One package an export needs for its ops, as the manifest's ``op_libraries`` records it."""

    distribution: str = ""  # what pip installs ("tensorflow-text"), "" when not known
    version: str = ""
    ops: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def install(self, package: str) -> str:
        """The ``pip install`` line that brings this library, at the version exported with."""
        name = self.distribution or package
        return f"pip install {name}=={self.version}" if self.version else f"pip install {name}"


def graph_ops(meta_graphs: Iterable[Any]) -> Set[str]:
    """Every op type the MetaGraphDefs use, in their graphs and their functions."""
    ops: Set[str] = set()
    for meta_graph in meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    return ops


def plugins() -> Dict[int, Any]:
    """id -> module, for every op module ``tf.load_op_library`` returned in this process."""
    found = {}
    for module in list(sys.modules.values()):
        try:  # the module's own dict: a lazy module's __getattr__ would import what it stands for
            if vars(module).get("_IS_TENSORFLOW_PLUGIN", False):
                found[id(module)] = module
        except TypeError:  # None, or an object without a __dict__ put in sys.modules
            continue
    return found


def op_names(module: Any) -> Set[str]:
    """The ops an op module registered: its attributes named like ops (``RegexSplitWithOffsets``)."""
    return {attribute for attribute in vars(module) if attribute[:1].isupper()}


def providers(modules: Dict[int, Any]) -> Dict[str, str]:
    """Op name -> the package that registered it, for the ops of ``modules`` (``plugins()``)
    that a library other than TensorFlow loaded: the package whose modules hold the op module."""
    owners: Dict[int, Set[str]] = {}
    for name, module in list(sys.modules.items()):
        if module is None or id(module) in modules:
            continue
        try:
            names = list(vars(module).values())
        except TypeError:
            continue
        for value in names:
            if id(value) in modules:
                owners.setdefault(id(value), set()).add(name.split(".")[0])
    found: Dict[str, str] = {}
    for key, packages in owners.items():
        libraries = sorted(packages - NOT_LIBRARIES)
        if not libraries:
            continue  # TensorFlow's own plugins (its contrib ops), or a script's
        for op in op_names(modules[key]):
            found.setdefault(op, libraries[0])
    return found


def needed(ops: Set[str]) -> Dict[str, OpLibrary]:
    """Package -> ``OpLibrary`` for the ``ops`` that a library other than TensorFlow registered."""
    # only the op modules that registered an op the graphs use are traced to their package: the
    # search through every module's attributes is the costly part, and most exports need none
    modules = {key: module for key, module in plugins().items() if op_names(module) & ops}
    by_package: Dict[str, List[str]] = {}
    for op, package in (providers(modules) if modules else {}).items():
        if op in ops:
            by_package.setdefault(package, []).append(op)
    distributions = metadata.packages_distributions() if by_package else {}
    libraries = {}
    for package, names in sorted(by_package.items()):
        distribution = (distributions.get(package) or [""])[0]
        try:
            version = metadata.version(distribution) if distribution else ""
        except metadata.PackageNotFoundError:
            version = ""
        libraries[package] = OpLibrary(distribution, version, sorted(names))
    return libraries
