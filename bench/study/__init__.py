"""Studies: declarative study files (files.py), the Optuna protocol that schedules their trials, the
executor that trains them, MLflow tracking (tracking.py) and the study extras (extras.py)."""
