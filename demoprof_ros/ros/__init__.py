"""The ROS 2 shell over the core: the profiler node and its parameters, sensor_msgs conversion, the ROS4HRI
mapping, a camera stand-in (image_source) and a profile printer (profile_echo).

The only package that imports rclpy and ROS messages; nothing else in demoprof_ros imports it (its modules
are entry points). image_conversion and hri hold the message logic as plain Python so it is tested
without ROS.
"""
