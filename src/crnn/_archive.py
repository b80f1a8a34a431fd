"""Reading an .npz archive that may be hostile (crnn.io's files): every
member's name and sizes, and every array's .npy header, are checked before
anything is decompressed or allocated.

The rules:

- member names are unique, each ``<key>.npy`` with a plain relative key
  (letters, digits, ``_``, ``-``, ``/`` between parts: no ``..``, no
  absolute path, no backslash);
- members are stored or deflated; a member's stored bytes lie inside the
  file, and a deflated member may not claim to expand more than
  ``EXPANSION`` times (crnn writes stored members: what is allocated is
  then at most the file's size);
- an array's .npy header (a few bytes, read through ``numpy.lib.format``)
  must describe exactly the member's uncompressed size, header plus
  count × itemsize, and no Python objects (which would need unpickling);
- only then is the array read, into memory of that size, and its CRC
  checked.

Problems are ``Corrupt`` exceptions, which crnn.io turns into a ValueError
naming the file.  Imports nothing of crnn.
"""
import re
import struct
import zipfile
import zlib

import numpy as np
from numpy.lib import format as npy

__all__ = ["Archive", "Corrupt", "EXPANSION", "READ_ERRORS"]

EXPANSION = 64
_KEY = re.compile(r"[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*")
_MAX_NPY_HEADER = 10000      # numpy's own default limit


class Corrupt(Exception):
    """A problem with a file's contents."""


# What zipfile, zlib and numpy raise on files that are not what they claim
# (RuntimeError: an encrypted member; NotImplementedError: an unknown
# compression method).
READ_ERRORS = (ValueError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError,
               KeyError, UnicodeDecodeError, OSError, zlib.error, struct.error,
               RuntimeError, NotImplementedError)

# Of those, the ones that mean the member's bytes are damaged.
_CORRUPT_DATA = (zipfile.BadZipFile, zlib.error, EOFError, OSError)


class Archive:
    """The members of an open .npz file, checked (see the module's rules).

    ``files``: the keys (member names without ``.npy``).  ``describe(key)``
    reads an array's header only; ``read(key)`` the array."""

    def __init__(self, file):
        file.seek(0, 2)
        self._file_size = file.tell()
        file.seek(0)
        self._zip = zipfile.ZipFile(file)
        self._members = {}
        for info in self._zip.infolist():
            self._add(info)
        self.files = list(self._members)

    def _add(self, info):
        name = info.filename
        key = name[:-4]
        if not name.endswith(".npy") or not _KEY.fullmatch(key):
            raise Corrupt(f"it has a member named {name!r}; a crnn file holds only "
                          f"'<name>.npy' arrays under plain relative names")
        if key in self._members:
            raise Corrupt(f"it has the member {name!r} twice")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise Corrupt(f"its member {name!r} uses compression method "
                          f"{info.compress_type}; only stored or deflated members are read")
        if info.header_offset + info.compress_size > self._file_size:
            raise Corrupt(f"its member {name!r} claims {info.compress_size} bytes "
                          f"beyond the file's end ({self._file_size} bytes)")
        stored = info.compress_type == zipfile.ZIP_STORED
        limit = info.compress_size * (1 if stored else EXPANSION)
        if info.file_size > limit:
            raise Corrupt(
                f"its member {name!r} claims {info.file_size} bytes from "
                f"{info.compress_size} {'stored' if stored else 'compressed'} bytes "
                f"(at most {limit})")
        self._members[key] = info

    def close(self):
        self._zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _open_member(self, key):
        if key not in self._members:
            raise Corrupt(f"its header lists an array {key!r} that is missing")
        try:
            return self._zip.open(self._members[key])
        except READ_ERRORS as error:     # a damaged local header
            raise Corrupt(f"its array {key!r} is truncated or corrupt ({error})") from None

    def _header(self, key, member):
        """(shape, dtype, fortran_order) from the member's .npy header,
        checked against the member's size."""
        try:
            version = npy.read_magic(member)
            if version == (1, 0):
                shape, fortran, dtype = npy.read_array_header_1_0(
                    member, max_header_size=_MAX_NPY_HEADER)
            elif version == (2, 0):
                shape, fortran, dtype = npy.read_array_header_2_0(
                    member, max_header_size=_MAX_NPY_HEADER)
            else:
                raise Corrupt(f"its array {key!r} has .npy format version {version}")
        except _CORRUPT_DATA as error:
            raise Corrupt(f"its array {key!r} is truncated or corrupt ({error})") from None
        except READ_ERRORS as error:
            raise Corrupt(f"its array {key!r} has an invalid .npy header ({error})") from None
        if dtype.hasobject:
            raise Corrupt(f"its array {key!r} holds pickled Python objects, which "
                          f"crnn never loads")
        if any(extent < 0 for extent in shape):
            raise Corrupt(f"its array {key!r} has a negative extent in its shape {shape}")
        expected = member.tell() + int(np.prod(shape, dtype=object)) * dtype.itemsize
        if expected != self._members[key].file_size:
            raise Corrupt(
                f"its array {key!r} is {dtype} of shape {shape} ({expected} bytes "
                f"with its header), but its member holds "
                f"{self._members[key].file_size} bytes")
        return shape, dtype, fortran

    def describe(self, key):
        """(shape, dtype) of the array `key`, from its header alone."""
        with self._open_member(key) as member:
            shape, dtype, _ = self._header(key, member)
        return shape, dtype

    def read(self, key):
        """The array `key`, after its header is checked."""
        with self._open_member(key) as member:
            self._header(key, member)
        try:
            with self._open_member(key) as member:
                array = npy.read_array(member, allow_pickle=False,
                                       max_header_size=_MAX_NPY_HEADER)
                if member.read(1):
                    raise Corrupt(f"its array {key!r} has data past its end")
        except READ_ERRORS as error:
            if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)):
                raise
            raise Corrupt(f"its array {key!r} is truncated or corrupt ({error})") from None
        return array
