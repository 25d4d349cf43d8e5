"""The ROS 2 shell over the plain-Python core: the profiler node, a camera stand-in and a profile printer.

Only this package imports rclpy; everything it does with frames and profiles lives in the core modules
(ros_image, profiler, tracking, hri, annotate), so it is tested and usable without ROS.
"""
