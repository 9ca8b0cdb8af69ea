"""Robots: buses + cameras + limits. Arm, bimanual and humanoid are configurations
(configs/robot/*.yaml) of one class, `DynamixelRobot`."""
