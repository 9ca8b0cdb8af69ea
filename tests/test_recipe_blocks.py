"""The teacher recipe's building blocks (configs/policy/teacher.yaml), each on its own:
the conv stem's token grid, random crop in training vs the center crop at test, min-max
scaling's round trip, the EMA update, and the recipe's shape (π0's 18 + 18 layers)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from policy_fakes import FakeChunks
from shallowpi.errors import ConfigError
from shallowpi.policy import Features, Pi0Model, Policy, load_preset
from shallowpi.policy.augment import crop
from shallowpi.policy.conv_stem import ConvStem
from shallowpi.policy.policy import Normalizer
from shallowpi.train.objective import FlowMatchingObjective
from shallowpi.train.trainer import TrainConfig, Trainer, ema_decay, lr_at

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_teacher_keeps_pi0s_structure():
    cfg = load_preset("teacher")
    assert cfg.vlm.depth == cfg.expert.depth == 18 and cfg.num_steps == 10
    assert cfg.vision.stem == "conv" and cfg.crop_scale < 1.0 and cfg.normalization == "minmax"
    assert cfg.tokenizer == "words"


@pytest.mark.parametrize("patch", [2, 8, 16])
def test_the_conv_stem_gives_the_patchify_token_grid(patch):
    stem = ConvStem(width=32, patch_size=patch)
    out = stem(torch.randn(3, 3, 64, 64))
    assert out.shape == (3, 32, 64 // patch, 64 // patch)
    convs = [m for m in stem.convs if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == int(np.log2(patch)) and all(c.stride == (2, 2) and c.kernel_size == (3, 3) for c in convs)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in stem.convs)


def test_the_conv_stem_in_the_model_and_its_refusals():
    cfg = dataclasses.replace(load_preset("teacher").with_depth(1))
    vision = Pi0Model(cfg).vision
    assert isinstance(vision.patch_embed, ConvStem)
    tokens = vision(torch.randn(2, 3, 64, 64))
    assert tokens.shape == (2, cfg.vision.num_patches, cfg.vlm.width) == (2, 16, 64)
    with pytest.raises(ConfigError, match="power-of-two patch_size"):
        ConvStem(32, 12)
    with pytest.raises(ConfigError, match=r"unknown vision\.stem 'resnet'"):
        dataclasses.replace(cfg.vision, stem="resnet")


def test_random_crop_in_training_center_crop_at_test():
    images = torch.arange(2 * 20 * 30 * 3, dtype=torch.int32).reshape(2, 20, 30, 3).to(torch.uint8)
    centre = crop(images, 0.9, random=False)
    assert centre.shape == (2, 18, 27, 3)
    assert torch.equal(centre, images[:, 1:19, 1:28])  # (20 - 18) // 2, (30 - 27) // 2
    g = torch.Generator().manual_seed(0)
    crops = [crop(images, 0.9, random=True, generator=g) for _ in range(8)]
    assert all(c.shape == centre.shape for c in crops)
    assert any(not torch.equal(c, centre) for c in crops)  # shifted
    assert torch.equal(crop(images, 1.0, random=True), images)  # off


def test_the_policy_crops_randomly_only_while_training():
    cfg = dataclasses.replace(load_preset("tiny"), crop_scale=0.8)
    policy = Policy(cfg, Features(2, 2, ["front"]))
    item = FakeChunks(size=(40, 40))[0]
    item["observation.images.front"] = torch.randint(0, 255, (40, 40, 3), dtype=torch.uint8)
    images = lambda: policy._model_inputs(item)[0][0]  # noqa: E731
    policy.eval()
    assert torch.equal(images(), images())  # the center crop, every time
    test_view = images()
    policy.train()
    torch.manual_seed(1)
    assert any(not torch.equal(images(), test_view) for _ in range(5))


def test_min_max_scaling_round_trip_and_absolute_gripper():
    norm = Normalizer(3)
    # joint in [-0.4, 1.2], a gripper that opens and closes fully, a joint that never moved
    norm.set_range([-0.4, 0.0, 0.5], [1.2, 1.0, 0.5])
    x = torch.tensor([[-0.4, 0.0, 0.5], [1.2, 1.0, 0.5], [0.4, 0.25, 0.5]])
    assert norm.std[2] == 1.0
    y = norm(x)
    torch.testing.assert_close(y[:2], torch.tensor([[-1.0, -1.0, 0.0], [1.0, 1.0, 0.0]]))
    assert y[2, 1] == pytest.approx(-0.5)  # the gripper's absolute 0..1, as -1..1
    torch.testing.assert_close(norm.inverse(y), x)


def test_a_joint_that_barely_moved_is_not_scaled_up_by_its_tiny_spread():
    """The arm's passive wrist roll moves 0.0017 rad (std) in the expert's demonstrations;
    scaled by that, a 0.05 rad nudge in closed loop reaches the model as ~30 std."""
    norm = Normalizer(2)
    norm.set([0.0, 0.0], [0.3, 0.0017])
    nudged = norm(torch.tensor([[0.0, 0.05]]))
    assert nudged[0, 1] == pytest.approx(5.0)  # 0.05 / the 0.01 floor, not 0.05 / 0.0017
    norm.set_range([-0.003, 0.0], [0.001, 0.0])  # min-max: a 4 mrad range, a joint that never moved
    assert norm.std.tolist() == pytest.approx([0.01, 1.0])  # floored; never moved: unscaled


def test_the_policy_scales_by_the_range_with_minmax():
    data = FakeChunks()
    cfg = dataclasses.replace(load_preset("tiny"), normalization="minmax")
    policy = Policy(cfg, Features.from_sample(data[0]))
    policy.set_stats(data.stats())
    stats = data.stats()["action"]
    scaled = policy.action_norm(torch.as_tensor(np.stack([stats["min"], stats["max"]])))
    torch.testing.assert_close(scaled, torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    with pytest.raises(ConfigError, match=r"unknown policy\.normalization 'robust'"):
        dataclasses.replace(cfg, normalization="robust")


def test_the_ema_is_updated_every_step(tmp_path):
    data = FakeChunks()
    torch.manual_seed(0)
    policy = Policy(load_preset("tiny"), Features.from_sample(data[0]))
    policy.set_stats(data.stats())
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    cfg = TrainConfig(steps=1, batch_size=4, save_every=1, workers=0, progress=False, tensorboard=False, ema=0.9)
    trainer = Trainer(FlowMatchingObjective(policy), data, cfg, tmp_path / "run")
    trainer.fit()
    after = policy.state_dict()
    moved = [k for k in after if after[k].dtype.is_floating_point and not torch.equal(after[k], before[k])]
    assert moved
    for k in moved:  # step 0 decays at min(0.9, 1 / 10): ema = 0.1 * initial + 0.9 * after
        torch.testing.assert_close(trainer.ema[k], 0.1 * before[k] + 0.9 * after[k])


def test_the_ema_forgets_the_initialization():
    """What the averaged weights keep of the random initialization after n steps is the
    product of the decays: with the warm-up it is gone long before the rate's own horizon
    (it used to be rate**n: 13 % at step 2000 with 0.999)."""
    kept = [math.prod(ema_decay(s, 0.999) for s in range(n)) for n in (1, 100, 2000)]
    assert kept[0] == pytest.approx(0.1)
    assert kept[1] < 1e-3 and kept[2] < 1e-6
    assert ema_decay(100_000, 0.999) == 0.999  # the rate itself once warmed up


def test_the_teacher_schedule_warms_up_then_decays_by_cosine():
    train = load_preset("teacher")  # the model part; the schedule is the preset's train: section
    from omegaconf import OmegaConf

    from shallowpi.config import config_dir

    section = OmegaConf.to_container(OmegaConf.load(config_dir() / "policy" / "teacher.yaml"))["train"]
    cfg = TrainConfig(**section)
    assert train.name == "teacher" and cfg.ema == 0.999
    assert lr_at(0, cfg) < lr_at(cfg.warmup_steps - 1, cfg) < cfg.lr
    assert lr_at(cfg.warmup_steps, cfg) == pytest.approx(cfg.lr)
    assert lr_at(cfg.steps - 1, cfg) == pytest.approx(cfg.min_lr, rel=1e-3)
