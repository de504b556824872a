"""The object layout every part of an export is written from, and variable sizes.

The checkpoint and each MetaGraphDef are saved from roots built by ``trackable_root``, so a
variable has the same checkpoint key (``model_variables/0/...``) in all of them and one
``variables/`` directory serves every graph, for the TF2 and TF1 loaders.

Resources other than variables (lookup tables, mutable hash tables...) are found in what the
traced graphs capture (``graph_resources``) and held by every root in one list, ``resources``:
the graphs carry their creation and initialization (TF's ``__saved_model_init_op``), and a
resource with checkpointed state (a ``MutableHashTable``) has the same keys in the checkpoint
and in every graph. Only resources some graph uses are exported: a lookup layer's adapt-time
token counts are not.
"""

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple


def trackable_root(variables: Dict[str, List], groups: Iterable[str], resources: Sequence = ()):
    """A ``tf.Module`` holding the named variable groups, e.g. ``root.model_variables``, and the
    graphs' other resources as ``root.resources`` (absent when there are none, so exports without
    tables keep their layout)."""
    import tensorflow as tf

    root = tf.Module()
    for group in groups:
        setattr(root, f"{group}_variables", list(variables[group]))
    if resources:
        root.resources = list(resources)
    return root


def captured(functions: Iterable) -> Iterable[Tuple[Any, Optional[Any]]]:
    """``(captured resource tensor, the Python object owning it or None)`` for every resource
    handle the concrete functions capture (nested functions' captures are lifted into them)."""
    for function in functions:
        for external, _ in function.graph.captures:
            if getattr(external, "dtype", None) is None or external.dtype.name != "resource":
                continue
            parent = getattr(external, "_parent_trackable", None)
            yield external, (parent() if parent is not None else None)


def graph_resources(functions: Iterable) -> List[Any]:
    """The resources other than variables the functions capture (lookup tables...), each once,
    in the order first captured: the same functions give the same order, so the same layout."""
    from tensorflow.python.trackable.resource import CapturableResource

    found, seen = [], set()
    for _, owner in captured(functions):
        if isinstance(owner, CapturableResource) and id(owner) not in seen:
            seen.add(id(owner))
            found.append(owner)
    return found


def all_graph_resources(graphs) -> List[Any]:
    """``graph_resources`` over every graph of the export, in graph order (what every root holds)."""
    return graph_resources(f for graph in graphs.values() for f in graph.functions.values())


def untracked_captures(functions: Iterable, variables: Iterable) -> List[Tuple[Any, Optional[Any]]]:
    """Captured resources that no root can hold: variables outside the given groups, and handles
    no trackable object owns (``(tensor, owner)``; what TF's save would reject as "untracked")."""
    from tensorflow.python.trackable.resource import CapturableResource

    known = {id(v) for v in variables}
    return [
        (tensor, owner)
        for tensor, owner in captured(functions)
        if not isinstance(owner, CapturableResource) and id(owner) not in known
    ]


def holder(root, tensor, owner=None, depth: int = 4) -> Optional[str]:
    """Which layer of ``root`` (the source model) holds a captured resource: ``"layer 'lookup'
    (TableLayer), attribute table"``, or None. Each layer (``root`` itself when it has no
    sublayers) is searched through its plain attributes, lists and dicts, not into other named
    objects (layers); an attribute matches when it is the tensor, its owner, a ``keras.Variable``
    wrapping its owner (one Keras does not track: ``attribute states.0``), or an unnamed object
    whose handle it is."""
    flatten = getattr(root, "_flatten_layers", None)
    for layer in list(flatten()) if callable(flatten) else [root]:
        path = _attribute_path(layer, tensor, owner, depth)
        if path:
            return f"layer {getattr(layer, 'name', '?')!r} ({type(layer).__name__}), attribute {path}"
    return None


def _named(value) -> bool:
    return isinstance(getattr(value, "name", None), str)


def _wraps(value, owner) -> bool:
    """Whether ``value`` is a Keras variable whose backend variable is ``owner``."""
    try:
        import keras
    except ImportError:
        return False
    return isinstance(value, keras.Variable) and getattr(value, "_value", None) is owner


def _attribute_path(layer, tensor, owner, depth: int) -> Optional[str]:
    seen = {id(layer)}

    def matches(value) -> bool:
        if value is tensor or (owner is not None and value is owner):
            return True
        if owner is not None and _wraps(value, owner):  # a keras.Variable around the tf.Variable
            return True
        if _named(value):
            return False
        for attribute in ("handle", "resource_handle", "_resource_handle"):
            try:
                if getattr(value, attribute, None) is tensor:
                    return True
            except Exception:  # noqa: BLE001 - a property that cannot be read here is no match
                pass
        return False

    def walk(obj, path, level):
        items = (
            obj.items()
            if isinstance(obj, dict)
            else enumerate(obj)
            if isinstance(obj, (list, tuple))
            else vars(obj).items()
            if hasattr(obj, "__dict__")
            else ()
        )
        # public attributes first: TF's tracking keeps its own private references too
        for key, value in sorted(items, key=lambda item: str(item[0]).startswith("_")):
            here = f"{path}.{key}" if path else str(key)
            if matches(value):
                return here
            descend = isinstance(value, (list, tuple, dict)) or (hasattr(value, "__dict__") and not _named(value))
            if descend and level < depth and id(value) not in seen:
                seen.add(id(value))
                found = walk(value, here, level + 1)
                if found:
                    return found
        return None

    return walk(layer, "", 0)


def nbytes(variables: Iterable) -> int:
    return sum(v.shape.num_elements() * v.dtype.size for v in variables)


def mib(size: int) -> str:
    """``"12.3 MiB"``."""
    return f"{size / 2**20:.1f} MiB"


VALUE = ".ATTRIBUTES/VARIABLE_VALUE"


def group_values(reader, group: str) -> List[Any]:
    """The checkpoint values of one variable group, in the order they were exported (the keys
    ``trackable_root`` gives them: ``<group>_variables/<i>``)."""
    prefix = f"{group}_variables/"
    keys = {k for k in reader.get_variable_to_shape_map() if k.startswith(prefix) and k.endswith(VALUE)}
    return [reader.get_tensor(f"{prefix}{i}/{VALUE}") for i in range(len(keys))]


def assign(variables, values, group: str) -> None:
    """Assign a group's checkpoint values to a rebuilt model's variables, checking count and shapes."""
    from exportkit.errors import LoadError

    if len(variables) != len(values):
        raise LoadError(
            f"the checkpoint holds {len(values)} {group} variables but the rebuilt model has "
            f"{len(variables)}; was the export written from a different model?"
        )
    for variable, value in zip(variables, values):
        if tuple(variable.shape) != tuple(value.shape):
            name = getattr(variable, "path", None) or variable.name
            raise LoadError(
                f"{group} variable {name} has shape {tuple(variable.shape)} but the "
                f"checkpoint holds {tuple(value.shape)}"
            )
        variable.assign(value)
