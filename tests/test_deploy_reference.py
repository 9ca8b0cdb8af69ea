"""The bundle's reference chunks: written with the bundle, matched by every backend here, and a
backend that computes other chunks refused before anything connects."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from deploy_fixtures import tiny_checkpoint
from shallowpi.deploy.backends import make_backend
from shallowpi.deploy.bundle import MANIFEST, Bundle, build_bundle, write_manifest
from shallowpi.deploy.reference import REFERENCE, ParityError, check


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    return build_bundle(tiny_checkpoint(root / "ckpt"), root / "bundle", graphs=("chunk",)).path


def _edited(bundle_dir, tmp_path, **changes) -> Bundle:
    """A copy of the bundle whose reference has `changes` (name -> function of the array),
    its manifest written again, as a bundle built that way would be."""
    copy = shutil.copytree(bundle_dir, tmp_path / "copy")
    with np.load(copy / REFERENCE) as saved:
        arrays = {name: changes.get(name, lambda a: a)(saved[name]) for name in saved.files}
    np.savez_compressed(copy / REFERENCE, **arrays)
    manifest = json.loads((copy / MANIFEST).read_text())
    write_manifest(copy, {k: v for k, v in manifest.items() if k not in ("format", "version", "files")},
                   manifest["version"])
    return Bundle.load(copy)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_every_backend_here_computes_the_bundles_reference_chunk(bundle_dir, backend):
    bundle = Bundle.load(bundle_dir)
    assert REFERENCE in json.loads((bundle_dir / MANIFEST).read_text())["files"]  # verified like the weights
    parity = check(make_backend(backend, bundle))
    assert parity is not None and parity.error_std < 1e-3, parity
    assert "action std from the torch policy's float32 chunks at the largest" in parity.line()
    with np.load(bundle_dir / REFERENCE) as saved:  # the inpainting pulled its chunk away from the plain one
        assert np.abs(saved["inpainted"] - saved["actions"]).max() > 0.1 * bundle.action_stats.std.min()


@pytest.mark.parametrize("chunk", ["actions", "inpainted"])
def test_a_chunk_a_tenth_of_a_std_off_the_reference_is_refused_naming_where(bundle_dir, tmp_path, chunk):
    """As a TensorRT fp16 engine that overflows would compute: here the stored reference moved
    instead, a tenth of a std at one step of one joint, in the plain chunk or in the
    inpainted one (real-time chunking's path, every chunk after a run's first)."""
    std = Bundle.load(bundle_dir).action_stats.std

    def shifted(actions):
        actions = actions.copy()
        actions[3, 2] += 0.1 * std[2]
        return actions

    bundle = _edited(bundle_dir, tmp_path, **{chunk: shifted})
    which = "plain" if chunk == "actions" else "inpainted"
    with pytest.raises(ParityError, match=r"the onnxruntime backend on .* differs from the torch policy's float32 "
                                          r"chunk by 0\.10\d action std \(> deploy\.parity_tolerance 0\.05\) at step 3 "
                                          rf"of the {which} chunk, action 2") as err:
        check(make_backend("onnxruntime", bundle))
    assert "\n" not in str(err.value)
    assert check(make_backend("onnxruntime", bundle), tolerance_std=0.2).error_std == pytest.approx(0.1, abs=1e-3)


def test_a_non_finite_chunk_is_refused_and_a_bundle_without_a_reference_is_not_checked(bundle_dir, tmp_path):
    nan_noise = _edited(bundle_dir, tmp_path / "nan", noise=lambda noise: np.full_like(noise, np.nan))
    with pytest.raises(ParityError, match="computes a non-finite plain chunk from the bundle's reference observation"):
        check(make_backend("onnxruntime", nan_noise))
    old = shutil.copytree(bundle_dir, tmp_path / "old")
    (old / REFERENCE).unlink()
    manifest = json.loads((old / MANIFEST).read_text())
    write_manifest(old, {k: v for k, v in manifest.items() if k not in ("format", "version", "files")},
                   manifest["version"])
    assert check(make_backend("onnxruntime", Bundle.load(old))) is None
