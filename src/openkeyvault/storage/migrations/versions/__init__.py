"""One revision per file, `NNNN_slug.py`, revision id `NNNN`, each revising the one before."""
