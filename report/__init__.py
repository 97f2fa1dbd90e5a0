"""The report: MLflow runs -> one DataFrame (documented in report/frame.py) -> a verdict per claim.

load.py reads the runs; claims_*.py analyse them (registered in analyses.py) using stats.py and
verdict.py; figures.py draws; render.py writes HTML and Markdown; build.py is `bench report`.
Nothing here imports torch.
"""
