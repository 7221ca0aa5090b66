"""Reading arrays row chunk by row chunk from files: ``.npy``, ``.npz``, Parquet and Arrow.

Every source reports its full shape and dtype up front (from the file's header or schema) and
then hands out consecutive row ranges, so a file bigger than memory is read one chunk at a
time: ``.npy`` files are memory-mapped, ``.npz`` members and Parquet files are streamed, Arrow
files are memory-mapped. A problem with a file is a :class:`DataError` whose message names the
file and the problem in one line.

A file name may carry a selector after a colon: ``data.npz:logits`` picks an ``.npz`` member,
``data.parquet:p0,p1,p2`` or ``data.parquet:p*`` picks Parquet/Arrow columns (several columns
become the columns of a 2-D array; one list column becomes a 2-D array too).
"""

from __future__ import annotations

import fnmatch
import math
import os
import zipfile
from typing import IO, Any

import numpy as np

__all__ = ["DataError", "Source", "open_source"]

_ARROW_SUFFIXES = (".arrow", ".arrows", ".ipc", ".feather")
_PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
_SUFFIXES = (".npy", ".npz", *_PARQUET_SUFFIXES, *_ARROW_SUFFIXES)


class DataError(Exception):
    """A problem with an input or output file: ``"<file>: <problem>"`` on one line."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class Source:
    """An array stored in a file, read in consecutive row ranges.

    Attributes
    ----------
    name : str
        The file name as given (with its selector), for messages.
    shape : tuple of int
        The array's shape; rows are ``shape[0]``.
    dtype : numpy.dtype
        The array's dtype (strings are ``<U``).
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    @property
    def rows(self) -> int:
        """The number of rows (``shape[0]``)."""
        return self.shape[0]

    @property
    def row_bytes(self) -> int:
        """Bytes per row (for throughput)."""
        return math.prod(self.shape[1:]) * self.dtype.itemsize

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop``. Calls come in order, each starting where the last stopped."""
        raise NotImplementedError

    def close(self) -> None:
        """Releases the file."""


def _split_selector(spec: str) -> tuple[str, str | None]:
    """``path`` and the selector after its last colon, when ``spec`` itself is not a file."""
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    path, _, selector = spec.rpartition(":")
    if path.lower().endswith(_SUFFIXES):
        return path, selector or None
    return spec, None


def same_file(out: str, spec: str) -> bool:
    """Whether the file ``out`` is the file of the input ``spec`` (a name, maybe with a
    ``:selector``), through links too; ``False`` when either does not exist."""
    try:
        return os.path.samefile(out, _split_selector(spec)[0])
    except OSError:
        return False


def open_source(spec: str) -> Source:
    """Opens ``spec`` (a file name, maybe with a ``:selector``) as a :class:`Source`."""
    path, selector = _split_selector(spec)
    if not os.path.exists(path):
        raise DataError(spec, "no such file")
    if os.path.isdir(path):
        raise DataError(spec, "is a directory, not a file")
    lower = path.lower()
    try:
        if lower.endswith(".npy"):
            if selector is not None:
                raise DataError(spec, "a .npy file holds one array: drop the ':' selector")
            return _NpySource(spec, path)
        if lower.endswith(".npz"):
            return _NpzSource(spec, path, selector)
        if lower.endswith(_PARQUET_SUFFIXES):
            return _ParquetSource(spec, path, selector)
        if lower.endswith(_ARROW_SUFFIXES):
            return _ArrowSource(spec, path, selector)
    except PermissionError:
        raise DataError(spec, "permission denied") from None
    except OSError as exc:
        raise DataError(spec, f"cannot be read ({exc.strerror or exc})") from None
    raise DataError(
        spec,
        "unknown file type; expected .npy, .npz, .parquet or .arrow/.feather (Arrow IPC)",
    )


# ---------------------------------------------------------------------------------------------
# .npy (memory-mapped) and .npz (streamed members)
# ---------------------------------------------------------------------------------------------


def _read_npy_header(fh: IO[bytes], name: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """The ``.npy`` header of the stream ``fh`` (left at the start of the data)."""
    try:
        version = np.lib.format.read_magic(fh)
    except ValueError:
        raise DataError(name, "not a .npy file (no NumPy magic string at its start)") from None
    try:
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:  # 3.0: the same header, utf-8 field names
            shape, fortran, dtype = np.lib.format._read_array_header(fh, version)  # type: ignore[attr-defined]
    except (ValueError, SyntaxError, EOFError) as exc:
        raise DataError(name, f"damaged .npy header ({exc})") from None
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise DataError(name, "holds Python objects (dtype object); only numbers can be scored")
    if not isinstance(shape, tuple) or len(shape) == 0:
        raise DataError(name, f"holds a 0-d array (shape {shape}); expected rows")
    return shape, bool(fortran), dtype


class _NpySource(Source):
    def __init__(self, name: str, path: str) -> None:
        self.name = name
        with open(path, "rb") as fh:
            shape, fortran, dtype = _read_npy_header(fh, name)
            offset = fh.tell()
        self.shape, self.dtype = shape, dtype
        expected = math.prod(shape) * dtype.itemsize
        present = os.path.getsize(path) - offset
        if present < expected:
            raise DataError(
                name,
                f"truncated .npy file: its header promises {expected:,} bytes of data "
                f"(shape {shape}, {dtype}) but only {present:,} are there",
            )
        self._array: np.ndarray
        if expected == 0:
            self._array = np.empty(shape, dtype)
        else:
            self._array = np.memmap(
                path,
                dtype=dtype,
                mode="r",
                offset=offset,
                shape=shape,
                order="F" if fortran else "C",
            )

    def read(self, start: int, stop: int) -> np.ndarray:
        return self._array[start:stop]

    def close(self) -> None:
        mm = getattr(self._array, "_mmap", None)
        self._array = np.empty((0, *self.shape[1:]), self.dtype)
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # a chunk handed out is still alive: the GC closes it
                pass


class _NpzSource(Source):
    """One member of a ``.npz`` archive, decompressed as it is read (never loaded whole)."""

    def __init__(self, name: str, path: str, selector: str | None) -> None:
        self.name = name
        try:
            self._zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise DataError(name, "not a valid .npz file (not a zip archive)") from None
        members = [m for m in self._zip.namelist() if m.endswith(".npy")]
        keys = [m[: -len(".npy")] for m in members]
        if selector is None:
            if len(keys) != 1:
                listed = ", ".join(keys) if keys else "none"
                self._zip.close()
                raise DataError(
                    name,
                    f"holds {len(keys)} arrays ({listed}); pick one with {name}:NAME",
                )
            selector = keys[0]
            self.name = f"{name}:{selector}"
        if selector not in keys:
            self._zip.close()
            raise DataError(name, f"has no array {selector!r} (arrays: {', '.join(keys)})")
        self._member = f"{selector}.npy"
        try:
            self._fh: IO[bytes] = self._zip.open(self._member)
            shape, fortran, dtype = _read_npy_header(self._fh, self.name)
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise DataError(self.name, f"damaged .npz member ({exc})") from None
        self.shape, self.dtype = shape, dtype
        self._fortran = fortran and len(shape) > 1
        self._whole: np.ndarray | None = None
        self._pos = 0

    def read(self, start: int, stop: int) -> np.ndarray:
        if self._fortran:  # column-major data cannot be streamed by rows
            if self._whole is None:
                self._whole = self._read_rows(self.rows, order="F")
            return self._whole[start:stop]
        assert start == self._pos, "npz members are read in order"
        self._pos = stop
        return self._read_rows(stop - start, order="C")

    def _read_rows(self, rows: int, order: str) -> np.ndarray:
        shape = (rows, *self.shape[1:])
        want = math.prod(shape) * self.dtype.itemsize
        try:
            data = self._fh.read(want)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
            raise DataError(self.name, f"damaged .npz member ({exc})") from None
        if len(data) < want:
            raise DataError(
                self.name,
                f"truncated .npz member: its header promises shape {self.shape} but the data "
                "ends early",
            )
        flat = np.frombuffer(data, dtype=self.dtype)
        if order == "F":
            return flat.reshape(self.shape[::-1]).T
        return flat.reshape(shape)

    def close(self) -> None:
        self._fh.close()
        self._zip.close()


# ---------------------------------------------------------------------------------------------
# Parquet and Arrow (pyarrow, an optional extra)
# ---------------------------------------------------------------------------------------------


def _pyarrow(name: str, what: str) -> Any:
    try:
        import pyarrow
        import pyarrow.compute  # list_value_length, used below
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "pyarrow":
            raise DataError(name, f"pyarrow does not import: {_first_line(exc)}") from None
        raise DataError(
            name, f"reading {what} files needs pyarrow: pip install 'xent-rs[parquet]'"
        ) from None
    except ImportError as exc:
        # Installed but broken for this environment: pyarrow 26+ refuses NumPy 1.x (without
        # declaring it, so pip may pair them); say why, not "install pyarrow".
        raise DataError(name, f"pyarrow does not import: {_first_line(exc)}") from None
    return pyarrow


def _select(name: str, available: list[str], selector: str | None) -> list[str]:
    if selector is None:
        return available
    chosen: list[str] = []
    for part in selector.split(","):
        part = part.strip()
        matches = [c for c in available if fnmatch.fnmatchcase(c, part)]
        if not matches:
            raise DataError(name, f"has no column {part!r} (columns: {', '.join(available)})")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


class _TableSource(Source):
    """Selected columns of a Parquet or Arrow table, as one NumPy array per row range."""

    def _setup(self, pa: Any, schema: Any, selector: str | None) -> None:
        self._pa = pa
        self.columns = _select(self.name, list(schema.names), selector)
        types = [schema.field(c).type for c in self.columns]
        self._list_width: int | None = None
        if len(types) == 1 and (pa.types.is_list(types[0]) or pa.types.is_large_list(types[0])):
            self._list_width = -1  # fixed by the first row read
            value_type = types[0].value_type
        elif len(types) == 1 and pa.types.is_fixed_size_list(types[0]):
            self._list_width = int(types[0].list_size)
            value_type = types[0].value_type
        else:
            for column, t in zip(self.columns, types, strict=True):
                if pa.types.is_nested(t):
                    raise DataError(
                        self.name,
                        f"column {column!r} holds {t}; a list column must be selected alone",
                    )
            value_type = None
        if value_type is not None:
            dtypes = [self._numpy_dtype(value_type)]
        else:
            dtypes = [self._numpy_dtype(t) for t in types]
        if len(dtypes) > 1 and any(d.kind not in "fiub" for d in dtypes):
            raise DataError(self.name, "several columns selected, but not all of them are numbers")
        self.dtype = np.result_type(*dtypes) if len(dtypes) > 1 else dtypes[0]

    def _numpy_dtype(self, t: Any) -> np.dtype[Any]:
        pa = self._pa
        if pa.types.is_dictionary(t):
            t = t.value_type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return np.dtype(str)
        # The dtype pyarrow's own conversion gives (the one `_to_numpy` reads), from an empty
        # array: `DataType.to_pandas_dtype()` imports pandas before pyarrow 26, and pandas is not
        # a dependency of the parquet extra (`pa.nulls`, unlike `pa.array`, does not look for
        # pandas either). Nested and time-of-day types have no NumPy dtype (to_pandas_dtype
        # refused them; to_numpy would make objects of them).
        if pa.types.is_nested(t) or pa.types.is_time(t):
            raise DataError(self.name, f"has a column of type {t}, which cannot be scored")
        try:
            dtype: np.dtype[Any] = pa.nulls(0, type=t).to_numpy(zero_copy_only=False).dtype
        except (pa.ArrowException, NotImplementedError, TypeError):
            raise DataError(
                self.name, f"has a column of type {t}, which cannot be scored"
            ) from None
        return dtype

    def _shape(self, rows: int, first: Any) -> tuple[int, ...]:
        if self._list_width is not None:
            if self._list_width == -1:
                self._list_width = 0 if first is None else self._first_width(first)
            return (rows, self._list_width)
        return (rows,) if len(self.columns) == 1 else (rows, len(self.columns))

    def _first_width(self, table: Any) -> int:
        column = table.column(0)
        for chunk in column.chunks:
            if len(chunk):
                return int(self._pa.compute.list_value_length(chunk)[0].as_py())
        return 0

    def _to_numpy(self, table: Any, start: int) -> np.ndarray:
        """Rows of ``table`` (already reduced to the selected columns) as one array."""
        pa = self._pa
        arrays = []
        for column_name in self.columns:
            column = table.column(column_name)
            if column.null_count:
                mask = column.is_null().to_numpy(zero_copy_only=False)
                row = start + int(np.argmax(mask))
                raise DataError(
                    self.name, f"column {column_name!r} has a missing value at row {row:,}"
                )
            if pa.types.is_dictionary(column.type):
                column = column.cast(column.type.value_type)
            arrays.append(column)
        if self._list_width is not None:
            column = arrays[0].combine_chunks() if arrays[0].num_chunks != 1 else arrays[0].chunk(0)
            width = self._list_width
            if not pa.types.is_fixed_size_list(column.type):
                lengths = pa.compute.list_value_length(column).to_numpy(zero_copy_only=False)
                bad = np.flatnonzero(lengths != width)
                if bad.size:
                    raise DataError(
                        self.name,
                        f"row {start + int(bad[0]):,} holds {int(lengths[bad[0]])} values, "
                        f"the rows before it {width}",
                    )
            values = column.flatten().to_numpy(zero_copy_only=False)
            return np.asarray(values, dtype=self.dtype).reshape(len(column), width)
        numpy_columns = [_column_numpy(c, self.dtype) for c in arrays]
        if len(numpy_columns) == 1:
            return numpy_columns[0]
        return np.stack(numpy_columns, axis=1)


def _column_numpy(column: Any, dtype: np.dtype[Any]) -> np.ndarray:
    values = column.to_numpy() if hasattr(column, "to_numpy") else np.asarray(column)
    if dtype.kind == "U":
        return np.asarray(values, dtype=str)
    return np.asarray(values, dtype=dtype)


class _ParquetSource(_TableSource):
    def __init__(self, name: str, path: str, selector: str | None) -> None:
        self.name = name
        pa = _pyarrow(name, "Parquet")
        import pyarrow.parquet as pq

        try:
            self._file = pq.ParquetFile(path, memory_map=True)
        except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
            raise DataError(name, f"not a valid Parquet file ({_first_line(exc)})") from None
        self._setup(pa, self._file.schema_arrow, selector)
        self._batches: Any = None
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._pos = 0
        first = None
        if self._list_width == -1 and self._file.metadata.num_rows:
            first = self._file.read_row_group(0, columns=self.columns)
        self.shape = self._shape(int(self._file.metadata.num_rows), first)

    def read(self, start: int, stop: int) -> np.ndarray:
        assert start == self._pos, "Parquet files are read in order"
        want = stop - start
        if self._batches is None:
            self._batches = self._file.iter_batches(
                batch_size=max(want, 1024), columns=self.columns, use_threads=True
            )
        while self._buffered < want:
            try:
                batch = next(self._batches)
            except StopIteration:
                raise DataError(self.name, "holds fewer rows than its metadata says") from None
            except (self._pa.ArrowException, OSError) as exc:
                raise DataError(self.name, f"damaged Parquet data ({_first_line(exc)})") from None
            table = self._pa.Table.from_batches([batch])
            array = self._to_numpy(table, start + self._buffered)
            self._buffer.append(array)
            self._buffered += len(array)
        joined = self._buffer[0] if len(self._buffer) == 1 else np.concatenate(self._buffer)
        out, rest = joined[:want], joined[want:]
        self._buffer = [rest] if len(rest) else []
        self._buffered = len(rest)
        self._pos = stop
        return out

    def close(self) -> None:
        self._file.close()


class _ArrowSource(_TableSource):
    """An Arrow IPC file or stream (Feather v2 too), memory-mapped: nothing is loaded whole."""

    def __init__(self, name: str, path: str, selector: str | None) -> None:
        self.name = name
        pa = _pyarrow(name, "Arrow")
        self._mmap = pa.memory_map(path, "r")
        table = None
        errors = []
        for opener in (pa.ipc.open_file, pa.ipc.open_stream):
            try:
                self._mmap.seek(0)
                table = opener(self._mmap).read_all()
                break
            except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
                errors.append(_first_line(exc))
        if table is None:
            self._mmap.close()
            raise DataError(name, f"not a valid Arrow IPC file ({errors[0]})")
        self._setup(pa, table.schema, selector)
        self._table = table.select(self.columns)
        self.shape = self._shape(table.num_rows, self._table)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self._to_numpy(self._table.slice(start, stop - start), start)

    def close(self) -> None:
        self._table = None
        self._mmap.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
