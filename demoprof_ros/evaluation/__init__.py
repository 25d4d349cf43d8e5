"""Measuring models: metrics, per-group reports, experiment grids, retrieval, model cards and plots.

May import demoprof_ros.core and demoprof_ros.training (experiment grids train models); never
demoprof_ros.ros. Nothing in the core imports this package.
"""
