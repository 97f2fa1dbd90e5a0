"""The training engine: one loop for every task (loop.py), the tasks (classification, localization,
transfer), the registries of models and components, per-layer diagnostics and the device fast paths."""
