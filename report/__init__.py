"""The report: results (MLflow runs or exported bundles) -> one DataFrame per source (documented in
report/frame.py) -> a verdict per claim, with its scale, evidence and the runs behind every number.

Rooms: load.py (MLflow -> frame and extras) and bundle.py (portable result files) read results;
studies.py maps claims to the study files that answer them; metrics.py, parts.py, tables.py, stats.py
and verdict.py are what every analysis shares; claims/<topic>.py hold the analyses (found by
discovery); sections.py and sources.py assemble them per source; scale.py states each verdict's scale;
figures.py draws; render.py and markdown.py write; build.py is `bench report`.
Doors point one way: the report reads MLflow, the study files and bench/claims.py, never the training
engine (no torch) nor the CLI.
"""
