"""Teleoperation: sources of actions in the follower's joint space.

    base        the `Teleoperator` protocol
    leader      leader arms moved by hand, read through their own servo buses
    keyboard    jogging joints from the keyboard
"""
