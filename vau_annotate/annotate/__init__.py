"""Building blocks, each usable alone: video decoding, model backends, the call engine, the ledger, checks."""
