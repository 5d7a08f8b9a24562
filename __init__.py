"""insightloop: an online self-improvement agent with insight memory."""

import os as _os

# OpenMP's default busy-waiting makes CPU generation 10-40x slower whenever other processes compete
# for the cores; passive waiting costs nothing on an idle machine. Must be set before torch loads.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
