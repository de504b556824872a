"""Host arrays that TensorFlow can adopt without a copy.

For multi-GiB params the copies made on the way into ``tf.Variable``s are the peak of the whole
export. TensorFlow adopts a buffer through DLPack without copying when it is C-contiguous and
aligned as its kernels want (64 bytes); NumPy aligns only to 16, so exportkit reads ``.npz``
params straight into aligned buffers, and copies a misaligned array once into one.
"""

import zipfile
from typing import Optional, cast

import numpy as np

ALIGNMENT = 64
CHUNK = 16 << 20


def aligned_empty(shape, dtype) -> np.ndarray:
    """``np.empty(shape, dtype)`` whose data starts on a 64-byte boundary.

    >>> aligned_empty((3, 4), "float32").ctypes.data % 64
    0
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    offset = (-raw.ctypes.data) % ALIGNMENT
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def aligned_copy(array: np.ndarray) -> np.ndarray:
    out = aligned_empty(array.shape, array.dtype)
    out[...] = array
    return out


def is_aligned(array: np.ndarray) -> bool:
    return bool(array.flags.c_contiguous) and array.ctypes.data % ALIGNMENT == 0


def read_npz_member(archive: zipfile.ZipFile, key: str) -> Optional[np.ndarray]:
    """The array ``key`` of an open ``.npz``, read into an aligned buffer; None when the member
    is of a kind only ``np.load`` reads (Fortran order, object dtype, a newer header version)."""
    from numpy.lib import format as npy

    with cast(zipfile.ZipExtFile, archive.open(f"{key}.npy")) as f:  # what "r" opens (typeshed says IO[bytes])
        version = npy.read_magic(f)
        if version == (1, 0):
            shape, fortran_order, dtype = npy.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran_order, dtype = npy.read_array_header_2_0(f)
        else:
            return None
        if fortran_order or dtype.hasobject:
            return None
        out = aligned_empty(shape, dtype)
        view = out.reshape(-1).view(np.uint8).data  # a memoryview of its bytes
        filled = 0
        while filled < out.nbytes:
            # in chunks: a zip member's readinto reads into a temporary bytes of the size asked
            n = f.readinto(view[filled : filled + CHUNK])
            if not n:
                raise ValueError(f"{key}: the file ends {out.nbytes - filled} bytes early")
            filled += n
        return out
