"""The Merkle log: one writer (the sequencer), the SQLite store, proofs, audit."""
