"""Spatial-softmax keypoints (policy/keypoints.py): the points are where the features are,
the encoder gives them to the ViT as one more token per camera, and the paths that count
tokens (prefix length, distillation, ONNX export) count it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from deploy_fixtures import tiny_checkpoint
from policy_fakes import FakeChunks
from shallowpi.errors import ConfigError
from shallowpi.policy import Features, Pi0Model, Policy, load_preset
from shallowpi.policy.conv_stem import ConvStem
from shallowpi.policy.keypoints import KEYPOINT_BLOCKS, SpatialSoftmax, grid_coordinates

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _keypoint_preset(keypoints: int = 3):
    """`tiny` with the conv stem (16x16 images, patch 8: two 8x8 ... 4x4 maps) and keypoints."""
    cfg = load_preset("tiny")
    return dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, stem="conv", patch_size=8,
                                                               stem_channels=4, keypoints=keypoints))


def test_the_points_are_the_softmax_weighted_cell_centres():
    torch.manual_seed(0)
    layer = SpatialSoftmax(channels=5, keypoints=3)
    with torch.no_grad():
        layer.log_temperature.fill_(np.log(0.5))
    features = torch.randn(2, 5, 4, 6)
    points = layer(features)

    logits = np.einsum("kc,bchw->bkhw", layer.maps.weight[:, :, 0, 0].detach().numpy(), features.numpy())
    logits = (logits + layer.maps.bias.detach().numpy()[None, :, None, None]) / 0.5
    probs = np.exp(logits - logits.max(axis=(2, 3), keepdims=True))
    probs /= probs.sum(axis=(2, 3), keepdims=True)
    xs = (2 * np.arange(6) + 1) / 6 - 1  # cell centres, align_corners=False
    ys = (2 * np.arange(4) + 1) / 4 - 1
    expected = np.stack([np.einsum("bkhw,w->bk", probs, xs), np.einsum("bkhw,h->bk", probs, ys)], axis=-1)
    assert points.shape == (2, 3, 2)
    np.testing.assert_allclose(points.detach().numpy(), expected, atol=1e-6)


def test_a_point_follows_a_red_square_across_the_image():
    """One map that reads red minus green: its point is the square's centre, wherever it is."""
    layer = SpatialSoftmax(channels=3, keypoints=1)
    with torch.no_grad():
        layer.maps.weight.copy_(torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1))
        layer.maps.bias.zero_()
        layer.log_temperature.fill_(np.log(0.05))  # sharp: the red cells take the mass
    for top, left in [(2, 3), (10, 1), (5, 12)]:
        image = torch.zeros(1, 3, 16, 16)
        image[0, 0, top : top + 3, left : left + 3] = 1.0
        x, y = layer(image)[0, 0].tolist()
        assert x == pytest.approx((2 * (left + 1) + 1) / 16 - 1, abs=1e-3)  # the square's middle cell
        assert y == pytest.approx((2 * (top + 1) + 1) / 16 - 1, abs=1e-3)


def test_grid_coordinates_span_the_cells_centres():
    x, y = grid_coordinates(2, 4)
    assert x.tolist() == [-0.75, -0.25, 0.25, 0.75] * 2
    assert y.tolist() == [-0.5] * 4 + [0.5] * 4


def test_the_stem_hands_over_its_stride_4_map():
    stem = ConvStem(width=32, patch_size=16, channels=8)
    images = torch.randn(2, 3, 64, 64)
    grid, early = stem.forward_with_map(images, KEYPOINT_BLOCKS)
    assert torch.equal(grid, stem(images))  # the same grid as without the tap
    assert early.shape == (2, stem.channels_after(2), 16, 16) == (2, 16, 16, 16)
    with pytest.raises(ValueError, match="has 4 stride-2 blocks"):
        stem.forward_with_map(images, 5)
    with pytest.raises(ValueError, match="has 4 stride-2 blocks"):
        stem.channels_after(0)


def test_the_encoder_adds_one_token_per_camera_and_trains_the_points():
    cfg = _keypoint_preset()
    assert cfg.vision.num_tokens == cfg.vision.num_patches + 1 == 5
    assert cfg.prefix_len == cfg.num_cameras * 5 + cfg.max_text_tokens
    model = Pi0Model(cfg)
    tokens = model.vision(torch.randn(2, 3, 16, 16))
    assert tokens.shape == (2, 5, cfg.vlm.width)
    # The keypoint token alone: its gradient reaches its maps, its temperature and the stem's
    # early blocks, not the stem's later ones (the points read the stride-4 map).
    stem = model.vision.patch_embed
    _, early = stem.forward_with_map(torch.randn(2, 3, 16, 16), KEYPOINT_BLOCKS)
    model.vision.keypoints(early).sum().backward()
    assert model.vision.keypoints.points.maps.weight.grad.abs().sum() > 0
    assert model.vision.keypoints.points.log_temperature.grad != 0
    assert stem.convs[0].weight.grad.abs().sum() > 0
    assert stem.convs[3 * KEYPOINT_BLOCKS].weight.grad is None and stem.proj.weight.grad is None


def test_a_missing_cameras_keypoint_token_is_masked_with_its_patches():
    cfg = dataclasses.replace(_keypoint_preset(), num_cameras=2)
    model = Pi0Model(cfg).eval()
    images = torch.rand(1, 2, 3, 16, 16) * 2 - 1
    tokens = torch.zeros(1, cfg.max_text_tokens, dtype=torch.long)
    with torch.no_grad():
        prefix = model.embed_prefix(images, torch.tensor([[True, False]]), tokens, torch.ones_like(tokens, dtype=torch.bool))
    per_camera = cfg.vision.num_tokens
    assert prefix.embs.shape[1] == cfg.prefix_len
    assert prefix.pad[0, :per_camera].all() and not prefix.pad[0, per_camera : 2 * per_camera].any()


def test_keypoints_are_off_by_default_and_refused_without_the_conv_stem():
    assert all(load_preset(name).vision.keypoints == 0 for name in ("tiny", "small", "teacher", "pi0"))
    cfg = load_preset("tiny")  # patch stem
    with pytest.raises(ConfigError, match=r"needs vision\.stem=conv and patch_size >= 4"):
        dataclasses.replace(cfg.vision, keypoints=4)
    with pytest.raises(ConfigError, match=r"needs vision\.stem=conv and patch_size >= 4"):
        dataclasses.replace(cfg.vision, stem="conv", patch_size=2, keypoints=4)
    with pytest.raises(ConfigError, match="keypoints must be >= 0"):
        dataclasses.replace(cfg.vision, keypoints=-1)


def test_a_policy_with_keypoints_trains_saves_loads_and_is_cut_whole(tmp_path):
    from shallowpi.distill.student import build_student, uniform_layers
    from shallowpi.train.objective import FlowMatchingObjective
    from shallowpi.train.trainer import TrainConfig, Trainer

    data = FakeChunks(size=(16, 16))
    torch.manual_seed(0)
    policy = Policy(_keypoint_preset(), Features.from_sample(data[0]))
    policy.set_stats(data.stats())
    before = policy.model.vision.keypoints.points.maps.weight.detach().clone()
    cfg = TrainConfig(steps=3, batch_size=4, save_every=3, workers=0, progress=False, tensorboard=False)
    Trainer(FlowMatchingObjective(policy), data, cfg, tmp_path / "run").fit()
    assert not torch.equal(policy.model.vision.keypoints.points.maps.weight, before)  # trained

    loaded = Policy.load(tmp_path / "run" / "checkpoints" / "step_000003").eval()
    assert loaded.cfg.vision.keypoints == 3
    assert {k for k in loaded.model.state_dict() if k.startswith("vision.keypoints.")} == {
        "vision.keypoints.points.maps.weight", "vision.keypoints.points.maps.bias",
        "vision.keypoints.points.log_temperature", "vision.keypoints.proj.weight", "vision.keypoints.proj.bias"}
    torch.testing.assert_close(loaded.model.vision.keypoints.points.maps.weight,
                               policy.model.vision.keypoints.points.maps.weight)
    student, _ = build_student(loaded, uniform_layers(loaded.cfg.depth, 1))
    assert torch.equal(student.model.vision.keypoints.points.maps.weight,
                       loaded.model.vision.keypoints.points.maps.weight)


def test_the_onnx_graphs_of_a_policy_with_keypoints_match_torch(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from shallowpi.deploy.bundle import build_bundle
    from shallowpi.deploy.export_onnx import PARITY_TOL, parity

    checkpoint = tiny_checkpoint(tmp_path / "ckpt", vision=dataclasses.asdict(_keypoint_preset().vision))
    bundle = build_bundle(checkpoint, tmp_path / "bundle")
    assert Policy.load(bundle.weights).cfg.vision.keypoints == 3
    diffs = parity(Policy.load(bundle.weights), bundle.graphs, seed=3)
    assert diffs and all(d <= PARITY_TOL for d in diffs.values()), diffs
