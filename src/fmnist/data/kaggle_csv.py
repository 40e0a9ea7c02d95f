"""Read and write the Kaggle CSV layout: ``label,pixel1,...,pixel784``, one image per row.

Parsing is done by pyarrow's multi-threaded CSV reader straight into uint8 columns; no
Python loop touches a pixel. When that fast path fails, a slower diagnosis pass finds the
exact row and column so the error can name them.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from fmnist.data.classes import IMAGE_SIZE, NUM_CLASSES
from fmnist.errors import DataError

PIXELS = IMAGE_SIZE * IMAGE_SIZE
PIXEL_COLUMNS = tuple(f"pixel{i}" for i in range(1, PIXELS + 1))
LABEL_COLUMN = "label"
KAGGLE_COLUMNS = (LABEL_COLUMN, *PIXEL_COLUMNS)
_WHOLE_NUMBER = re.compile(r"^\s*[+-]?\d+\s*$")


def _layout_hint() -> str:
    return "expected the Kaggle layout: a header 'label,pixel1,...,pixel784', then one image per row"


def _sniff_header(path: Path) -> tuple[list[str], bool]:
    """Return (column names, whether the first line is a header), refusing non-CSV files."""
    # pyarrow decompresses a .gz file by its name, so the sniffer reads the same text.
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(1 << 16)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise DataError(f"{path}: corrupt or truncated gzip data ({error})", "compress it again") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror})", "check the path and permissions") from None
    if not head.strip():
        raise DataError(f"{path}: the file is empty", _layout_hint())
    if b"\x00" in head:
        raise DataError(f"{path}: binary content, not a CSV text file", _layout_hint())
    try:
        # "utf-8-sig" drops the byte-order mark Excel writes (pyarrow skips it too). The
        # 64 KiB cut may split a multi-byte character; ignore only that tail.
        text = head.decode("utf-8-sig", errors="strict" if len(head) < (1 << 16) else "ignore")
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
        if len(head) < (1 << 16) and not any(line.strip() for line in text.splitlines()[1:]):
            raise DataError(f"{path}: a header but no rows", "the file holds no images")
        return lowered, True
    if lowered and lowered[0] == LABEL_COLUMN and len(cells) != PIXELS + 1:
        raise DataError(
            f"{path}: the header has {len(cells)} columns, expected {PIXELS + 1} (label + {PIXELS} pixels)",
            _layout_hint(),
        )
    shown = first_line[:60] + ("..." if len(first_line) > 60 else "")
    raise DataError(f"{path}: unexpected first line {shown!r}", _layout_hint())


def _diagnose(path: Path, names: list[str], has_header: bool, error: Exception) -> DataError:
    """Find the row and column behind a fast-path failure (slow; runs only on bad files)."""
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
            pa_csv.read_csv(
                path,
                read_options=pa_csv.ReadOptions(
                    use_threads=False, column_names=names, skip_rows=1 if has_header else 0
                ),
                parse_options=pa_csv.ParseOptions(invalid_row_handler=remember),
                convert_options=pa_csv.ConvertOptions(column_types={n: pa.string() for n in names}),
            )
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
    table = pa_csv.read_csv(
        path,
        read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1 if has_header else 0),
        convert_options=pa_csv.ConvertOptions(column_types={column: pa.string()}, include_columns=[column]),
    )
    values = table.column(0).to_pylist()
    upper = NUM_CLASSES - 1 if column == LABEL_COLUMN else 255
    for offset, value in enumerate(values):
        line = first_data_line + offset
        if value is None or not value.strip():
            return DataError(f"{path}: line {line}, column {column} is empty", "every cell needs a number")
        if not _WHOLE_NUMBER.match(value):
            return DataError(
                f"{path}: line {line}, column {column}: {value[:20]!r} is not a whole number",
                f"cells must be integers 0-{upper}",
            )
        if not 0 <= int(value) <= upper:
            return DataError(
                f"{path}: line {line}, column {column}: {int(value)} is outside 0-{upper}",
                "pixels must be 0-255 and labels 0-9",
            )
    short = message.splitlines()[0][:120]
    return DataError(f"{path}: column {column} could not be read ({short})", _layout_hint())


def read_kaggle_csv(path: Path, *, require_labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a Kaggle-layout CSV into uint8 images (N, 28, 28) and int64 labels (N,).

    Rows may come in any order. With ``require_labels=False`` a file without the label
    column is accepted and the labels are returned as None.
    """
    names, has_header = _sniff_header(path)
    has_labels = names[0] == LABEL_COLUMN
    if require_labels and not has_labels:
        raise DataError(f"{path}: no label column", "add a 'label' column first, as in the Kaggle files")
    try:
        # uint8 conversion rejects anything outside 0-255 and anything non-numeric; empty
        # cells become nulls, checked below.
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1 if has_header else 0),
            convert_options=pa_csv.ConvertOptions(column_types={name: pa.uint8() for name in names}),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as error:
        raise _diagnose(path, names, has_header, error) from None
    except OSError as error:
        # pyarrow reports a truncated or corrupt .gz stream this way.
        raise DataError(f"{path}: cannot read ({error})", "if it is gzipped, compress it again") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: a header but no rows", "the file holds no images")
    for index, column in enumerate(table.columns):
        if column.null_count:
            row = int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
            line = row + (2 if has_header else 1)
            raise DataError(
                f"{path}: line {line}, column {names[index]} is empty", "every cell needs a number"
            )
    matrix = np.column_stack([column.to_numpy() for column in table.columns]).astype(np.uint8, copy=False)
    pixels = matrix[:, 1:] if has_labels else matrix
    images = np.ascontiguousarray(pixels).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    if not has_labels:
        return images, None
    labels = matrix[:, 0].astype(np.int64)
    if labels.max() >= NUM_CLASSES:
        row = int(np.argmax(labels >= NUM_CLASSES))
        raise DataError(
            f"{path}: line {row + (2 if has_header else 1)}, column label: {labels[row]} is outside 0-{NUM_CLASSES - 1}",
            "labels must be class numbers 0-9",
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
