"""Dynamixel servos over Protocol 2.0: control tables, the bus driver and an emulated chain.

    control_table   per-model addresses, sizes, defaults and error words (data, not code)
    port            a PortHandler that sleeps instead of spinning while it waits for replies
    bus             `MotorBus` (the seam) and `DynamixelBus` on the real dynamixel-sdk
    calibration     ticks <-> joint units (radians, metres, 0..1 gripper opening)
    protocol        Protocol 2.0 framing (CRC-16, byte stuffing) for the emulator
    plant           `JointPlant`: what moves an emulated servo's shaft (tracker or physics)
    emulator        servo chains that answer Protocol 2.0 on a pseudo-terminal
"""
