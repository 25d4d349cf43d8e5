"""Fine-tuning on the workstation: datasets, the FLYP contrastive loss, FaRL-style MIM, and the trainer
(config -> data -> loop, validation -> outputs; trainer.py runs the seeds and is `demoprof train`).

May import demoprof_ros.core, and demoprof_ros.evaluation.metrics / .coarse for its validation scores; never
demoprof_ros.ros. Nothing in the core imports this package.
"""
