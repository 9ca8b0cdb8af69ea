"""How far each way of computing a chunk lands from the bundle's reference (deploy/reference.py).

Builds the bundle of `--policy` with the chunk and split graphs (reusing `--bundle` only when
this code built it from the same weights, by sha256, with those graphs), then checks the
reference chunks (the torch policy's float32 ones, plain and inpainted) against: the torch backend; onnxruntime on the
unrolled chunk graph and on prefix + step graphs; the torch backend under CPU autocast in
fp16 and in bf16 (mixed precision: matmuls in 16 bits, softmax and norms in float32, as a
TensorRT engine builds them); and, for scale, the same observation with other draws of
noise (the policy's own spread). Every number is the largest difference over the chunk in
action standard deviations, the unit of `deploy.parity_tolerance`.

    PYTHONPATH=platform python tools/bench/deploy_parity.py --policy robots/arm/teacher   # JSON in .bench/
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "platform"))

from shallowpi.deploy.backends import BackendOptions, make_backend  # noqa: E402
from shallowpi.deploy.bundle import Bundle, build_bundle, sha256_of  # noqa: E402
from shallowpi.deploy.export_reference import reference_observation  # noqa: E402
from shallowpi.deploy.reference import DEFAULT_TOLERANCE_STD, check  # noqa: E402

GRAPHS = ("chunk", "prefix", "step")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", default="robots/arm/teacher", help="checkpoint folder (default the arm's teacher)")
    ap.add_argument("--bundle", type=Path, default=ROOT / ".bench" / "deploy_parity.bundle",
                    help="bundle folder, built when missing, not this code's, or not of --policy's weights")
    ap.add_argument("--draws", type=int, default=8, help="other draws of noise for the policy's own spread")
    ap.add_argument("--out", type=Path, default=ROOT / ".bench" / "deploy_parity.json")
    args = ap.parse_args()
    torch.set_num_threads(1)

    t0 = time.perf_counter()
    bundle = Bundle.load(args.bundle) if (args.bundle / "manifest.json").is_file() else None
    policy = Path(args.policy).expanduser()
    weights_sha = sha256_of(policy if policy.is_file() else policy / "model.safetensors")
    if (bundle is None or not bundle.built_by_this_code or bundle.checkpoint_digest != weights_sha
            or not all(g in bundle.graphs for g in GRAPHS)):
        bundle = build_bundle(args.policy, args.bundle, graphs=GRAPHS, overwrite=True)
        built = True
    else:
        built = False
    built_s = time.perf_counter() - t0

    rows: dict[str, float] = {}
    rows["torch, float32"] = check(make_backend("torch", bundle), tolerance_std=1e9).error_std
    rows["onnxruntime chunk graph, float32"] = check(make_backend("onnxruntime", bundle), 1e9).error_std
    rows["onnxruntime prefix + step graphs, float32"] = check(
        make_backend("onnxruntime", bundle, BackendOptions(graph="split")), 1e9).error_std
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        with torch.autocast("cpu", dtype=dtype):
            rows[f"torch, CPU autocast {name}"] = check(make_backend("torch", bundle), 1e9).error_std

    backend = make_backend("torch", bundle)
    obs = reference_observation(bundle)
    std = bundle.action_stats.std[: backend.real_action_dim]

    def chunk(seed: int) -> np.ndarray:
        noise = np.random.default_rng(seed).standard_normal((1, backend.chunk_len, backend.action_dim))
        return backend.infer(obs, noise=noise.astype(np.float32))

    first = chunk(0)
    spread = np.stack([np.abs(chunk(s) - first).max(0) / std for s in range(1, args.draws + 1)])  # [draws, A]
    per_joint = np.median(spread, 0)
    names = json.loads(bundle.checkpoint_metadata.get("joint_names") or "[]") or [f"action {i}" for i in range(len(std))]

    print(f"bundle {bundle.path} ({'built' if built else 'reused'} in {built_s:.0f} s), tolerance "
          f"{DEFAULT_TOLERANCE_STD} action std")
    print("| computed by | largest difference from the reference, action std |\n|---|---:|")
    for name, error in rows.items():
        print(f"| {name} | {error:.1e} |")
    print(f"| another draw of noise: median joint (range over joints), median of {args.draws} draws | "
          f"{np.median(per_joint):.3f} ({per_joint.min():.3f}-{per_joint.max():.3f}) |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "policy": str(args.policy), "bundle_sha256": bundle.digest, "tolerance_std": DEFAULT_TOLERANCE_STD,
        "error_std": rows, "noise_draw_spread_std": dict(zip(names, per_joint.round(4).tolist())),
        "bundle_seconds": round(built_s, 1)}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
