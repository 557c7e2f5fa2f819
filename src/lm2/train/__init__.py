"""Training: the typed run config (``config``), one data source per kind (``sources``), the forward in
pieces (``forward``), checkpoints (``checkpoint``) and the loop (``trainer``), behind ``lm2 train``."""
