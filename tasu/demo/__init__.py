"""`tasu demo`: real end-to-end TASU on a CPU with registry-shipped models (see tasu/demo/run.py)."""
