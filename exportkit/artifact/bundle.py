"""The checkpoint's files, ``<prefix>.data-00000-of-00001`` and ``<prefix>.index`` (TensorFlow's
tensor bundle), written by exportkit and hashed as they are written.

TensorFlow's own save (SaveV2, then MergeV2Checkpoints) writes these same bytes
(``tests/test_bundle.py`` compares the two byte for byte), but as a whole: the manifest and the
fingerprint then had to read the data file back to hash it, in series with the write. Here each
block of a tensor is written, checksummed (crc32c, which the index records) and hashed (sha256,
which the manifest records) straight from the variable's own buffer, and the file's digest is
known the moment it is closed.

What the checkpoint holds, and under which keys, is still TensorFlow's: ``entries`` asks
``tf.train.Checkpoint``'s saver for its tensors and object graph. A checkpoint this writer does not
cover (sliced or registered savers, variant or resource tensors, a big-endian host) gets None
there, and TensorFlow's own save writes it.

The format: the data file is the tensors' bytes one after another, in the saver's order (a
string tensor as its varint64 lengths, a masked crc32c of the lengths, then the bytes). The index
is a LevelDB-format table, keys sorted, no compression: ``""`` -> BundleHeaderProto, then each key
-> BundleEntryProto (dtype, shape, offset, size, masked crc32c of what was written).
"""

import hashlib
import queue
import struct
import sys
import threading
from pathlib import Path
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import crc32c
import numpy as np

from exportkit.background import Stopped

DATA_SUFFIX = ".data-00000-of-00001"
INDEX_SUFFIX = ".index"
CHUNK = 8 << 20  # a big tensor is written, checksummed and hashed a block at a time
SMALL = 64 << 10  # smaller tensors are gathered and written together
BLOCK_SIZE = 262144  # TensorFlow's table options: block size, restart interval, magic number
RESTART_INTERVAL = 16
TABLE_MAGIC = 0xDB4775248B80FB57


class Entry(NamedTuple):
    key: str
    dtype: int  # a tensorflow DataType enum value
    shape: Tuple[int, ...]
    data: Optional[np.ndarray]  # the tensor's bytes (uint8, C order), or None for strings
    strings: Optional[List[bytes]]


NUMERIC = {
    np.dtype(name)
    for name in (
        "float16",
        "float32",
        "float64",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "bool",
        "complex64",
        "complex128",
    )
}


def writes_dtype(dtype: np.dtype) -> bool:
    """Whether an array of this dtype is written from its own buffer (plain numbers, bool, bfloat16)."""
    import ml_dtypes

    return dtype in NUMERIC or dtype == np.dtype(ml_dtypes.bfloat16)


def entries(checkpoint, sources: Sequence[Tuple[Any, np.ndarray]] = ()) -> Optional[List[Entry]]:
    """What ``checkpoint.write`` would save, in its order; None for a checkpoint only
    TensorFlow's save writes. The tensors are the variables' own buffers (no copy on the CPU);
    a variable in ``sources`` ([(variable, array)], variables made without their values) is
    written from its array."""
    import tensorflow as tf
    from tensorflow.python.training.saving.saveable_object import SaveSpec

    if sys.byteorder != "little":
        return None
    try:
        serialized, _, registered, _ = checkpoint._saver._gather_serialized_tensors(None)
    except (AttributeError, TypeError, ValueError):  # another TensorFlow's internals: its own save
        return None
    if registered:
        return None
    arrays = {id(variable): array for variable, array in sources}
    out, seen = [], set()
    for owner, tensors in serialized.items():
        for key, value in tensors.items():
            if id(owner) in arrays and key.endswith("/.ATTRIBUTES/VARIABLE_VALUE"):
                out.append(_array_entry(key, arrays[id(owner)]))
                seen.add(key)
                continue
            if isinstance(value, dict):  # {slice_spec: tensor}: only the whole tensor is covered
                if list(value) != [""]:
                    return None
                value = value[""]
            if isinstance(value, SaveSpec):  # a variable's deferred read (tensor_callable.Callable)
                value = value.tensor
            if value is None:
                continue
            if not isinstance(value, tf.Tensor) or hasattr(value, "_wrapped_name") or key in seen:
                return None
            entry = _entry(key, value)
            if entry is None:
                return None
            out.append(entry)
            seen.add(key)
    return out


def _entry(key: str, tensor) -> Optional[Entry]:
    import tensorflow as tf

    dtype = tensor.dtype
    if dtype == tf.string:  # bytes for a scalar, else an object array of bytes (never NumPy's
        value = tensor.numpy()  # fixed-width "S", which drops trailing NULs)
        strings = [value] if isinstance(value, bytes) else [bytes(s) for s in value.ravel()]
        return Entry(key, dtype.as_datatype_enum, tuple(int(d) for d in tensor.shape), None, strings)
    if (
        dtype in (tf.resource, tf.variant)
        or not dtype.is_numpy_compatible
        or not writes_dtype(np.dtype(dtype.as_numpy_dtype))
    ):
        return None  # (float8, int4 and the like: TensorFlow's own save)
    # on the CPU the tensor's own buffer (``_numpy`` shares it); elsewhere a host copy
    return _array_entry(key, tensor._numpy() if "CPU" in tensor.device.upper() else tensor.numpy())


def _array_entry(key: str, array: np.ndarray) -> Entry:
    """A numeric tensor's entry, its bytes the array's own buffer (a copy only if not C-contiguous)."""
    import tensorflow as tf

    shape = array.shape  # (np.ascontiguousarray makes a scalar 1-D)
    data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return Entry(key, tf.as_dtype(array.dtype).as_datatype_enum, shape, data, None)


def write(prefix: Path, items: Sequence[Entry], stop: Optional[threading.Event] = None) -> dict:
    """Write the bundle at ``prefix`` (its directory exists); return {path: sha256 hex} of the
    two files written. ``stop`` set ends the writing early (``exportkit.background.Stopped``)."""
    from tensorflow.core.protobuf import tensor_bundle_pb2

    data_path, index_path = Path(f"{prefix}{DATA_SUFFIX}"), Path(f"{prefix}{INDEX_SUFFIX}")
    records = {}
    hasher = _Hasher()
    try:
        with open(data_path, "wb", buffering=0) as f:
            out = _Output(f, hasher, stop or threading.Event())
            for item in items:
                if item.key in records:
                    raise ValueError(f"checkpoint key {item.key!r} twice")
                start = out.size
                crc = _write_strings(out, item.strings) if item.strings is not None else out.write(item.data)
                entry = tensor_bundle_pb2.BundleEntryProto(
                    dtype=item.dtype, shard_id=0, offset=start, size=out.size - start, crc32c=_mask(crc)
                )
                entry.shape.SetInParent()  # a scalar's empty shape is written too
                for dim in item.shape:
                    entry.shape.dim.add(size=dim)
                records[item.key] = entry.SerializeToString()
            out.flush()
    finally:
        data_digest = hasher.finish()
    header = tensor_bundle_pb2.BundleHeaderProto(num_shards=1, endianness=tensor_bundle_pb2.BundleHeaderProto.LITTLE)
    header.version.producer = 1
    table = _table(
        [(b"", header.SerializeToString())] + [(key.encode(), records[key]) for key in sorted(records, key=str.encode)]
    )
    index_path.write_bytes(table)
    return {data_path: data_digest, index_path: hashlib.sha256(table).hexdigest()}


class _Hasher:
    """sha256 of the data file on a thread of its own, beside the writing: blocks are handed over
    in order, and are not changed after (a variable's buffer, or a gathered block)."""

    def __init__(self) -> None:
        self.digest, self.blocks = hashlib.sha256(), queue.SimpleQueue()
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name="exportkit-sha256", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (block := self.blocks.get()) is not None:
            if self.error is None:
                try:
                    self.digest.update(block)
                except BaseException as e:  # noqa: BLE001 - told by finish(): no digest of part of a file
                    self.error = e

    def update(self, block) -> None:
        self.blocks.put(block)

    def finish(self) -> str:
        self.blocks.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.digest.hexdigest()


class _Output:
    """The data file: big tensors written from their own buffers, small ones gathered first."""

    def __init__(self, f, hasher: _Hasher, stop: threading.Event) -> None:
        self.f, self.hasher, self.stop, self.size = f, hasher, stop, 0
        self.pending = bytearray()

    def write(self, data, crc: int = 0) -> int:
        """Append ``data`` (bytes-like); return crc32c extended over it from ``crc``."""
        view = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else memoryview(data)
        if len(view) < SMALL:
            self.pending += view
            self.size += len(view)
            crc = crc32c.crc32c(view, crc)
            if len(self.pending) >= CHUNK:
                self.flush()
            return crc
        self.flush()
        for start in range(0, len(view), CHUNK):
            self.check_stop()
            block = view[start : start + CHUNK]
            self.hasher.update(block)
            _write_all(self.f, block)
            crc = crc32c.crc32c(block, crc)
        self.size += len(view)
        return crc

    def check_stop(self) -> None:
        if self.stop.is_set():
            raise Stopped("the checkpoint's writing was stopped")

    def flush(self) -> None:
        self.check_stop()
        if self.pending:
            _write_all(self.f, self.pending)
            self.hasher.update(self.pending)
            self.pending = bytearray()


def _write_all(f, view) -> None:
    view = memoryview(view)
    while len(view):
        written = f.write(view)
        view = view[written:]


def _write_strings(out: _Output, strings: List[bytes]) -> int:
    """TensorFlow's string tensor layout; its crc32c covers the lengths as uint32 (uint64 past 4 GiB),
    not as the varints written."""
    lengths, crc = bytearray(), 0
    for s in strings:
        lengths += _varint(len(s))
        crc = crc32c.crc32c(struct.pack("<I" if len(s) <= 0xFFFFFFFF else "<Q", len(s)), crc)
    out.write(lengths)
    checksum = struct.pack("<I", _mask(crc))
    out.write(checksum)
    crc = crc32c.crc32c(checksum, crc)
    for s in strings:
        crc = out.write(s, crc)
    return crc


def _mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class _Block:
    """A table block being built (TableBuilder's BlockBuilder): keys prefix-compressed against
    the previous one, a restart every ``restart_interval`` entries, then the restart offsets."""

    def __init__(self, restart_interval: int) -> None:
        self.interval = restart_interval
        self.buffer, self.restarts, self.count, self.last = bytearray(), [0], 0, b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.count == self.interval:
            self.restarts.append(len(self.buffer))
            self.count = 0
        else:
            limit = min(len(self.last), len(key))
            while shared < limit and self.last[shared] == key[shared]:
                shared += 1
        self.buffer += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        self.last, self.count = key, self.count + 1

    def empty(self) -> bool:
        return not self.buffer

    def size_estimate(self) -> int:
        return len(self.buffer) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        return (
            bytes(self.buffer)
            + b"".join(struct.pack("<I", r) for r in self.restarts)
            + struct.pack("<I", len(self.restarts))
        )


def _table(entries: Sequence[Tuple[bytes, bytes]]) -> bytes:
    """LevelDB's table layout as TensorFlow's TableBuilder writes it: data blocks of about
    BLOCK_SIZE bytes, an empty metaindex block, an index block, the footer."""
    out = bytearray()

    def write_block(block: _Block) -> bytes:  # -> the block's handle
        contents = block.finish()
        handle = _varint(len(out)) + _varint(len(contents))
        crc = crc32c.crc32c(b"\x00", crc32c.crc32c(contents))  # the trailer's type byte too
        out.extend(contents + b"\x00" + struct.pack("<I", _mask(crc)))
        return handle

    data, index = _Block(RESTART_INTERVAL), _Block(1)
    last_key, pending = b"", None  # pending: the handle of the block just written
    for key, value in entries:
        if not data.empty() and len(key) + len(value) >= 2 * BLOCK_SIZE:  # an overly large entry
            pending, data = write_block(data), _Block(RESTART_INTERVAL)
        if pending is not None:
            index.add(_separator(last_key, key), pending)
            pending = None
        last_key = key
        data.add(key, value)
        if data.size_estimate() >= BLOCK_SIZE:
            pending, data = write_block(data), _Block(RESTART_INTERVAL)
    if not data.empty():
        pending = write_block(data)
    metaindex = write_block(_Block(RESTART_INTERVAL))
    if pending is not None:
        index.add(_successor(last_key), pending)
    index_handle = write_block(index)
    out += (metaindex + index_handle).ljust(40, b"\x00")
    out += struct.pack("<II", TABLE_MAGIC & 0xFFFFFFFF, TABLE_MAGIC >> 32)
    return bytes(out)


def _separator(start: bytes, limit: bytes) -> bytes:
    """A short key >= ``start`` and < ``limit`` (TableBuilder's FindShortestSeparator)."""
    n = min(len(start), len(limit))
    i = 0
    while i < n and start[i] == limit[i]:
        i += 1
    if i < n and start[i] < 0xFF and start[i] + 1 < limit[i]:
        return start[:i] + bytes([start[i] + 1])
    return start


def _successor(key: bytes) -> bytes:
    """A short key >= ``key`` (TableBuilder's FindShortSuccessor)."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key
