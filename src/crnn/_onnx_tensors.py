"""The tensors of an ONNX file that someone else wrote, checked before they
are read.

``from_onnx`` loads a graph with ``load_external_data=False`` (onnx itself
opens no other file) and reads each constant through a ``TensorReader``,
which first checks every constant of the graph, then reads them:

- **external data** (``data_location=EXTERNAL``): the ``location`` is a
  relative name that resolves, symlinks followed (``os.path.realpath``),
  to a regular file inside the model file's own folder; ``offset`` and
  ``length`` are non-negative decimal integers whose range lies within
  that file's real size;
- **sizes**: every dim is non-negative and their product fits int64, and
  the bytes the dims imply (elements × bits per element) are the bytes the
  tensor's data holds, in the model file or in its external range.

So nothing outside the model's folder is ever opened, and nothing is
allocated beyond what the files really hold.  A refusal is a
``ValueError`` naming the file, the tensor, the location and why.  onnx is
imported by the calls only.
"""
import os
import stat

__all__ = ["TensorReader"]

_INT64_MAX = 2 ** 63 - 1
# ONNX's packed element types: bits per element (the rest take their numpy
# itemsize); looked up by name, as older onnx releases lack some
_PACKED_BITS = {"FLOAT6E2M3": 6, "FLOAT6E3M2": 6, "UINT4": 4, "INT4": 4,
                "FLOAT4E2M1": 4, "UINT2": 2, "INT2": 2}
# bits of one entry of each typed (non-raw) data field
_FIELD_BITS = {"float_data": 32, "int32_data": 32, "int64_data": 64,
               "double_data": 64, "uint64_data": 64}


class TensorReader:
    """Reads the constants of the ONNX file at `path` (loaded without its
    external data), each checked first: see the module's docstring.

    Parameters
    ----------
    path : str or os.PathLike
        The ONNX model file; external data may come only from files inside
        its folder.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.folder = os.path.realpath(os.path.dirname(os.path.abspath(self.path)))

    def arrays(self, named_tensors):
        """{name: numpy array} of the (name, TensorProto) pairs: all are
        checked before any is read."""
        sources = [(name, tensor, self._check(name, tensor))
                   for name, tensor in named_tensors]
        return {name: self._read(name, tensor, source)
                for name, tensor, source in sources}

    def _refuse(self, name, why):
        raise ValueError(f"the ONNX file {self.path!r}: tensor {name!r} {why}")

    def _check(self, name, tensor):
        """None for data inside the model file, or (file, offset, bytes) of
        its external data; a ValueError for anything else."""
        from onnx import TensorProto
        elements = self._elements(name, tensor)
        dims = list(tensor.dims)
        if tensor.data_location != TensorProto.EXTERNAL:
            self._check_held(name, tensor, elements, dims)
            return None
        bits = self._element_bits(name, tensor)
        need = -(-elements * bits // 8)
        entries = {}
        for entry in tensor.external_data:
            if entry.key in entries:
                self._refuse(name, f"has the external-data key {entry.key!r} twice")
            entries[entry.key] = entry.value
        location = entries.get("location", "")
        target, size = self._external_file(name, location)
        offset = self._count(name, location, entries, "offset", 0)
        if offset > size:
            self._refuse(name, f"refers to external data at {location!r}, offset "
                               f"{offset}, past the end of that file ({size} bytes)")
        length = self._count(name, location, entries, "length", size - offset)
        if offset + length > size:
            self._refuse(name, f"refers to external data at {location!r}, offset "
                               f"{offset} length {length}, past the end of that file "
                               f"({size} bytes)")
        if need > length or ("length" in entries and need != length):
            self._refuse(name, f"has dims {dims} ({_type_name(tensor)}), which need "
                               f"{need} bytes, but its external data at {location!r} "
                               f"holds {length} bytes (offset {offset})")
        return target, offset, need

    def _elements(self, name, tensor):
        """The product of the dims, refused when one is negative or it
        overflows int64."""
        elements = 1
        for dim in tensor.dims:
            if dim < 0:
                self._refuse(name, f"has a negative dim: {list(tensor.dims)}")
            elements *= dim
            if elements > _INT64_MAX:
                self._refuse(name, f"has dims {list(tensor.dims)} whose product "
                                   f"overflows int64")
        return elements

    def _element_bits(self, name, tensor):
        from onnx import TensorProto, helper
        for type_name, bits in _PACKED_BITS.items():
            if tensor.data_type == getattr(TensorProto, type_name, None):
                return bits
        try:
            dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
        except (KeyError, ValueError, TypeError):
            dtype = None
        if dtype is None or tensor.data_type == TensorProto.STRING:
            self._refuse(name, f"has the data type {_type_name(tensor)}, which crnn "
                               f"cannot read (as raw or external data)")
        return 8 * dtype.itemsize

    def _check_held(self, name, tensor, elements, dims):
        """The data inside the model file holds what the dims claim: raw
        bytes exactly; a typed field at least (an entry holds at most its
        own bits' worth of elements)."""
        from onnx import TensorProto, helper
        if tensor.data_type == TensorProto.STRING:
            held = len(tensor.string_data)
        elif tensor.HasField("raw_data"):
            need = -(-elements * self._element_bits(name, tensor) // 8)
            held = len(tensor.raw_data)
            if need != held:
                self._refuse(name, f"has dims {dims} ({_type_name(tensor)}), which "
                                   f"need {need} bytes, but its raw data in the file "
                                   f"holds {held} bytes")
            return
        else:
            bits = self._element_bits(name, tensor)
            field = helper.tensor_dtype_to_field(tensor.data_type)
            held = len(getattr(tensor, field)) * _FIELD_BITS[field] // bits
        if elements > held:
            self._refuse(name, f"has dims {dims} ({_type_name(tensor)}), which need "
                               f"{elements} elements, but its data in the file holds "
                               f"{held}")

    def _external_file(self, name, location):
        """(real path, size) of a `location` inside the model's folder."""
        where = f"refers to external data at {location!r}"
        if not location:
            self._refuse(name, "is stored as external data but names no location")
        if "\0" in location:
            self._refuse(name, f"{where}: a name with a NUL character")
        if os.path.isabs(location) or os.path.splitdrive(location)[0]:
            self._refuse(name, f"{where}: an absolute path; crnn reads external data "
                               f"only from files inside the model's folder "
                               f"{self.folder!r}, by relative names")
        target = os.path.realpath(os.path.join(self.folder, location))
        try:
            inside = os.path.commonpath([self.folder, target]) == self.folder
        except ValueError:                  # Windows: another drive
            inside = False
        if not inside:
            self._refuse(name, f"{where}, which resolves to {target!r}, outside the "
                               f"model's folder {self.folder!r}; crnn reads external "
                               f"data only from files inside it")
        try:
            status = os.stat(target)
        except OSError as error:
            self._refuse(name, f"{where}, which cannot be read ({error.strerror})")
        if not stat.S_ISREG(status.st_mode):
            self._refuse(name, f"{where}, which is not a regular file")
        return target, status.st_size

    def _count(self, name, location, entries, key, default):
        """A non-negative decimal integer field of the external data."""
        if key not in entries:
            return default
        value = entries[key]
        if not (value.isascii() and value.isdigit()):
            self._refuse(name, f"refers to external data at {location!r} with "
                               f"{key}={value!r}; expected a non-negative integer")
        return int(value)

    def _read(self, name, tensor, source):
        """The numpy array of a checked tensor; external data read from its
        checked file and range (its size checked again once opened)."""
        from onnx import TensorProto, numpy_helper
        if source is None:
            return numpy_helper.to_array(tensor)
        target, offset, need = source
        flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
        descriptor = os.open(target, flags)
        with os.fdopen(descriptor, "rb") as data_file:
            status = os.fstat(data_file.fileno())
            if not stat.S_ISREG(status.st_mode) or status.st_size < offset + need:
                self._refuse(name, f"refers to external data at {target!r}, "
                               f"which changed while it was read")
            data_file.seek(offset)
            data = data_file.read(need)
        if len(data) != need:
            self._refuse(name, f"refers to external data at {target!r}, "
                               f"which changed while it was read")
        inline = TensorProto()
        inline.CopyFrom(tensor)
        del inline.external_data[:]
        inline.data_location = TensorProto.DEFAULT
        inline.raw_data = data
        return numpy_helper.to_array(inline)


def _type_name(tensor):
    from onnx import TensorProto
    try:
        return TensorProto.DataType.Name(tensor.data_type)
    except ValueError:
        return str(tensor.data_type)
