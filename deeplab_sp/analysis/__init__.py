"""Measurements of the model and the data: benchmarks, statistics, baselines.

Nothing here is part of the model or the training path; these modules time,
count and compare the real layers and pipelines from the outside.
"""
