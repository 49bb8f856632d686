"""facegate trainer: offline SDD-FIQA model rebuilds (samples → embed → labels → fit → …)."""
