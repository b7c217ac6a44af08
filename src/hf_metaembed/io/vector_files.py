"""Reading word-vector files: word2vec (text or binary), GloVe and fastText `.vec`, into one packed `VectorTable`.

Files are streamed (a table can be several GB), validated row by row, and packed as float32 into one byte buffer
so that memory stays close to the size of the table itself. Every problem is reported as a `ValueError` that names
the file, the 1-based line (text) or record (binary), what was wrong and how to fix it.

Formats:
    - `word2vec-text` / `fasttext-vec`: a header line "count dim", then "word v1 ... vdim" per line.
    - `glove`: the same rows without a header; the dimension is read from the first row.
    - `word2vec-binary`: a header line "count dim", then per word its UTF-8 bytes, a space and dim little-endian
      float32 values (an optional newline may follow each vector).
A `.gz` suffix is decompressed on the fly. `static_vectors` turns a table into a backbone folder.
"""

import codecs
import gzip
import itertools
import math
import os
import struct
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..modeling.static_vectors import STATIC_VECTOR_FORMATS

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN)  # rows 0 and 1 of every converted table

# Bytes of the numbers in a text row (digits, signs, exponents, spellings of nan and inf).
_TEXT_NUMBER_BYTES = frozenset(b"0123456789+-.eE \t\r\nnaNAiIfFtTyY")
_FLOAT32_MAX = 3.4028234663852886e38
_MAX_WORD_BYTES = 1 << 16
_READ_CHUNK_BYTES = 1 << 20


@dataclass
class VectorTable:
    """Words in file order and their vectors, filled while a file is read."""

    name: str
    limit: int | None
    lowercase: bool
    unicode_errors: str
    words: list[str] = field(default_factory=list)
    values: bytearray = field(default_factory=bytearray)  # native float32, row-major: len(words) * dim
    seen: set[str] = field(default_factory=set)
    duplicates: int = 0
    unreachable: int = 0
    unreachable_examples: list[str] = field(default_factory=list)

    def add(self, word: str, vector: bytes) -> None:
        """Append `word` and its vector (dim native float32 values) unless the word is skipped."""
        if self.lowercase:
            word = word.lower()
        # The whitespace tokenizer can never emit these words as one token, and the special names are taken.
        if word in SPECIAL_TOKENS or word.split() != [word]:
            self.unreachable += 1
            if len(self.unreachable_examples) < 5:
                self.unreachable_examples.append(word)
            return
        if word in self.seen:
            self.duplicates += 1
            return
        self.seen.add(word)
        self.words.append(word)
        self.values.extend(vector)

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self.words) >= self.limit

    def warn_skipped(self) -> None:
        if self.duplicates:
            warnings.warn(
                f"{self.name}: {self.duplicates} duplicate word(s)"
                f"{' after lowercasing' if self.lowercase else ''}; kept the first vector of each",
                UserWarning,
                stacklevel=4,
            )
        if self.unreachable:
            examples = ", ".join(repr(word) for word in self.unreachable_examples)
            warnings.warn(
                f"{self.name}: skipped {self.unreachable} word(s) that a whitespace tokenizer can never produce "
                f"as one token or that clash with {', '.join(SPECIAL_TOKENS)} (e.g. {examples})",
                UserWarning,
                stacklevel=4,
            )


def _open_binary(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _parse_header(line: bytes) -> tuple[int, int] | None:
    """(count, dim) if `line` is two positive integers, else None."""
    fields = line.removeprefix(codecs.BOM_UTF8).split()
    if len(fields) != 2 or not all(field.isdigit() for field in fields):
        return None
    count, dim = int(fields[0]), int(fields[1])
    return (count, dim) if count > 0 and dim > 0 else None


def _suffix(path: Path) -> str:
    suffixes = [suffix for suffix in path.suffixes if suffix.lower() != ".gz"]
    return suffixes[-1].lower() if suffixes else ""


def detect_static_vectors_format(path: str | os.PathLike) -> str:
    """Guess the format of a vector file from its name and first bytes.

    Returns one of `STATIC_VECTOR_FORMATS`: `word2vec-binary` for a `.bin` file or when the bytes after the first
    word are not a line of numbers, `glove` when the first line is not a "count dim" header, otherwise
    `fasttext-vec` for a `.vec` file and `word2vec-text` for any other name.
    """
    path = Path(path)
    if _suffix(path) == ".bin":
        return "word2vec-binary"
    with _open_binary(path) as file:
        header = _parse_header(file.readline(_MAX_WORD_BYTES))
        if header is None:
            return "glove"
        dim = header[1]
        first_row = file.read(_MAX_WORD_BYTES + 4 * dim)
    # In a text file the first word is followed by `dim` numbers on one line; raw float32 bytes practically never
    # form `dim` space-separated fields of number characters before a newline byte.
    numbers = first_row.partition(b" ")[2].partition(b"\n")[0]
    if set(numbers) <= _TEXT_NUMBER_BYTES and len(numbers.split()) >= dim:
        return "fasttext-vec" if _suffix(path) == ".vec" else "word2vec-text"
    return "word2vec-binary"


def _check_finite(values: Sequence[float], where: str, position: str) -> None:
    """Raise naming the first nan/inf among one word's `values`; `position`: where they stand ("of the word 'x'")."""
    # One sum finds nan/inf cheaply; it can also overflow on huge finite values (a text row's doubles), so a non-finite
    # sum is confirmed value by value; values beyond float32 are reported by the packing.
    if math.isfinite(sum(values)) or all(math.isfinite(value) for value in values):
        return
    column, value = next((i, v) for i, v in enumerate(values, start=1) if not math.isfinite(v))
    raise ValueError(
        f"{where}: value {value} (number {column} {position}) is not finite; "
        "replace nan/inf values with finite numbers"
    )


def _parse_numbers(fields: list[str], packer: struct.Struct, where: str, word: str) -> bytes:
    """The numbers of one text row packed as native float32, after checking they are finite."""
    try:
        values = list(map(float, fields))
    except ValueError:
        column, value = next((i, v) for i, v in enumerate(fields, start=1) if not _is_float(v))
        raise ValueError(
            f"{where}: value {value!r} (number {column} after the word {word!r}) is not a number; "
            f"every field after the word must be a decimal number"
        ) from None
    _check_finite(values, where, f"after the word {word!r}")
    try:
        return packer.pack(*values)
    except OverflowError:
        column, value = next((i, v) for i, v in enumerate(values, start=1) if abs(v) > _FLOAT32_MAX)
        raise ValueError(
            f"{where}: value {fields[column - 1]} (number {column} after the word {word!r}) is beyond the float32 "
            f"range; rescale the vectors or replace the value"
        ) from None


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _text_rows(
    file: BinaryIO, name: str, first_line_no: int, unicode_errors: str
) -> Iterator[tuple[str, str, list[str]]]:
    """(where, word, number fields) for every non-blank line, decoded as UTF-8; `where` names the line and the
    record (the word's row, counted from 1; a header is not a record)."""
    record = 0
    for line_no, raw in enumerate(file, start=first_line_no):
        where = f"{name} line {line_no} (record {record + 1})"
        try:
            line = raw.decode("utf-8", unicode_errors)
        except UnicodeDecodeError as error:
            raise ValueError(
                f"{where}: bytes {raw[error.start : error.end]!r} are not UTF-8; re-encode the file as UTF-8, "
                f"or pass unicode_errors='replace' (or 'ignore') to read the word anyway"
            ) from None
        fields = line.rstrip().split(" ")
        if line_no == 1:
            fields[0] = fields[0].lstrip("\ufeff")
        if fields == [""]:
            continue
        record += 1
        yield where, fields[0], fields[1:]


def _split_word(word: str, fields: list[str], dim: int) -> tuple[str, list[str]] | None:
    """Rejoin a word that itself contains spaces (GloVe 840B has '. . .'): the last `dim` fields are its vector.

    Returns None when the extra leading fields are numbers, i.e. the row simply has too many values.
    """
    extra = fields[: len(fields) - dim]
    if all(_is_float(value) for value in extra):
        return None
    return " ".join([word, *extra]), fields[len(extra) :]


def _read_text(path: Path, table: VectorTable, has_header: bool) -> int:
    """Fill `table` from a text file; returns the vector dimension."""
    name = path.name
    with _open_binary(path) as file:
        if has_header:
            head = file.readline(_MAX_WORD_BYTES)
            header = _parse_header(head)
            if header is None:
                shown = head[:80].decode("utf-8", "replace").strip()
                raise ValueError(
                    f"{name} line 1: expected a header 'count dim' (two positive integers), found {shown!r}; "
                    f"add the header, or use format='glove' for files without one"
                )
            count, dim = header
            fix = "every row must have the dimension given in the header"
        rows = _text_rows(file, name, 2 if has_header else 1, table.unicode_errors)
        first = next(rows, None)
        if first is None:
            raise ValueError(f"{name}: no vectors found; the file is empty")
        if not has_header:
            where, word, fields = first
            if _parse_header(" ".join([word, *fields]).encode()) is not None:
                raise ValueError(
                    f"{where}: looks like a word2vec header {' '.join([word, *fields])!r}, but GloVe files have "
                    f"none; use format='word2vec-text' or format='auto'"
                )
            count, dim = None, len(fields)
            fix = f"every row must have as many numbers as the first row ({dim})"

        packer = struct.Struct(f"={dim}f")
        for row_count, (where, word, fields) in enumerate(itertools.chain([first], rows), start=1):
            if count is not None and row_count > count:
                raise ValueError(
                    f"{where}: the header says {count} words but the file has more rows; "
                    f"fix the count in the header (line 1)"
                )
            if len(fields) > dim:
                word, fields = _split_word(word, fields, dim) or (word, fields)
            if len(fields) != dim:
                raise ValueError(
                    f"{where}: expected {dim} numbers after the word {word!r}, found {len(fields)}; {fix}"
                )
            table.add(word, _parse_numbers(fields, packer, where, word))
            if table.full:
                return dim
        if count is not None and row_count != count:
            raise ValueError(
                f"{name}: the header (line 1) says {count} words but the file has {row_count} rows; "
                f"fix the count in the header, or re-download the file if it is truncated"
            )
    return dim


class _ByteReader:
    """Buffered reads of space-terminated words and fixed-size vectors from a binary stream."""

    def __init__(self, file: BinaryIO):
        self.file = file
        self.buffer = b""
        self.pos = 0

    def _refill(self) -> bool:
        chunk = self.file.read(_READ_CHUNK_BYTES)
        self.buffer = self.buffer[self.pos :] + chunk
        self.pos = 0
        return bool(chunk)

    def read_word(self, where: str) -> bytes | None:
        """Bytes up to the next space (consumed); None if the stream ends first."""
        while True:
            end = self.buffer.find(b" ", self.pos)
            if end >= 0:
                word = self.buffer[self.pos : end]
                self.pos = end + 1
                return word
            if len(self.buffer) - self.pos > _MAX_WORD_BYTES:
                raise ValueError(
                    f"{where}: no space within {_MAX_WORD_BYTES} bytes, so no word ends here; the file is not in "
                    f"word2vec binary format or its header dimension is wrong"
                )
            if not self._refill():
                return None

    def read(self, size: int) -> bytes:
        while len(self.buffer) - self.pos < size:
            if not self._refill():  # end of file: return what there is
                break
        data = self.buffer[self.pos : self.pos + size]
        self.pos += len(data)
        return data

    def rest_is_blank(self) -> bool:
        while True:
            if self.buffer[self.pos :].strip():
                return False
            self.pos = len(self.buffer)
            if not self._refill():
                return True


def _read_binary(path: Path, table: VectorTable) -> int:
    """Fill `table` from a word2vec binary file; returns the vector dimension."""
    name = path.name
    with _open_binary(path) as file:
        head = file.readline(_MAX_WORD_BYTES)
        header = _parse_header(head)
        if header is None:
            raise ValueError(
                f"{name}: the first line is not a word2vec header 'count dim' (found {head[:40]!r}); "
                f"fastText .bin model files are not supported: convert the matching .vec text file instead"
            )
        count, dim = header
        reader = _ByteReader(file)
        vector_bytes = 4 * dim
        file_order, native_order = struct.Struct(f"<{dim}f"), struct.Struct(f"={dim}f")
        for index in range(1, count + 1):
            where = f"{name} record {index}"
            raw_word = reader.read_word(where)
            if raw_word is None:
                raise ValueError(
                    f"{where}: the file ends before this word although the header says {count} words; "
                    f"the file is truncated: re-download or regenerate it, or fix the count in the header"
                )
            # word2vec's C tool ends each vector with a newline; gensim does not.
            raw_word = raw_word.lstrip(b"\r\n")
            try:
                word = raw_word.decode("utf-8", table.unicode_errors)
            except UnicodeDecodeError:
                raise ValueError(
                    f"{where}: the word {raw_word!r} is not UTF-8; re-encode the words as UTF-8, "
                    f"or pass unicode_errors='replace' (or 'ignore') to read it anyway"
                ) from None
            data = reader.read(vector_bytes)
            if len(data) != vector_bytes:
                raise ValueError(
                    f"{where}: expected {vector_bytes} bytes ({dim} float32) after the word {word!r}, the file ends "
                    f"after {len(data)}; the file is truncated: re-download or regenerate it"
                )
            values = file_order.unpack(data)
            _check_finite(values, where, f"of the word {word!r}")
            table.add(word, data if sys.byteorder == "little" else native_order.pack(*values))
            if table.full:
                return dim
        if not reader.rest_is_blank():
            raise ValueError(
                f"{name}: more data follows record {count} although the header says {count} words; "
                f"fix the count in the header"
            )
    return dim


def read_vector_table(
    path: str | os.PathLike, *, format: str, lowercase: bool, limit: int | None, unicode_errors: str
) -> tuple[VectorTable, int, str]:
    """Read a word-vector file into a `VectorTable`; returns it, the dimension and the format read (arguments as
    `static_vectors.load_static_vectors`)."""
    path = Path(path)
    if format == "auto":
        format = detect_static_vectors_format(path)
    elif format not in STATIC_VECTOR_FORMATS:
        raise ValueError(f"unknown format '{format}'; choose one of: auto, {', '.join(STATIC_VECTOR_FORMATS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of words or None, got {limit}")
    try:
        codecs.lookup_error(unicode_errors)
    except LookupError:
        raise ValueError(f"unknown unicode_errors '{unicode_errors}'; use 'strict', 'replace' or 'ignore'") from None
    table = VectorTable(name=path.name, limit=limit, lowercase=lowercase, unicode_errors=unicode_errors)
    if format == "word2vec-binary":
        dim = _read_binary(path, table)
    else:
        dim = _read_text(path, table, has_header=format != "glove")
    if not table.words:
        raise ValueError(f"{path.name}: no usable words (all were duplicates or unreachable)")
    table.warn_skipped()
    return table, dim, format


__all__ = [
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "UNK_TOKEN",
    "VectorTable",
    "detect_static_vectors_format",
    "read_vector_table",
]
