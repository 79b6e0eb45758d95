"""Table declarations (RocksDB through rocksdict; memory store in unit tests)."""
