"""Inverse kinematics by damped least squares on MuJoCo's site Jacobian (`mj_jacSite`).

Solved on a scratch `MjData`, so planning never disturbs the simulation. Targets are a
site position and a yaw about the world vertical with the approach axis pointing down
(top-down grasps, which are all the scripted experts use). A weak pull toward a rest
posture settles redundant arms (7-DoF humanoid arms) into a natural elbow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def yaw_down(yaw: float) -> np.ndarray:
    """Rotation of a site whose -z points down and whose x axis points at `yaw`."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """World-frame rotation vector taking `current` to `target` (both 3x3)."""
    r = target @ current.T
    angle = np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    norm = np.linalg.norm(axis)
    if norm < 1e-9:
        return np.zeros(3)
    return axis / norm * angle


class IKSolver:
    """Damped least-squares IK for one site over the named joints (the module docstring;
    Wampler 1986, Nakamura & Hanafusa 1986).

    Joint limits come from the model, or from `ranges` (rad, or m for slide joints) where
    given. Works on its own MjData, so solving never touches the simulation's state.
    """

    def __init__(
        self,
        mujoco: Any,
        model: Any,
        site: str,
        joints: Sequence[str],
        ranges: Mapping[str, tuple[float, float]] | None = None,
    ):
        self._mj = mujoco
        self.model = model
        self.data = mujoco.MjData(model)
        self.site = model.site(site).id
        self.qpos = np.array([model.joint(j).qposadr[0] for j in joints])
        self.dof = np.array([model.joint(j).dofadr[0] for j in joints])
        self.lower = model.jnt_range[[model.joint(j).id for j in joints], 0]
        self.upper = model.jnt_range[[model.joint(j).id for j in joints], 1]
        for i, joint in enumerate(joints):
            if ranges and joint in ranges:
                self.lower[i], self.upper[i] = ranges[joint]
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def solve(
        self,
        q_all: np.ndarray,
        pos: np.ndarray,
        rot: np.ndarray,
        q_start: np.ndarray,
        rest: np.ndarray | None = None,
        iterations: int = 30,
        damping: float = 0.05,
        rot_weight: float = 0.4,
    ) -> tuple[np.ndarray, float]:
        """Joint values (this solver's joints) putting the site at `pos`/`rot`, starting from
        `q_start`; other joints stay at `q_all` (the full qpos). Returns (q, the site's
        distance from `pos` at that q, metres)."""
        mj, m, d = self._mj, self.model, self.data
        d.qpos[:] = q_all
        q = np.array(q_start, dtype=np.float64)
        err_pos = np.inf
        for _ in range(iterations):
            d.qpos[self.qpos] = q
            mj.mj_kinematics(m, d)
            mj.mj_comPos(m, d)
            p = d.site_xpos[self.site]
            r = d.site_xmat[self.site].reshape(3, 3)
            e = np.concatenate([pos - p, rot_weight * rotation_error(rot, r)])
            err_pos = float(np.linalg.norm(e[:3]))
            if err_pos < 1e-4 and np.linalg.norm(e[3:]) < 1e-3:
                break
            mj.mj_jacSite(m, d, self._jacp, self._jacr, self.site)
            jac = np.vstack([self._jacp[:, self.dof], rot_weight * self._jacr[:, self.dof]])
            jjt = jac @ jac.T + damping**2 * np.eye(6)
            dq = jac.T @ np.linalg.solve(jjt, e)
            if rest is not None:
                # Null-space pull toward the rest posture (only matters for redundant arms).
                null = np.eye(len(q)) - np.linalg.pinv(jac) @ jac
                dq += null @ (0.1 * (rest - q))
            step = np.max(np.abs(dq))
            if step > 0.3:
                dq *= 0.3 / step
            q = np.clip(q + dq, self.lower, self.upper)
        else:  # out of iterations: the error reported must be the returned q's, not the last iterate's
            d.qpos[self.qpos] = q
            mj.mj_kinematics(m, d)
            err_pos = float(np.linalg.norm(pos - d.site_xpos[self.site]))
        return q, err_pos
