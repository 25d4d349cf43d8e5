"""demoprof_ros: perceived demographic user modelling for social robots with CLIP / FaRL.

The core (taxonomy, models, detection, scoring, tracking, training, evaluation) is plain Python; only
`demoprof_ros.ros` imports rclpy.
"""

__version__ = "0.1.0"
