"""Reading records (FASTA, CSV, TSV, JSONL) and writing embeddings; static-vector tables (word2vec/GloVe/fastText)."""
