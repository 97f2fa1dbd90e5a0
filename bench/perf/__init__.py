"""Speed measurement: `bench speed` (speed.py) and `bench gpu-check` (gpucheck.py)."""
