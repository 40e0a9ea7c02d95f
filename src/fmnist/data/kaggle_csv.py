"""Read and write the Kaggle CSV layout: ``label,pixel1,...,pixel784``, one image per row.

Parsing is done by pyarrow's CSV reader straight into uint8 columns; no Python loop touches
a pixel. When that fast path fails, a slower diagnosis pass finds the exact row and column
so the error can name them.

Memory and time are bounded whatever the file holds: a first pass streams the (inflated)
text counting lines, and refuses more than ``limits.max_images()`` rows or a line over
``MAX_CSV_LINE_BYTES`` before anything is parsed (300,000 rows of text inflate in ~1.5 s
here); the parse then streams blocks into arrays allocated once for the counted rows.
The first pass costs ~0.1 s per 130 MB of uncompressed text (the Kaggle training file),
~0.5 s when it is gzipped, against ~3 s for the parse itself.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from fmnist.data.classes import IMAGE_SIZE, NUM_CLASSES
from fmnist.data.idx import GZIP_MAGIC
from fmnist.data.input_files import HashingReader, gzip_read_errors, open_regular_file
from fmnist.data.limits import MAX_CSV_LINE_BYTES, RAISE_HINT, max_images
from fmnist.errors import DataError

PIXELS = IMAGE_SIZE * IMAGE_SIZE
PIXEL_COLUMNS = tuple(f"pixel{i}" for i in range(1, PIXELS + 1))
LABEL_COLUMN = "label"
KAGGLE_COLUMNS = (LABEL_COLUMN, *PIXEL_COLUMNS)
_WHOLE_NUMBER = re.compile(r"^\s*[+-]?\d+\s*$")
_PLAIN_NUMBER = re.compile(r"^(-?[1-9][0-9]{0,19}|[0-9]{1,20})$", re.ASCII)  # what pyarrow reads as an integer
SNIFF_BYTES = 1 << 16
# pyarrow needs every row inside one block; lines are at most MAX_CSV_LINE_BYTES (checked).
BLOCK_BYTES = 4 * MAX_CSV_LINE_BYTES


@contextlib.contextmanager
def _text(path: Path, file_digest: hashlib._Hash | None = None) -> Iterator[BinaryIO]:
    """The file's bytes as a stream, inflated when they are gzip data; read errors
    (corrupt or truncated gzip, memory) become one-line DataErrors. ``file_digest``, if
    given, is fed the file's bytes as they are read."""
    with open_regular_file(path) as raw:
        gzipped = raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC
        raw.seek(0)
        source = raw if file_digest is None else HashingReader(raw, file_digest)
        if not gzipped and path.suffix.lower() == ".gz":
            raise DataError(
                f"{path}: the name ends in .gz but the content is not gzip data",
                "compress it with gzip, or remove the .gz suffix",
            )
        with gzip_read_errors(path, "compress it again"):
            if gzipped:
                with gzip.GzipFile(fileobj=source, mode="rb") as inflated:
                    yield inflated
            else:
                yield source


def _count_lines(path: Path, *, has_header: bool, max_rows: int) -> int:
    """The number of lines after the header (blank ones included), refusing more than
    ``max_rows`` or a line longer than MAX_CSV_LINE_BYTES; reads nothing past the bound."""
    lines, run = 0, 0  # run: bytes since the last line end
    skip = 1 if has_header else 0
    with _text(path) as stream:
        while chunk := stream.read(MAX_CSV_LINE_BYTES):
            # Lines end in LF, CRLF or CR, as pyarrow reads them. A CRLF split between two
            # chunks counts twice: the count is an upper bound, which is all it needs to be.
            returns = chunk.count(b"\r")  # usually none: skip the slower two-byte count
            ends = chunk.count(b"\n") + returns - (chunk.count(b"\r\n") if returns else 0)
            if not ends:
                run += len(chunk)
            else:
                if returns:
                    first = min(index for index in (chunk.find(b"\n"), chunk.find(b"\r")) if index >= 0)
                    last = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
                else:
                    first, last = chunk.find(b"\n"), chunk.rfind(b"\n")
                # Lines between two line ends of one chunk are shorter than the chunk.
                if run + first > MAX_CSV_LINE_BYTES:
                    run += first
                    break
                lines += ends
                run = len(chunk) - last - 1
            if run > MAX_CSV_LINE_BYTES:
                break
            if lines - skip > max_rows:
                raise DataError(
                    f"{path}: more than {max_rows:,} rows (lines), the limit for one file",
                    f"is this the right file? The Kaggle training file has 60,000 rows; split it, or {RAISE_HINT}",
                )
    if run > MAX_CSV_LINE_BYTES:
        raise DataError(
            f"{path}: line {lines + 1} is longer than {MAX_CSV_LINE_BYTES:,} bytes, not one image of 785 cells",
            _layout_hint(),
        )
    return max(0, lines + (1 if run else 0) - skip)


def _layout_hint() -> str:
    return "expected the Kaggle layout: a header 'label,pixel1,...,pixel784', then one image per row"


def _sniff_header(path: Path) -> tuple[list[str], bool]:
    """Return (column names, whether the first line is a header), refusing non-CSV files."""
    with _text(path) as stream:
        head = stream.read(SNIFF_BYTES)
    if not head.strip():
        raise DataError(f"{path}: the file is empty", _layout_hint())
    if b"\x00" in head:
        raise DataError(f"{path}: binary content, not a CSV text file", _layout_hint())
    try:
        # "utf-8-sig" drops the byte-order mark Excel writes (pyarrow skips it too). The
        # 64 KiB cut may split a multi-byte character; ignore only that tail.
        text = head.decode("utf-8-sig", errors="strict" if len(head) < SNIFF_BYTES else "ignore")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text, so not a CSV file", _layout_hint()) from None
    first_line = text.splitlines()[0] if text.splitlines() else ""
    cells = [cell.strip().strip('"').strip() for cell in first_line.split(",")]
    if all(_WHOLE_NUMBER.match(cell) for cell in cells):
        names = list(KAGGLE_COLUMNS) if len(cells) == PIXELS + 1 else list(PIXEL_COLUMNS)
        if len(cells) not in (PIXELS, PIXELS + 1):
            raise DataError(
                f"{path}: line 1 has {len(cells)} cells, expected {PIXELS + 1} (label + {PIXELS} pixels)",
                _layout_hint(),
            )
        return names, False
    lowered = [cell.lower() for cell in cells]
    if lowered == list(KAGGLE_COLUMNS) or lowered == list(PIXEL_COLUMNS):
        # pyarrow cannot even skip a header that has no line end; say what it means.
        if len(head) < SNIFF_BYTES and not any(line.strip() for line in text.splitlines()[1:]):
            raise DataError(f"{path}: a header but no rows", "the file holds no images")
        return lowered, True
    if lowered and lowered[0] == LABEL_COLUMN and len(cells) != PIXELS + 1:
        raise DataError(
            f"{path}: the header has {len(cells)} columns, expected {PIXELS + 1} (label + {PIXELS} pixels)",
            _layout_hint(),
        )
    shown = first_line[:60] + ("..." if len(first_line) > 60 else "")
    raise DataError(f"{path}: unexpected first line {shown!r}", _layout_hint())


def _read_options(names: list[str], has_header: bool, **options) -> pa_csv.ReadOptions:
    return pa_csv.ReadOptions(column_names=names, skip_rows=1 if has_header else 0, block_size=BLOCK_BYTES, **options)


def _diagnose(path: Path, names: list[str], has_header: bool, error: Exception, num_classes: int = NUM_CLASSES) -> DataError:
    """Find the row and column behind a fast-path failure (slow; runs only on bad files).

    It streams the file again block by block and stops at the first bad row, so it needs
    no more memory than the fast path."""
    first_data_line = 2 if has_header else 1
    bad_rows: list[tuple[int | None, int]] = []

    def remember(row: pa_csv.InvalidRow) -> str:
        bad_rows.append((row.number, row.actual_columns))
        return "error"

    message = str(error)
    column_match = re.search(r"In CSV column #(\d+)", message)
    if column_match is None:
        # A parse error: a row with the wrong number of cells. Single-threaded reading
        # gives row numbers to the handler.
        try:
            with _text(path) as stream:
                for _batch in pa_csv.open_csv(
                    stream,
                    read_options=_read_options(names, has_header, use_threads=False),
                    parse_options=pa_csv.ParseOptions(invalid_row_handler=remember),
                    convert_options=pa_csv.ConvertOptions(column_types={n: pa.string() for n in names}),
                ):
                    pass
        except (pa.ArrowInvalid, UnicodeDecodeError):
            pass
        if bad_rows:
            number, cells = bad_rows[0]
            # pyarrow numbers rows by physical line, the skipped header included.
            where = f"line {number}" if number is not None else "a row"
            return DataError(
                f"{path}: {where} has {cells} cells, expected {len(names)}"
                f" ({'label + ' if names[0] == LABEL_COLUMN else ''}{PIXELS} pixels)",
                "every row must hold one whole image",
            )
        short = message.splitlines()[0][:120]
        return DataError(f"{path}: not a readable CSV file ({short})", _layout_hint())
    column = names[int(column_match.group(1))]
    upper = num_classes - 1 if column == LABEL_COLUMN else 255
    line = first_data_line
    try:
        with _text(path) as stream:
            batches = pa_csv.open_csv(
                stream,
                read_options=_read_options(names, has_header),
                # binary: a cell that is not UTF-8 must reach the check below, not stop pyarrow
                convert_options=pa_csv.ConvertOptions(column_types={column: pa.binary()}, include_columns=[column]),
            )
            for batch in batches:
                for raw in batch.column(0).to_pylist():
                    value = None if raw is None else raw.decode("utf-8", "replace")
                    if value is None or not value.strip():
                        return DataError(f"{path}: line {line}, column {column} is empty", "every cell needs a number")
                    # ASCII digits only, and few of them: int() of 5,000 digits raises, and
                    # '+7' or full-width digits pass int() but not pyarrow.
                    if not _PLAIN_NUMBER.match(value.strip()):
                        return DataError(
                            f"{path}: line {line}, column {column}: {value[:20]!r} is not a whole number",
                            f"cells must be integers 0-{upper}, written with the digits 0-9",
                        )
                    if not 0 <= int(value) <= upper:
                        return DataError(
                            f"{path}: line {line}, column {column}: {int(value)} is outside 0-{upper}",
                            f"pixels must be 0-255 and labels 0-{num_classes - 1}",
                        )
                    line += 1
    except (pa.ArrowInvalid, UnicodeDecodeError) as failure:
        short = str(failure).splitlines()[0][:120]
        return DataError(f"{path}: column {column} near line {line} could not be read ({short})", _layout_hint())
    short = message.splitlines()[0][:120]
    return DataError(f"{path}: column {column} could not be read ({short})", _layout_hint())


def _parse_rows(
    path: Path, names: list[str], has_header: bool, capacity: int, file_digest: hashlib._Hash | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Stream the rows into (rows, 784) pixels and (rows,) labels allocated once for
    ``capacity`` rows; empty cells are refused with their line."""
    has_labels = names[0] == LABEL_COLUMN
    pixels = np.empty((capacity, PIXELS), dtype=np.uint8)
    labels = np.empty(capacity, dtype=np.uint8) if has_labels else None
    filled = 0
    with _text(path, file_digest) as stream:
        # uint8 conversion rejects anything outside 0-255 and anything non-numeric; empty
        # cells become nulls, checked below.
        batches = pa_csv.open_csv(
            stream,
            read_options=_read_options(names, has_header),
            convert_options=pa_csv.ConvertOptions(column_types={name: pa.uint8() for name in names}),
        )
        for batch in batches:
            count = batch.num_rows
            if filled + count > capacity:
                raise DataError(f"{path}: the file changed while it was read", "read it again when it is complete")
            for index, column in enumerate(batch.columns):
                if column.null_count:
                    row = filled + int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
                    line = row + (2 if has_header else 1)
                    raise DataError(
                        f"{path}: line {line}, column {names[index]} is empty", "every cell needs a number"
                    )
            columns = [column.to_numpy() for column in batch.columns]
            if labels is not None:
                labels[filled : filled + count] = columns.pop(0)
            pixels[filled : filled + count] = np.column_stack(columns)
            filled += count
    if filled < capacity:  # blank lines were counted but hold no row
        pixels, labels = pixels[:filled].copy(), None if labels is None else labels[:filled].copy()
    return pixels, labels


def read_kaggle_csv(
    path: Path,
    *,
    require_labels: bool = True,
    max_rows: int | None = None,
    file_digest: hashlib._Hash | None = None,
    num_classes: int = NUM_CLASSES,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a Kaggle-layout CSV into uint8 images (N, 28, 28) and int64 labels (N,) below
    ``num_classes``.

    Rows may come in any order. With ``require_labels=False`` a file without the label
    column is accepted and the labels are returned as None. More than ``max_rows`` rows
    (default ``limits.max_images()``) are refused before parsing. ``file_digest``, if
    given, is fed the file's bytes as parsed (the parsed-data cache keeps it).
    """
    names, has_header = _sniff_header(path)
    has_labels = names[0] == LABEL_COLUMN
    if require_labels and not has_labels:
        raise DataError(f"{path}: no label column", "add a 'label' column first, as in the Kaggle files")
    capacity = _count_lines(path, has_header=has_header, max_rows=max_rows or max_images())
    try:
        pixels, label_bytes = _parse_rows(path, names, has_header, capacity, file_digest)
    except (pa.ArrowInvalid, UnicodeDecodeError) as error:
        raise _diagnose(path, names, has_header, error, num_classes) from None
    except MemoryError:  # pyarrow's ArrowMemoryError is one too
        raise DataError(f"{path}: not enough memory to read this file", "free memory, or use a smaller file") from None
    if len(pixels) == 0:
        raise DataError(f"{path}: a header but no rows", "the file holds no images")
    images = pixels.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    if label_bytes is None:
        return images, None
    labels = label_bytes.astype(np.int64)
    if labels.max() >= num_classes:
        row = int(np.argmax(labels >= num_classes))
        raise DataError(
            f"{path}: line {row + (2 if has_header else 1)}, column label: {labels[row]} is outside 0-{num_classes - 1}",
            f"labels must be class numbers 0-{num_classes - 1}, or list more classes in a classes.txt next to the file",
        )
    return images, labels


def write_kaggle_csv(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write images and labels as a Kaggle-layout CSV (header included) to ``path``."""
    flat = images.reshape(len(images), -1)
    columns = {LABEL_COLUMN: pa.array(labels.astype(np.uint8))}
    columns.update({name: pa.array(flat[:, i]) for i, name in enumerate(PIXEL_COLUMNS)})
    with open(path, "wb") as handle:
        # The header is written by hand so the names stay unquoted, as in Kaggle's files.
        handle.write((",".join(KAGGLE_COLUMNS) + "\n").encode("ascii"))
        pa_csv.write_csv(pa.table(columns), handle, pa_csv.WriteOptions(include_header=False))
