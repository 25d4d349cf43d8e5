"""Fine-tuning on the workstation: datasets, the FLYP contrastive loss, FaRL-style MIM, and the trainer.

May import demoprof_ros.core, and demoprof_ros.evaluation.metrics for its validation scores; never
demoprof_ros.ros. Nothing in the core imports this package.
"""
