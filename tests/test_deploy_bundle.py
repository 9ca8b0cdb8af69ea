"""Deploy bundles: built from a checkpoint, verified on load, refused when tampered with."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deploy_fixtures import tiny_checkpoint
from shallowpi.deploy.bundle import Bundle, BundleError, build_bundle


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    ckpt = tiny_checkpoint(root / "ckpt", meta={"dataset": "/data/kitchen.zarr"})
    return build_bundle(ckpt, root / "bundle", graphs=()).path


def test_a_bundle_holds_config_stats_weights_and_a_manifest_of_every_file(bundle_dir):
    from shallowpi.policy import Policy

    bundle = Bundle.load(bundle_dir)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    on_disk = {str(p.relative_to(bundle_dir)) for p in bundle_dir.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk >= {"config.json", "stats.json", "model.safetensors"}
    policy = Policy.load(bundle.weights)
    assert np.allclose(bundle.action_stats.std, policy.action_norm.std.numpy())
    assert np.allclose(bundle.state_stats.mean, policy.state_norm.mean.numpy())
    assert bundle.features == {"state_dim": 7, "action_dim": 7, "cameras": ["front"]}
    assert bundle.checkpoint_metadata["dataset"] == "/data/kitchen.zarr"
    assert bundle.tokenizer == "bytes" and len(bundle.digest) == 64


def _copy(bundle_dir, tmp_path):
    import shutil

    return shutil.copytree(bundle_dir, tmp_path / "copy")


@pytest.mark.parametrize("damage, expected", [
    (lambda f: f.write_bytes(f.read_bytes()[:-10]), r"model\.safetensors is truncated or padded"),
    (lambda f: f.write_bytes(f.read_bytes()[:-1] + bytes([f.read_bytes()[-1] ^ 1])),
     r"model\.safetensors was modified"),
    (lambda f: f.unlink(), r"model\.safetensors is missing"),
])
def test_a_tampered_truncated_or_missing_file_is_refused_naming_it(bundle_dir, tmp_path, damage, expected):
    copy = _copy(bundle_dir, tmp_path)
    damage(copy / "model.safetensors")
    with pytest.raises(BundleError, match=expected) as err:
        Bundle.load(copy)
    assert "\n" not in str(err.value)


def test_a_changed_stats_file_is_refused_too(bundle_dir, tmp_path):
    copy = _copy(bundle_dir, tmp_path)
    text = (copy / "stats.json").read_text()
    digit = next(i for i, c in enumerate(text) if c in "123456789")
    (copy / "stats.json").write_text(text[:digit] + str(int(text[digit]) % 9 + 1) + text[digit + 1 :])  # same size
    with pytest.raises(BundleError, match=r"stats\.json was modified"):
        Bundle.load(copy)


def test_no_manifest_or_another_format_is_refused(bundle_dir, tmp_path):
    with pytest.raises(BundleError, match="not a deploy bundle"):
        Bundle.load(tmp_path)
    copy = _copy(bundle_dir, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(BundleError, match="rebuild it"):
        Bundle.load(copy)


def test_building_over_an_existing_bundle_is_refused_and_a_failed_build_leaves_nothing(bundle_dir, tmp_path):
    from shallowpi.policy.weights import CheckpointError

    with pytest.raises(BundleError, match="already exists"):
        build_bundle(bundle_dir, bundle_dir)
    with pytest.raises(CheckpointError):
        build_bundle(tmp_path / "no-such-ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
