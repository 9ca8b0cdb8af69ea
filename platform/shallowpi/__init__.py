"""Shallow-π: record robot demonstrations, distill a shallow VLA student, run it on a Jetson.

Subpackages follow the data's path (see DESIGN.md): hardware -> robots/teleop -> record ->
data -> policy -> distill -> deploy, with telemetry and tui beside them. Imports point
down that list only.
"""

__version__ = "0.1.0"
