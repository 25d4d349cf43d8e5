"""The inference core the robot runs: plain Python, no ROS, no training or evaluation code.

taxonomy / prompts (what is predicted and how it is described), models / model_zoo (loading and fetching
weights), detection (face back-ends behind one interface) and transforms, scorer (zero-shot scoring of
descriptions), tracking (identities and fused estimates over frames), profiler (frame -> profiles), results,
images and annotate. May import: the standard library and third-party packages; never demoprof_ros.training,
.evaluation, .ros or the CLI (checked by `lint-imports`, see .importlinter).
"""
