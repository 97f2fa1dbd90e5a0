"""The report: MLflow runs -> one DataFrame (documented in report/frame.py) -> a verdict per claim.

load.py reads the runs (and the study extras, e.g. the optimizer trajectories: frame.py, "Extras");
claims_*.py analyse them (registered in analyses.py) using stats.py and verdict.py; trajectories.py
describes the optimizer study's 2-D paths; figures.py draws; render.py writes HTML and Markdown;
build.py is `bench report`. Nothing here imports torch.
"""
