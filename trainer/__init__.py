"""facegate trainer: offline SDD-FIQA model rebuilds (samples → embed → labels → fit → …)."""

import os

# OpenMP threads that wait for work sleep instead of spinning (unless the user chose
# otherwise). Measured on a 2-core machine shared with other jobs: torch's two spinning
# threads made a head-only training step 6.5× slower than sleeping ones (and no faster
# than one thread on a quiet core). Read once, when torch's OpenMP runtime loads, so it
# is set here, before anything imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
