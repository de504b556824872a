"""Linux ``renameat2(2)``: swap two directories in one step (RENAME_EXCHANGE), or rename without
replacing (RENAME_NOREPLACE), through ctypes; ``exchange_supported`` asks a filesystem."""

import ctypes
import errno
import functools
import os
import sys
import tempfile
from typing import List, Type

AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276}  # for a libc without the wrapper (glibc < 2.28)
UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)  # what a kernel or filesystem says to a flag it lacks


def _load_renameat2(use_wrapper: bool = True):
    """libc's renameat2, or the raw syscall where libc has none (``use_wrapper=False`` forces that)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    args: List[Type[ctypes._SimpleCData]] = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    if use_wrapper and hasattr(libc, "renameat2"):
        call = libc.renameat2
        call.argtypes, call.restype = args, ctypes.c_int
        return call
    number = _SYS_RENAMEAT2.get(os.uname().machine)
    if number is None:
        return None
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    return lambda *values: syscall(ctypes.c_long(number), *(t(v) for t, v in zip(args, values)))


@functools.cache
def _renameat2():
    return _load_renameat2()


def atomic_exchange() -> bool:
    """Whether this platform has the renameat2 call at all; a filesystem may still refuse
    RENAME_EXCHANGE (``exchange_supported`` asks it), and publishing then falls back."""
    return _renameat2() is not None


def renameat2(src, dst, flags: int) -> None:
    """Linux ``renameat2(2)``: rename ``src`` to ``dst`` with RENAME_NOREPLACE or RENAME_EXCHANGE.

    Raises OSError (ENOSYS where the call does not exist, EINVAL where the filesystem lacks the flag).

    >>> renameat2("/tmp/a", "/tmp/b", RENAME_EXCHANGE)  # doctest: +SKIP
    """
    call = _renameat2()
    if call is None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS), str(src))
    if call(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(src), None, str(dst))


def exchange_supported(directory) -> bool:
    """Whether ``directory``'s filesystem swaps two directories atomically (RENAME_EXCHANGE).

    Creates and removes two empty probe directories in ``directory``.

    >>> exchange_supported(Path("/tmp"))  # doctest: +SKIP
    True
    """
    first = tempfile.mkdtemp(prefix=".exportkit-probe-", dir=directory)
    try:
        second = tempfile.mkdtemp(prefix=".exportkit-probe-", dir=directory)
        try:
            renameat2(first, second, RENAME_EXCHANGE)
            return True
        except OSError as error:
            if error.errno in UNSUPPORTED:
                return False
            raise
        finally:
            os.rmdir(second)
    finally:
        os.rmdir(first)


def rename_noreplace(src, dst) -> None:
    """Rename ``src`` to ``dst`` unless ``dst`` exists (plain rename where the flag is lacking)."""
    try:
        renameat2(src, dst, RENAME_NOREPLACE)
    except OSError as error:
        if error.errno not in UNSUPPORTED:
            raise
        os.rename(src, dst)
