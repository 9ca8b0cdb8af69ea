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
    (copy / "manifest.json").write_text(json.dumps({**manifest, "format": "another-bundle"}))
    with pytest.raises(BundleError, match="rebuild it"):
        Bundle.load(copy)
    # Newer than this checkout reads (a workstation updated, the robot not): rebuilding it there
    # makes the same version again; the robot's code is what is behind, and the line says so.
    (copy / "manifest.json").write_text(json.dumps({**manifest, "version": 99, "commit": "abc1234"}))
    with pytest.raises(BundleError, match=r"v99 bundle, built by newer code \(commit abc1234\); this platform reads "
                                          r"v1/2: update this checkout to the code that built it$"):
        Bundle.load(copy)


def test_building_over_an_existing_bundle_is_refused_and_a_failed_build_leaves_nothing(bundle_dir, tmp_path):
    from shallowpi.policy.weights import CheckpointError

    with pytest.raises(BundleError, match="already exists"):
        build_bundle(bundle_dir, bundle_dir)
    with pytest.raises(CheckpointError):
        build_bundle(tmp_path / "no-such-ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_the_teacher_recipes_inputs_deploy_as_the_policy_reads_them(tmp_path, rng):
    """The `teacher` preset's switches reach the robot side: a word tokenizer (its
    vocabulary in the config, no file to copy), the centre crop at inference, min-max
    scaling. The numpy preprocessing every backend runs equals the torch policy's inputs."""
    import torch

    from deploy_fixtures import observation
    from shallowpi.deploy.preprocess import Preprocessor
    from shallowpi.policy import Features, Policy, PolicyConfig, load_preset
    from shallowpi.policy.tokenizer import WordTokenizer, build_vocabulary, prompt_ids
    from shallowpi.robots.sim.tasks import make_tasks

    texts = [t.instruction for robot in ("arm", "bimanual", "humanoid") for t in make_tasks(robot).values()]
    cfg = PolicyConfig.from_dict({**load_preset("tiny").to_dict(), "tokenizer": "words", "crop_scale": 0.9,
                                  "normalization": "minmax", "vocabulary": build_vocabulary(texts)})
    torch.manual_seed(0)
    policy = Policy(cfg, Features(7, 7, ["front"]))
    low = rng.normal(-1, 0.2, 7)
    policy.set_stats({key: {"mean": np.zeros(7), "std": np.ones(7), "min": low, "max": low + rng.uniform(0.5, 2, 7)}
                      for key in ("observation.state", "action")})
    policy.save(tmp_path / "ckpt")
    bundle = build_bundle(tmp_path / "ckpt", tmp_path / "bundle", graphs=())
    assert bundle.tokenizer == "words" and not list(bundle.path.glob("tokenizer*"))
    policy = Policy.load(bundle.weights).eval()
    preprocess = Preprocessor(bundle)
    words = WordTokenizer(cfg.vocabulary)
    for size, task in zip([(24, 32), (64, 64), (41, 13)], [*texts[:2], "put the BLUE cube, in the bowl!"]):
        obs = {**observation(rng, size=size), "task": task}
        (images, _, tokens, token_masks), state, _ = policy._model_inputs(obs)
        got = preprocess(obs)
        assert np.abs(got.images - images.numpy()).max() < 1e-5, size
        assert (got.tokens == tokens.numpy()).all() and (got.token_masks == token_masks.numpy()).all(), task
        assert got.tokens[0, : int(got.token_masks.sum())].tolist() == prompt_ids(words, task)[: cfg.max_text_tokens]
        assert np.abs(got.state - state.numpy()).max() < 1e-6



def test_the_robot_side_refuses_an_instruction_the_policy_would_read_cut():
    """The torch policy refuses a prompt over its text budget (check_prompt); the robot's
    numpy tokenizer must not cut it silently instead."""
    from shallowpi.deploy.preprocess import TextTokens
    from shallowpi.errors import ConfigError

    tokens = TextTokens("bytes", 16)
    ids, mask = tokens("pick the cube")  # BOS + 13 bytes + newline = 15 tokens: fits
    assert mask.sum() == 15 and ids[0, 0] == 1
    with pytest.raises(ConfigError, match=r"'put the red cube in the bowl' is 30 tokens with BOS, over .* budget of 16"):
        tokens("put the red cube in the bowl")


def test_an_euler_step_override_reaches_every_backend(tmp_path):
    """build_bundle(num_steps=) unrolls the graphs with it; the backends read the policy's
    config, so it must be written there too, or torch would integrate another count."""
    from shallowpi.deploy.backends import BackendOptions, make_backend

    bundle = build_bundle(tiny_checkpoint(tmp_path / "ckpt"), tmp_path / "bundle", graphs=(), num_steps=5)  # tiny: 3
    assert Bundle.load(bundle.path).config["num_steps"] == 5
    assert make_backend("torch", Bundle.load(bundle.path), BackendOptions(device="cpu")).sampler.num_steps == 5


def test_the_torch_backend_runs_a_bundle_whose_training_tokenizer_file_is_not_on_the_robot(tmp_path):
    """A π0 student names the tokenizer.json it trained with, a path on the training
    machine. The bundle carries its own copy, but the torch backend loaded the whole Policy,
    which builds the tokenizer from that path, and failed on every other machine: the only
    backend of a student too large for the ONNX export."""
    import torch

    from shallowpi.deploy.backends import BackendOptions, make_backend
    from shallowpi.policy import Policy
    from test_language import _word_level_tokenizer

    (tmp_path / "training").mkdir()
    trained_with = _word_level_tokenizer(tmp_path / "training" / "tokenizer.json", ["cube", "pick", "the"])
    ckpt = tiny_checkpoint(tmp_path / "ckpt", tokenizer=str(trained_with))
    reference = Policy.load(ckpt).model.state_dict()
    bundle = build_bundle(ckpt, tmp_path / "bundle", graphs=())
    trained_with.unlink()  # the robot: the training machine's files are not there
    backend = make_backend("torch", Bundle.load(bundle.path), BackendOptions(device="cpu"))
    loaded = backend.model.state_dict()
    assert set(loaded) == set(reference) and all(torch.equal(loaded[k], reference[k]) for k in reference)


def test_a_bundle_is_on_disk_before_it_appears_under_its_name(tmp_path, monkeypatch):
    # The robot's computer loses power as a matter of course: a bundle renamed into place
    # before its files were synced could come back as a folder of empty files.
    from disk_fixtures import SyncWatch

    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    watch = SyncWatch(monkeypatch)
    build_bundle(ckpt, tmp_path / "bundle", graphs=("chunk",))
    placed = watch.rename_to(tmp_path / "bundle")
    assert placed.unsynced == []
    assert str((tmp_path).resolve()) in watch.synced  # the rename itself


def test_a_bundle_names_the_code_that_built_it_and_deploy_rebuilds_one_of_other_code(tmp_path, capsys, caplog):
    """The graphs are traced from the policy's code: a bundle reused after that code changed
    ran the old graphs, reported "(verified)" (a review changed the Euler time grid: the ONNX
    chunk then differed from the torch policy by 0.129). It names the code that built it;
    deploy rebuilds one of other code, and a robot running one says so."""
    import argparse

    from shallowpi.commands.deploy_policy import policy_bundle
    from shallowpi.deploy.bundle import MANIFEST, code_fingerprint, runtime_fingerprint
    from shallowpi.errors import ConfigError

    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    args = argparse.Namespace(policy=ckpt, bundle=tmp_path / "ckpt.bundle")
    built = policy_bundle(args, "torch")
    assert built.code_digest == code_fingerprint() and built.built_by_this_code
    assert "(verified)" in (policy_bundle(args, "torch"), capsys.readouterr().out)[1]
    manifest = json.loads((built.path / MANIFEST).read_text())
    (built.path / MANIFEST).write_text(json.dumps({**manifest, "code_sha256": "0" * 64}))
    assert not Bundle.load(built.path).built_by_this_code  # still verifies: the files are intact
    rebuilt = policy_bundle(args, "torch")
    assert "it was built by other policy, export or robot-side code than this" in capsys.readouterr().out
    assert rebuilt.built_by_this_code
    # Robot-side code changed since (deploy/backends/base.py, say): the robot refuses such a
    # bundle, so the workstation makes it again (it said "(verified)", --bundle-only too, and
    # the robot kept refusing it), leaving no old copy beside it.
    manifest = json.loads((rebuilt.path / MANIFEST).read_text())
    (rebuilt.path / MANIFEST).write_text(json.dumps({**manifest, "runtime_sha256": "1" * 64}))
    rebuilt = policy_bundle(args, "torch")
    assert "it was built by other policy, export or robot-side code than this" in capsys.readouterr().out
    assert rebuilt.runs_here_as_built and not (tmp_path / ".ckpt.bundle.old").exists()
    # The robot side, given the bundle itself. A bundle from before the runtime fingerprint
    # was recorded runs with a warning (and is made again where its checkpoint is).
    manifest = json.loads((rebuilt.path / MANIFEST).read_text())
    assert manifest["runtime_sha256"] == runtime_fingerprint() and "commit" in manifest
    old = {k: v for k, v in manifest.items() if k not in ("runtime_sha256", "commit")}
    (rebuilt.path / MANIFEST).write_text(json.dumps({**old, "code_sha256": "0" * 64}))
    with caplog.at_level("WARNING", logger="shallowpi.commands.deploy_policy"):
        policy_bundle(argparse.Namespace(policy=built.path, bundle=None), "torch")
    assert "was built by other policy, export or preprocessing code than this installation's" in caplog.text
    (rebuilt.path / MANIFEST).write_text(json.dumps(old))
    assert "building the deploy bundle" in (policy_bundle(args, "torch"), capsys.readouterr().out)[1]
    manifest = json.loads((rebuilt.path / MANIFEST).read_text())
    assert manifest["runtime_sha256"] == runtime_fingerprint()
    # Other robot-side code (preprocessing, tokens, action decoding or selection) would feed
    # it other inputs or read its actions otherwise; this bundle has no graphs, so the torch
    # backend runs this checkout's model too: either differing is refused on a robot, naming
    # the commit; a warning in the twin, and with --allow-code-change.
    for changed in ({"runtime_sha256": "1" * 64}, {"code_sha256": "0" * 64}):
        (rebuilt.path / MANIFEST).write_text(json.dumps({**manifest, **changed, "commit": "abc123"}))
        with pytest.raises(ConfigError, match=r"ckpt.bundle was built at commit abc123, whose policy code \(a bundle "
                                              r"without graphs runs this checkout's model through torch\) differs "
                                              r"from this checkout's .*: check out that commit here, or rebuild "
                                              r"the bundle from this checkout"):
            policy_bundle(argparse.Namespace(policy=built.path, bundle=None, sim=None), "torch")
    caplog.clear()
    with caplog.at_level("WARNING", logger="shallowpi.commands.deploy_policy"):
        policy_bundle(argparse.Namespace(policy=built.path, bundle=None, sim="direct"), "torch")
        policy_bundle(argparse.Namespace(policy=built.path, bundle=None, sim=None, allow_code_change=True), "torch")
    assert caplog.text.count("ckpt.bundle was built at commit abc123") == 2 and "(--allow-code-change)" in caplog.text
    # ... and refuses one without the graph its backend runs (--bundle-only approved it).
    from shallowpi.errors import ConfigError

    with pytest.raises(ConfigError, match="holds no chunk graph, which the onnxruntime backend runs: rebuild"):
        policy_bundle(argparse.Namespace(policy=built.path, bundle=None), "onnxruntime")


def test_a_graph_bundle_run_by_the_torch_backend_needs_this_checkouts_policy_code(tmp_path):
    """The torch backend runs this checkout's model on the bundle's weights, not its graphs:
    a bundle with graphs, built by other policy code, ran through it unchecked and unsaid
    (only a bundle without graphs was refused)."""
    import argparse

    from shallowpi.commands.deploy_policy import policy_bundle
    from shallowpi.deploy.bundle import MANIFEST
    from shallowpi.errors import ConfigError

    built = build_bundle(tiny_checkpoint(tmp_path / "ckpt"), tmp_path / "b", graphs=("chunk",))
    manifest = json.loads((built.path / MANIFEST).read_text())
    (built.path / MANIFEST).write_text(json.dumps({**manifest, "code_sha256": "0" * 64, "commit": "abc123"}))
    on_robot = argparse.Namespace(policy=built.path, bundle=None, sim=None)
    assert policy_bundle(on_robot, "onnxruntime").graphs  # its graphs run: as built
    with pytest.raises(ConfigError, match=r"b was built at commit abc123, whose policy code \(the torch backend runs "
                                          r"this checkout's model on its weights, not its graphs\) differs"):
        policy_bundle(on_robot, "torch")


def test_deploy_settings_no_loop_can_use_are_refused():
    """NaN passed every range check (nan < 0 is False): a NaN delay killed the inference
    thread in time.sleep; a whole float warm-up count failed range() after connect."""
    from shallowpi.deploy.settings import ExecutorConfig
    from shallowpi.errors import ConfigError

    for key, value in (("injected_delay_s", float("nan")), ("max_inference_s", float("inf")),
                       ("seam_ticks", float("nan")), ("max_chunk_age_s", "1")):
        with pytest.raises(ConfigError, match=rf"^deploy.{key} must be a finite number, got "):
            ExecutorConfig.from_config({key: value})
    assert ExecutorConfig.from_config({"warmup_runs": 3.0}).warmup_runs == 3
    with pytest.raises(ConfigError, match=r"^deploy.warmup_runs must be a whole number, got 2.5"):
        ExecutorConfig.from_config({"warmup_runs": 2.5})


def test_deployments_started_together_build_one_bundle_and_share_it(tmp_path, capsys):
    """Two deployments of one checkpoint at once (reproduce.py's teacher rollouts run a task
    a core) built its bundle into the same staging folder, and one crashed on a file the
    other had just removed. One builds now; the other waits for it and reuses it."""
    import argparse
    import threading

    from shallowpi.commands.deploy_policy import policy_bundle

    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    start = threading.Barrier(2)
    bundles, errors = [], []

    def deploy() -> None:
        start.wait()
        try:
            bundles.append(policy_bundle(argparse.Namespace(policy=ckpt, bundle=tmp_path / "ckpt.bundle"), "torch"))
        except Exception as exc:  # reported below, beside the other thread's outcome
            errors.append(exc)

    threads = [threading.Thread(target=deploy) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out = capsys.readouterr().out
    assert errors == [] and len(bundles) == 2
    assert out.count("building the deploy bundle") == 1 and out.count("(verified)") == 1
    assert Bundle.load(tmp_path / "ckpt.bundle").checkpoint_digest == bundles[0].checkpoint_digest


def test_a_checkpoint_given_as_its_weights_file_reuses_its_bundle(tmp_path, capsys):
    """`--policy step_N/model.safetensors`: the reuse check hashed step_N/model.safetensors/
    model.safetensors, which is no file, so the bundle was exported again on every run."""
    import argparse

    from shallowpi.commands.deploy_policy import policy_bundle

    weights = tiny_checkpoint(tmp_path / "ckpt") / "model.safetensors"
    args = argparse.Namespace(policy=weights, bundle=tmp_path / "ckpt.bundle")
    assert "building the deploy bundle" in (policy_bundle(args, "torch"), capsys.readouterr().out)[1]
    again = (policy_bundle(argparse.Namespace(policy=weights, bundle=tmp_path / "ckpt.bundle"), "torch"),
             capsys.readouterr().out)[1]
    assert "(verified)" in again and "building" not in again


# A manifest is what makes a bundle's files the builder's: the robot must refuse one that
# leaves out a file it reads, names a file outside the bundle, or is not a manifest at all
# (a reviewer's bundle with "files": {} ran `platform deploy --sim` into a KeyError traceback).


def _entry(file) -> dict:
    """A manifest entry that matches `file` as it is now."""
    from shallowpi.deploy.bundle import sha256_of

    return {"sha256": sha256_of(file), "bytes": file.stat().st_size}


def _edit_table(copy, change) -> None:
    """Rewrite copy's manifest with change(files) applied to its file table."""
    manifest = json.loads((copy / "manifest.json").read_text())
    change(manifest["files"])
    (copy / "manifest.json").write_text(json.dumps(manifest))


def _refused(copy, expected: str) -> None:
    """Bundle.load refuses `copy` in one line matching `expected`, hashing or not."""
    for check_files in (True, False):
        with pytest.raises(BundleError, match=expected) as err:
            Bundle.load(copy, check_files=check_files)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("left_out", ["config.json", "stats.json", "model.safetensors"])
def test_a_manifest_that_leaves_out_a_file_every_bundle_holds_is_refused(bundle_dir, tmp_path, left_out):
    """Only the listed files were hashed: a manifest without model.safetensors ran weights
    nobody built, unchecked."""
    copy = _copy(bundle_dir, tmp_path)
    _edit_table(copy, lambda files: files.pop(left_out))
    (copy / left_out).write_bytes((copy / left_out).read_bytes() + b" ")  # unhashed, it could be anything
    _refused(copy, rf"manifest .* does not list {left_out}, which every bundle holds .*; rebuild it from its "
                   r"checkpoint \(`platform deploy --policy CKPT --bundle-only`\)")


def test_an_unlisted_reference_is_refused(bundle_dir, tmp_path):
    """The robot's backend is checked against reference.npz, read by name: unhashed, one
    edited to match a wrong backend would pass that check."""
    copy = _copy(bundle_dir, tmp_path)
    _edit_table(copy, lambda files: files.pop("reference.npz"))
    _refused(copy, r"reference\.npz is not in the manifest")
    (copy / "reference.npz").unlink()  # a bundle from before references were kept still loads
    assert Bundle.load(copy).graphs == {}


@pytest.mark.parametrize("how", ["dots", "absolute", "link"])
def test_a_manifest_name_outside_the_bundle_is_refused(bundle_dir, tmp_path, how):
    """`graphs/../../../../etc/hostname` with its true sha256 verified, and Bundle.load
    gave it as a graph: any file on the robot could be read as the bundle's."""
    import os

    copy = _copy(bundle_dir, tmp_path)
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"not the policy")
    name = {"dots": "graphs/../../outside.onnx", "absolute": str(outside), "link": "graphs/chunk.onnx"}[how]
    (copy / "graphs").mkdir()  # the path walks through it
    if how == "link":
        (copy / "graphs" / "chunk.onnx").symlink_to(outside)
    assert os.path.samefile(copy / name, outside)
    _edit_table(copy, lambda files: files.update({name: _entry(outside)}))
    _refused(copy, rf"^bundle manifest names '{name}', outside the bundle .*; rebuild it from its checkpoint")


def test_a_link_that_stays_inside_the_bundle_is_a_bundle_file(bundle_dir, tmp_path):
    copy = _copy(bundle_dir, tmp_path)
    (copy / "graphs").mkdir()
    (copy / "graphs" / "chunk.onnx").symlink_to(copy / "stats.json")
    _edit_table(copy, lambda files: files.update({"graphs/chunk.onnx": _entry(copy / "stats.json")}))
    assert Bundle.load(copy).graphs == {"chunk": copy / "graphs" / "chunk.onnx"}


@pytest.mark.parametrize("tokenizer", ["absolute", "unlisted", "policy's own"])
def test_a_tokenizer_file_the_manifest_does_not_list_is_refused(bundle_dir, tmp_path, tokenizer):
    """config.json's tokenizer_file was joined to the bundle's path as given: an absolute
    one, or one the manifest does not list, was read unhashed."""
    copy = _copy(bundle_dir, tmp_path)
    elsewhere = tmp_path / "tokenizer.json"
    elsewhere.write_text("{}")
    config = json.loads((copy / "config.json").read_text())
    if tokenizer == "absolute":
        config["tokenizer_file"] = str(elsewhere)
    elif tokenizer == "unlisted":
        (copy / "tokenizer.json").write_text("{}")
        config["tokenizer_file"] = "tokenizer.json"
    else:  # a path on the training machine, no copy in the bundle
        config["policy"]["tokenizer"] = str(elsewhere)
    (copy / "config.json").write_text(json.dumps(config))
    _edit_table(copy, lambda files: files.update({"config.json": _entry(copy / "config.json")}))
    expected = (r"policy reads its tokenizer from '.*tokenizer\.json', a file outside the bundle"
                if tokenizer == "policy's own" else r"reads its tokenizer from '.*tokenizer\.json', which its manifest "
                                                    r"does not list")
    _refused(copy, expected + r".*; rebuild it from its checkpoint")


@pytest.mark.parametrize("manifest, expected", [
    ([], r"holds a JSON list, not a manifest"),
    ({}, r"is a None vNone bundle"),
    ({"files": None}, r"has no table of files"),
    ({"files": []}, r"has no table of files"),
    ({"files": {"model.safetensors": "abc"}}, r"lists 'model\.safetensors' as 'abc', not"),
    ({"files": {"model.safetensors": {"sha256": "0" * 64}}}, r"lists 'model\.safetensors' as .*, not"),
    ({"files": {"model.safetensors": {"sha256": "0" * 64, "bytes": "12"}}}, r"lists 'model\.safetensors' as"),
    ({"files": {"model.safetensors": {"sha256": None, "bytes": 12}}}, r"lists 'model\.safetensors' as"),
    ({"files": {"model.safetensors": {"sha256": "0" * 64, "bytes": True}}}, r"lists 'model\.safetensors' as"),
    ({"files": {}}, r"does not list config\.json, stats\.json, model\.safetensors"),
])
def test_a_manifest_of_another_shape_is_refused_in_one_line(bundle_dir, tmp_path, manifest, expected):
    copy = _copy(bundle_dir, tmp_path)
    if isinstance(manifest, dict) and manifest:
        manifest = {"format": "shallowpi-deploy-bundle", "version": 1, **manifest}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    _refused(copy, expected)


@pytest.mark.parametrize("file, content", [
    ("config.json", []),
    ("config.json", {"policy": {"tokenizer": "bytes"}}),
    ("config.json", {"policy": "tiny", "features": {}}),
    ("config.json", b"\xff not json"),
    ("stats.json", {"action": {"mean": [0.0], "std": [1.0]}}),
    ("stats.json", {"observation.state": {"mean": ["a"], "std": [1.0]}, "action": {"mean": [0.0], "std": [1.0]}}),
    ("stats.json", {"observation.state": [0.0], "action": {"mean": [0.0], "std": [1.0]}}),
    ("stats.json", {"observation.state": {"mean": [0.0, 1.0], "std": [1.0]}, "action": {"mean": [0], "std": [1]}}),
])
def test_a_hashed_config_or_stats_of_another_shape_is_refused_in_one_line(bundle_dir, tmp_path, file, content):
    """Hashed consistently, a hand-made bundle is still not one build_bundle wrote."""
    copy = _copy(bundle_dir, tmp_path)
    (copy / file).write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    _edit_table(copy, lambda files: files.update({file: _entry(copy / file)}))
    _refused(copy, rf"{file}|config\.json or stats\.json.*; rebuild it from its checkpoint")


def _deployed_with_no_files_listed(tmp_path):
    """Deploy arguments for a checkpoint whose bundle (built) then has "files": {}."""
    import argparse

    from shallowpi.commands.deploy_policy import policy_bundle

    args = argparse.Namespace(policy=tiny_checkpoint(tmp_path / "ckpt"), bundle=tmp_path / "ckpt.bundle")
    built = policy_bundle(args, "torch")
    manifest = json.loads((built.path / "manifest.json").read_text())
    (built.path / "manifest.json").write_text(json.dumps({**manifest, "files": {}}))
    return args, built


def test_deploy_refuses_a_bundle_whose_manifest_lists_no_files_in_one_line(tmp_path):
    """`platform deploy --policy b.bundle --sim` of a manifest with "files": {} ended in a
    KeyError traceback."""
    import argparse

    from shallowpi.commands.deploy_policy import policy_bundle

    _, built = _deployed_with_no_files_listed(tmp_path)
    with pytest.raises(BundleError, match=r"does not list config\.json, stats\.json, model\.safetensors"):
        policy_bundle(argparse.Namespace(policy=built.path, bundle=None, sim="direct"), "torch")


def test_deploy_of_a_checkpoint_rebuilds_its_bundle_whose_manifest_lists_no_files(tmp_path, capsys):
    """Beside a checkpoint, the reuse check (_verified) crashed on the same KeyError instead
    of building the bundle again."""
    from shallowpi.commands.deploy_policy import policy_bundle

    args, built = _deployed_with_no_files_listed(tmp_path)
    capsys.readouterr()
    rebuilt = policy_bundle(args, "torch")
    assert "building the deploy bundle" in capsys.readouterr().out
    assert rebuilt.checkpoint_digest == built.checkpoint_digest
