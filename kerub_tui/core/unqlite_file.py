"""The store's writable UnQLite handle, called through ctypes so that no call holds the GIL.

The ``unqlite`` binding holds the GIL in every call: a commit that writes and syncs a few megabytes
stops every other thread (the event loop with it) for as long. Called through ctypes, the same
library, from the same installed module, releases it. The binding is still what reads a file (the
checking child in ``integrity``) and what tests use.

``CALLS`` is held around each call: the library has process-wide state (its allocator's mutex), so a
process must not fork while one runs in another thread (``integrity.read_records`` holds it to fork).
Errors are the binding's own exceptions (``unqlite.UnQLiteError``; KeyError for a missing key).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import unqlite

CALLS = threading.Lock()

_OK, _NOTFOUND = 0, -6
_CONFIG_ERR_LOG, _CONFIG_DISABLE_AUTO_COMMIT = 3, 5
_LIB_CONFIG_THREAD_LEVEL_MULTI = 5

_lib: Any = None


def _library() -> Any:
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(unqlite.__file__)
        lib.unqlite_open.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_uint]
        for name in ("unqlite_close", "unqlite_begin", "unqlite_commit", "unqlite_rollback"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        lib.unqlite_kv_store.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                         ctypes.c_int64]
        lib.unqlite_kv_delete.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        lib.unqlite_lib_config(_LIB_CONFIG_THREAD_LEVEL_MULTI)  # as the binding does; refused once in use
        _lib = lib
    return _lib


class UnqliteFile:
    """One UnQLite database file, opened with ``flags`` (``unqlite_open`` modes). Not thread-safe: the
    store calls it from one thread at a time (its write lock)."""

    def __init__(self, path: str, flags: int) -> None:
        self._lib = _library()
        self._kv_store = self._lib.unqlite_kv_store
        self._db = ctypes.c_void_p()
        with CALLS:
            rc = self._lib.unqlite_open(ctypes.byref(self._db), path.encode(), flags)
        if rc != _OK:
            self._db = ctypes.c_void_p()
            raise unqlite.UnQLiteError(f"cannot open {path}", rc)

    def _check(self, rc: int) -> None:
        if rc == _OK:
            return
        if rc == _NOTFOUND:
            raise KeyError("key not found")
        text = ctypes.c_char_p()
        size = ctypes.c_int()
        with CALLS:
            self._lib.unqlite_config(self._db, _CONFIG_ERR_LOG, ctypes.byref(text), ctypes.byref(size))
        message = (text.value or b"")[:max(0, size.value)].decode(errors="replace").strip()
        raise unqlite.UnQLiteError(message or f"UnQLite error {rc}", rc)

    def _call(self, name: str, *args: Any) -> None:
        if not self._db.value:
            raise unqlite.UnQLiteError("the database is closed", -1)
        with CALLS:
            rc = getattr(self._lib, name)(self._db, *args)
        self._check(rc)

    def disable_autocommit(self) -> None:
        self._call("unqlite_config", _CONFIG_DISABLE_AUTO_COMMIT)

    def begin(self) -> None:
        self._call("unqlite_begin")

    def commit(self) -> None:
        self._call("unqlite_commit")

    def rollback(self) -> None:
        self._call("unqlite_rollback")

    def store(self, key: str | bytes, value: str | bytes) -> None:
        raw_key = key.encode() if isinstance(key, str) else key
        data = value.encode() if isinstance(value, str) else value
        with CALLS:
            rc = self._kv_store(self._db, raw_key, len(raw_key), data, len(data))
        if rc != _OK:
            self._check(rc)

    def delete(self, key: str | bytes) -> None:
        raw_key = key.encode() if isinstance(key, str) else key
        self._call("unqlite_kv_delete", raw_key, len(raw_key))

    def close(self) -> None:
        if self._db.value:
            with CALLS:
                rc = self._lib.unqlite_close(self._db)
            self._db = ctypes.c_void_p()
            if rc != _OK:
                raise unqlite.UnQLiteError("closing the database failed", rc)
