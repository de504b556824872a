"""Canonical bytes for an export: the same model and config give the same files, byte for byte.

TensorFlow's ``tf.saved_model.save`` writes different ``saved_model.pb`` bytes for the same model
(tensorflow/tensorflow#54067), and a new ``fingerprint.pb`` every time. What varies, and what
this module does about it:

* **Function names** carry a process-wide counter (``__inference_serving_default_fn_117``), so
  they depend on how many functions the process traced before (a training loop, another export,
  a background thread). Every library function is renamed to its base name plus a number derived
  from its own content (``__inference_serving_default_fn_<hash>``), and every reference to it
  follows: call nodes' ``f`` attrs, ``forward_function_name``-style string attrs, gradient defs,
  the object graph's ``concrete_functions`` map and the names listed in it.
* **Gradient op types** (``_gradient_op_type: "PartitionedCall-123"``) and the
  ``registered_gradients`` naming them carry the same counter: renumbered in order.
* **Captured-input names**: ``_user_specified_name`` of a captured resource argument is a
  tensor id (``"160"``); it becomes the argument's position, which is what it identifies.
* **Ordering**: the function library comes out in the order of an internal hash map; functions,
  gradients and the stripped op list are sorted by name. Map fields (signatures, collections,
  ``concrete_functions``) are sorted by ``SerializeToString(deterministic=True)`` and by
  ``text_format`` (which always sorts map keys).
* **Lookup tables**: a table's ``shared_name`` is a process counter (``"76"``), a uuid, or the
  absolute path of its vocabulary file, and a ``KeyValueTensorInitializer`` names its ops
  ``key_value_init<counter>``. Table-creating ops get ``table_<i>_<content>`` instead (numbered
  in the graph's order; the content part is derived from the whole MetaGraphDef, so two different
  exports loaded into one process or TF1 session never share a table), and initializer names are
  numbered in creation order (``key_value_init_0``...).
* **fingerprint.pb** gets a random ``uuid`` on every save; it is replaced by one derived from
  the export's content, so it still tells different exports apart.

The checkpoint needs nothing: it is written from exportkit's own ``tf.Module`` root (no Keras
object names, no counters), its tensors are stored sorted by key, and its object graph has no
map fields. ``content_digest`` hashes every file but the manifest, so two identical exports
share it.

The renamed names keep TensorFlow's ``<prefix>_<number>`` form, which the TF2 loader parses
(``function_deserialization._clean_function_name``), and stay unique within the export; being
content-derived, two different exports loaded into one TF1 graph do not collide either.
"""

import hashlib
import re
from pathlib import Path
from typing import Dict, Iterable, List, Set, Tuple

from exportkit.artifact.digests import file_sha256

# ``__inference_f_117``; a gradient function carries two counters: ``__inference___backward_f_117_130``
_UID = re.compile(r"^(?P<base>.+?)(?P<uids>(?:_\d+)+)$")
_GRADIENT_TYPE = re.compile(r"^(?P<base>[A-Za-z_]+)-(?P<uid>\d+)$")
_DIGITS = re.compile(r"^\d+$")
_INITIALIZER_NAME = re.compile(r"key_value_init(\d+)(?![0-9])")
# Ops creating a lookup table (their ``shared_name`` varies from one process to the next).
_TABLE_OPS = frozenset(
    {
        "HashTable",
        "HashTableV2",
        "MutableHashTable",
        "MutableHashTableV2",
        "MutableHashTableOfTensors",
        "MutableHashTableOfTensorsV2",
        "MutableDenseHashTable",
        "MutableDenseHashTableV2",
    }
)


def saved_model(proto) -> None:
    """Canonicalize a ``SavedModel`` proto in place: every MetaGraphDef, whatever its tag.

    >>> from tensorflow.core.protobuf import saved_model_pb2
    >>> sm = saved_model_pb2.SavedModel()
    >>> sm.ParseFromString(open("export/saved_model.pb", "rb").read())  # doctest: +SKIP
    >>> saved_model(sm)  # doctest: +SKIP
    """
    for meta_graph in proto.meta_graphs:
        meta_graph_def(meta_graph)


def meta_graph_def(meta_graph) -> None:
    library = meta_graph.graph_def.library
    for function in library.function:
        _number_captured_arguments(function)
    _number_initializer_names(meta_graph)
    tables = _number_table_names(meta_graph)
    # Gradient op types first: they are part of the content the function names are hashed from.
    _rename_strings(meta_graph, _gradient_type_renames(meta_graph))
    renames = _function_renames(library)
    _rename_strings(meta_graph, renames)
    _rename_concrete_function_keys(meta_graph, renames)
    _sort(library.function, key=lambda f: f.signature.name)
    _sort(library.gradient, key=lambda g: (g.function_name, g.gradient_func))
    _sort(library.registered_gradients, key=lambda g: (g.registered_op_type, g.gradient_func))
    _sort(meta_graph.meta_info_def.stripped_op_list.op, key=lambda op: op.name)
    if tables:
        # Last, once every other name is canonical: the content the table names are derived from.
        content = hashlib.sha256(meta_graph.SerializeToString(deterministic=True)).hexdigest()[:16]
        _set_table_names(meta_graph, {name: f"{name}_{content}" for name in tables})


def _number_captured_arguments(function) -> None:
    """A captured argument's ``_user_specified_name`` is a tensor id: use its position instead."""
    for index, attrs in function.arg_attr.items():
        name = attrs.attr.get("_user_specified_name")
        if name is not None and _DIGITS.match(name.s.decode("utf-8", "replace")):
            name.s = str(index).encode()


def _table_nodes(meta_graph, in_graph: bool) -> Iterable:
    """Nodes creating a lookup table: the graph's own (in the graph's order), or the functions'."""
    if in_graph:
        nodes = meta_graph.graph_def.node
    else:
        nodes = (node for function in meta_graph.graph_def.library.function for node in function.node_def)
    for node in nodes:
        if node.op in _TABLE_OPS and "shared_name" in node.attr:
            yield node


def _number_table_names(meta_graph) -> List[str]:
    """Each table's ``shared_name`` -> ``table_<i>``: in the order the graph creates them, then
    (tables only a function creates) in their counters' order. Returns the new names."""
    ordered = []
    for node in _table_nodes(meta_graph, in_graph=True):
        name = node.attr["shared_name"].s.decode("utf-8", "replace")
        if name not in ordered:
            ordered.append(name)
    in_functions = {
        node.attr["shared_name"].s.decode("utf-8", "replace") for node in _table_nodes(meta_graph, in_graph=False)
    }
    ordered += sorted(in_functions - set(ordered), key=_counter_order)
    renames = {old: f"table_{i}" for i, old in enumerate(ordered)}
    _set_table_names(meta_graph, renames)
    return list(renames.values())


def _set_table_names(meta_graph, renames: Dict[str, str]) -> None:
    for in_graph in (True, False):
        for node in _table_nodes(meta_graph, in_graph):
            old = node.attr["shared_name"].s.decode("utf-8", "replace")
            if old in renames:
                node.attr["shared_name"].s = renames[old].encode()


def _counter_order(name: str):
    return (0, int(name), "") if _DIGITS.match(name) else (1, 0, name)


def _number_initializer_names(meta_graph) -> None:
    """``key_value_init75`` (a process counter in op, argument and output names) ->
    ``key_value_init_0``..., numbered in the counters' order (the initializers' creation order)."""
    found: Set[int] = set()

    def record(m: re.Match) -> str:
        found.add(int(m.group(1)))
        return m.group(0)

    _substitute(meta_graph, _INITIALIZER_NAME, record)
    if not found:
        return
    numbers = {n: i for i, n in enumerate(sorted(found))}
    _substitute(meta_graph, _INITIALIZER_NAME, lambda m: f"key_value_init_{numbers[int(m.group(1))]}")


def _substitute(message, pattern, replace) -> None:
    """``pattern.sub(replace, ...)`` on every string field, string map key and string attr value
    (``AttrValue.s``), recursively; never inside a tensor (a vocabulary is data, not a name)."""
    from google.protobuf.descriptor import FieldDescriptor

    def sub_bytes(raw: bytes) -> bytes:
        try:
            return pattern.sub(replace, raw.decode("utf-8")).encode("utf-8")
        except UnicodeDecodeError:
            return raw

    attr_value = message.DESCRIPTOR.full_name in ("tensorflow.AttrValue", "tensorflow.AttrValue.ListValue")
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.full_name == "tensorflow.TensorProto":
                continue
            if _is_map(field):
                key_field = field.message_type.fields_by_name["key"]
                entry_value = field.message_type.fields_by_name["value"]
                for key in list(value):
                    if entry_value.type == FieldDescriptor.TYPE_MESSAGE:
                        _substitute(value[key], pattern, replace)
                    elif entry_value.type == FieldDescriptor.TYPE_STRING:
                        value[key] = pattern.sub(replace, value[key])
                    new_key = pattern.sub(replace, key) if key_field.type == FieldDescriptor.TYPE_STRING else key
                    if new_key != key:
                        if entry_value.type == FieldDescriptor.TYPE_MESSAGE:
                            value[new_key].CopyFrom(value[key])
                        else:
                            value[new_key] = value[key]
                        del value[key]
            elif _repeated(field):
                for item in value:
                    _substitute(item, pattern, replace)
            else:
                _substitute(value, pattern, replace)
        elif field.type == FieldDescriptor.TYPE_STRING or (attr_value and field.type == FieldDescriptor.TYPE_BYTES):
            sub = (lambda v: pattern.sub(replace, v)) if field.type == FieldDescriptor.TYPE_STRING else sub_bytes
            if _repeated(field):
                for i, item in enumerate(value):
                    value[i] = sub(item)
            else:
                setattr(message, field.name, sub(value))


def _function_renames(library) -> Dict[str, str]:
    """Old function name -> ``base_<number>``, the number taken from the function's content.

    The content is hashed with every function name in it reduced to its base, so it does not
    depend on any counter. Two functions with the same base and the same content (rare: two
    traces of one function) are told apart by their original order.
    """
    names = [f.signature.name for f in library.function]
    base = {n: match.group("base") if (match := _UID.match(n)) else n for n in names}
    normalized = {}
    for function in library.function:
        copy = type(function)()
        copy.CopyFrom(function)
        _rename_strings(copy, base)
        normalized[function.signature.name] = copy.SerializeToString(deterministic=True)
    renames, taken = {}, {n for n in names if not _UID.match(n)}
    for name in sorted((n for n in names if _UID.match(n)), key=_original_order):
        number = int.from_bytes(hashlib.sha256(normalized[name]).digest()[:6], "big")
        new = f"{base[name]}_{number}"
        while new in taken:
            number += 1
            new = f"{base[name]}_{number}"
        taken.add(new)
        renames[name] = new
    return renames


def _gradient_type_renames(meta_graph) -> Dict[str, str]:
    """``PartitionedCall-123`` style gradient op types -> ``PartitionedCall-<i>``, in order."""
    found: Set[str] = set()
    for node in _all_nodes(meta_graph):
        value = node.attr.get("_gradient_op_type")
        if value is not None and _GRADIENT_TYPE.match(value.s.decode("utf-8", "replace")):
            found.add(value.s.decode())
    for gradient in meta_graph.graph_def.library.registered_gradients:
        if _GRADIENT_TYPE.match(gradient.registered_op_type):
            found.add(gradient.registered_op_type)
    ordered = sorted(found, key=_gradient_type_parts)
    return {old: f"{_gradient_type_parts(old)[0]}-{i}" for i, old in enumerate(ordered)}


def _gradient_type_parts(op_type: str) -> Tuple[str, int]:
    """``PartitionedCall-123`` -> ``("PartitionedCall", 123)`` (for a type ``_GRADIENT_TYPE`` matched)."""
    match = _GRADIENT_TYPE.match(op_type)
    assert match is not None  # only types it matched are collected
    return match.group("base"), int(match.group("uid"))


def _all_nodes(meta_graph) -> Iterable:
    yield from meta_graph.graph_def.node
    for function in meta_graph.graph_def.library.function:
        yield from function.node_def


def _original_order(name: str):
    match = _UID.match(name)
    assert match is not None  # only names it matched are ordered
    return match.group("base"), [int(uid) for uid in match.group("uids").split("_")[1:]]


def _rename_strings(message, renames: Dict[str, str]) -> None:
    """Replace every string (or bytes) field value equal to a key of ``renames``, recursively.

    Function names are long and carry a counter, so an exact match is a reference to the
    function, never an unrelated value. Map keys are handled by the caller.
    """
    if not renames:
        return
    encoded = {k.encode(): v.encode() for k, v in renames.items()}
    _walk(message, renames, encoded)


def _walk(message, renames, encoded) -> None:
    from google.protobuf.descriptor import FieldDescriptor

    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if _is_map(field):
                entry_value = field.message_type.fields_by_name["value"]
                for key in list(value):
                    item = value[key]
                    if entry_value.type == FieldDescriptor.TYPE_MESSAGE:
                        _walk(item, renames, encoded)
                    elif isinstance(item, str) and item in renames:
                        value[key] = renames[item]
            elif _repeated(field):
                for item in value:
                    _walk(item, renames, encoded)
            else:
                _walk(value, renames, encoded)
        elif field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            table = renames if field.type == FieldDescriptor.TYPE_STRING else encoded
            if _repeated(field):
                for i, item in enumerate(value):
                    if item in table:
                        value[i] = table[item]
            elif value in table:
                setattr(message, field.name, table[value])


def _repeated(field) -> bool:
    # protobuf >= 5 has ``is_repeated``; ``label`` is gone from the upb backend in 7
    if hasattr(field, "is_repeated"):
        return field.is_repeated
    return field.label == field.LABEL_REPEATED


def _is_map(field) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _rename_concrete_function_keys(meta_graph, renames: Dict[str, str]) -> None:
    functions = meta_graph.object_graph_def.concrete_functions
    for old in [k for k in functions if k in renames]:
        functions[renames[old]].CopyFrom(functions[old])
        del functions[old]


def _sort(repeated, key) -> None:
    items = [_copy(item) for item in repeated]
    items.sort(key=key)
    del repeated[:]
    repeated.extend(items)


def _copy(message):
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def fingerprint_file(directory: Path, hashes=None) -> None:
    """Replace ``fingerprint.pb``'s random ``uuid`` by one derived from the export's content.

    The fingerprint's own hashes are not enough: TensorFlow leaves them empty for a
    ``saved_model.pbtxt``. So the uuid hashes them together with every file of the export
    written so far (``assets.extra/``, where the manifest goes, aside).
    """
    from tensorflow.core.protobuf import fingerprint_pb2

    path = directory / "fingerprint.pb"
    proto = fingerprint_pb2.FingerprintDef()
    proto.ParseFromString(path.read_bytes())
    proto.ClearField("uuid")
    digest = hashlib.sha256(proto.SerializeToString(deterministic=True))
    for file in sorted(directory.rglob("*")):
        relative = file.relative_to(directory)
        if file.is_file() and file != path and relative.parts[0] != "assets.extra":
            digest.update(f"{relative.as_posix()}\t{file_sha256(file, hashes)}\n".encode())
    proto.uuid = str(int.from_bytes(digest.digest()[:16], "big"))  # TF writes a 128-bit number in decimal
    path.write_bytes(proto.SerializeToString(deterministic=True))


def content_digest(files: Dict[str, str]) -> str:
    """One sha256 over ``{relative path: sha256}`` of an export's files (the manifest excluded).

    >>> content_digest({"saved_model.pb": "ab" * 32})[:12]
    'c7cdcfa0b26f'
    """
    lines: List[str] = [f"{path}\t{files[path]}\n" for path in sorted(files)]
    return hashlib.sha256("".join(lines).encode()).hexdigest()
