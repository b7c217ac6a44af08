"""Files in and out of the tools: sequence readers (`records`), embedding outputs (`embeddings`), crash-safe writes
(`files`) and static-vector tables (`static_vectors`, word2vec/GloVe/fastText, imported on its own)."""

from .embeddings import (
    EMBEDDING_INDEX_NAME,
    EmbeddingShardWriter,
    iter_embedding_shards,
    load_embeddings,
    write_npy,
    write_npz,
)
from .files import (
    atomic_path,
    atomic_save_safetensors,
    atomic_write,
    atomic_write_json,
    check_writable_output,
    file_sha256,
    remove_leftover_temporaries,
)
from .records import (
    INPUT_FORMATS,
    TABLE_FORMATS,
    InputError,
    Record,
    detect_input_format,
    read_records,
    read_rows,
    records_to_inputs,
)

__all__ = [
    "EMBEDDING_INDEX_NAME",
    "INPUT_FORMATS",
    "TABLE_FORMATS",
    "EmbeddingShardWriter",
    "InputError",
    "Record",
    "atomic_path",
    "atomic_save_safetensors",
    "atomic_write",
    "atomic_write_json",
    "check_writable_output",
    "detect_input_format",
    "file_sha256",
    "iter_embedding_shards",
    "load_embeddings",
    "read_records",
    "read_rows",
    "records_to_inputs",
    "remove_leftover_temporaries",
    "write_npy",
    "write_npz",
]
