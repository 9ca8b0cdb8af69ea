"""The prompt path never cuts an instruction silently, and instructions the policy could
not tell apart are refused before training."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

from policy_fakes import FakeChunks
from shallowpi.errors import ConfigError
from shallowpi.policy import Features, Policy, load_preset
from shallowpi.policy.tokenizer import (
    ByteTokenizer,
    WordTokenizer,
    build_vocabulary,
    check_prompts,
    make_tokenizer,
    tokenize,
)
from shallowpi.robots.sim.tasks import TASK_ROBOTS, make_tasks
from shallowpi.train.finetune import finetune
from shallowpi.train.trainer import TrainConfig

ALL_TASK_TEXTS = sorted({t.instruction for r in TASK_ROBOTS for t in make_tasks(r).values()})


def test_the_byte_budget_of_16_would_cut_the_instruction_and_is_refused():
    tok = ByteTokenizer()
    ids, _ = tokenize(tok, ["put the red cube in the bowl"], 16)  # the raw contract: cut
    assert tok.decode(ids[0, 1:].tolist()) == "put the red cub"
    with pytest.raises(ConfigError) as err:
        check_prompts(tok, ["put the red cube in the bowl"], 16)
    assert str(err.value) == (
        "the instruction 'put the red cube in the bowl' is 30 tokens with BOS, over the policy's text "
        "budget of 16 (it would be cut); raise policy.max_text_tokens to 30 or use policy.tokenizer=words"
    )


def _word_level_tokenizer(path, words):
    """A local tokenizer.json (Hugging Face `tokenizers`, as a PaliGemma one is read): one id
    a lower-cased word of `words`, every other word the one unknown id."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {"<pad>": 0, "[UNK]": 1, "<bos>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizers.Lowercase(), pre_tokenizers.Whitespace()
    tok.save(str(path))
    return path


def test_instructions_that_encode_alike_are_refused_unless_they_are_the_same_words(tmp_path):
    # A tokenizer that reads "red" and "blue" as one unknown token cannot tell these apart.
    file = make_tokenizer(str(_word_level_tokenizer(tmp_path / "tokenizer.json", ["bowl", "cube", "in", "put", "the"])))
    with pytest.raises(ConfigError, match=re.escape("tasks 'put the blue cube in the bowl' and 'put the red cube "
                                                    "in the bowl' encode to the same tokens")):
        check_prompts(file, ["put the red cube in the bowl", "put the blue cube in the bowl"], 16)
    # Typed differently at two sessions, the same words are one instruction: trained together.
    words = WordTokenizer(build_vocabulary(["put the red cube in the bowl"]))
    check_prompts(words, ["put the red cube in the bowl", "Put the red cube in the bowl."], 16)
    check_prompts(file, ["put the cube in the bowl", "Put the cube  in the bowl"], 16)
    with pytest.raises(ConfigError, match=r"task words \['blue'\] are not in the policy's word vocabulary"):
        check_prompts(words, ["put the blue cube in the bowl"], 16)
    with pytest.raises(ConfigError, match=r"task words \['blue'\]"):  # texts given as a one-shot iterator
        check_prompts(words, iter(["put the blue cube in the bowl"]), 16)


@pytest.mark.parametrize("preset", ["tiny", "small", "teacher"])
def test_every_preset_fits_every_instruction_of_the_twins(preset):
    cfg = load_preset(preset)
    vocabulary = build_vocabulary(ALL_TASK_TEXTS) if cfg.tokenizer == "words" else ()
    # Distinct and uncut: every robot's two tasks are told apart by every preset.
    check_prompts(make_tokenizer(cfg.tokenizer, vocabulary), ALL_TASK_TEXTS, cfg.max_text_tokens)


def test_the_word_vocabulary_is_built_at_training_and_travels_in_the_checkpoint(tmp_path):
    class TwoTasks(FakeChunks):
        def __getitem__(self, i):
            item = super().__getitem__(i)
            item["task"] = ["reach the target", "go home"][item["episode_index"] % 2]
            return item

        def task_texts(self):
            return ["go home", "reach the target"]

    cfg = dataclasses.replace(load_preset("tiny"), tokenizer="words", max_text_tokens=6)
    train = TrainConfig(steps=2, batch_size=4, warmup_steps=1, save_every=2, progress=False, tensorboard=False,
                        workers=0, eval_fraction=0.25)
    result = finetune(tmp_path / "s.zarr", cfg, train, tmp_path / "run", episodes=list(range(4)),
                      make_dataset=lambda s, c, e: TwoTasks(episodes=4, chunk_len=c, select=e))
    policy = Policy.load(result["checkpoint"])
    assert policy.cfg.vocabulary == ["go", "home", "reach", "target", "the"]
    ids, mask = tokenize(policy.tokenizer, ["reach the target"], 6)
    assert ids[0].tolist() == [1, 5, 7, 6, 0, 0] and mask[0].sum() == 4


def test_the_word_vocabulary_holds_a_task_only_held_out_episodes_have(tmp_path):
    # Built from the training split alone, the vocabulary lacked such a task's words, and
    # the held-out evaluation at the end read them as unknown tokens.
    class LastEpisodeGoesHome(FakeChunks):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.kept = sorted({e for e, _ in self.index})

        def __getitem__(self, i):
            item = super().__getitem__(i)
            item["task"] = "go home" if item["episode_index"] == 3 else "reach the target"
            return item

        def task_texts(self):
            return sorted({"go home" if e == 3 else "reach the target" for e in self.kept})

    cfg = dataclasses.replace(load_preset("tiny"), tokenizer="words", max_text_tokens=6)
    train = TrainConfig(steps=2, batch_size=4, warmup_steps=1, save_every=2, progress=False, tensorboard=False,
                        workers=0, eval_fraction=0.25)
    result = finetune(tmp_path / "s.zarr", cfg, train, tmp_path / "run", episodes=list(range(4)),
                      make_dataset=lambda s, c, e: LastEpisodeGoesHome(episodes=4, chunk_len=c, select=e))
    assert json.loads((tmp_path / "run" / "split.json").read_text())["held_out"] == [3]
    assert Policy.load(result["checkpoint"]).cfg.vocabulary == ["go", "home", "reach", "target", "the"]


def test_two_tasks_that_encode_alike_are_refused_before_step_0_in_one_line(tmp_path):
    class Alike(FakeChunks):
        def task_texts(self):
            return ["reach the red target", "reach the blue target"]

    tokenizer = _word_level_tokenizer(tmp_path / "tokenizer.json", ["reach", "target", "the"])
    cfg = dataclasses.replace(load_preset("tiny"), tokenizer=str(tokenizer))
    train = TrainConfig(steps=2, batch_size=4, progress=False, tensorboard=False, workers=0)
    with pytest.raises(ConfigError, match="encode to the same tokens") as err:
        finetune(tmp_path / "s.zarr", cfg, train, tmp_path / "run", episodes=list(range(4)),
                 make_dataset=lambda s, c, e: Alike(episodes=4, chunk_len=c, select=e))
    assert len(str(err.value).splitlines()) == 1
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_policy_refuses_an_instruction_over_its_budget_at_inference():
    cfg = dataclasses.replace(load_preset("tiny"), max_text_tokens=8)
    policy = Policy(cfg, Features(2, 2, ["front"])).eval()
    obs = {"observation.state": torch.zeros(2), "observation.images.front": torch.zeros(12, 16, 3, dtype=torch.uint8)}
    policy.sample_actions({**obs, "task": "pick"})
    with pytest.raises(ConfigError, match="'put the red cube in the bowl' is 30 tokens"):
        policy.sample_actions({**obs, "task": "put the red cube in the bowl"})


def test_an_instruction_with_words_the_policy_never_saw_is_refused_at_inference():
    """With a word vocabulary every unseen word reads as the one unknown token: "blue" and
    "green" would give the same chunk. The torch policy and the deploy tokenizer refuse it."""
    from shallowpi.deploy.preprocess import TextTokens

    vocabulary = ["cube", "pick", "red", "the", "up"]
    cfg = dataclasses.replace(load_preset("tiny"), tokenizer="words", vocabulary=vocabulary, max_text_tokens=8)
    policy = Policy(cfg, Features(2, 2, ["front"])).eval()
    obs = {"observation.state": torch.zeros(2), "observation.images.front": torch.zeros(12, 16, 3, dtype=torch.uint8)}
    policy.sample_actions({**obs, "task": "pick up the red cube"})
    with pytest.raises(ConfigError, match=re.escape("'pick up the blue cube' has words ['blue']")):
        policy.sample_actions({**obs, "task": "pick up the blue cube"})
    tokens = TextTokens("words", 8, vocabulary)
    assert tokens("pick up the red cube")[0].tolist() == [[1, 4, 7, 6, 5, 3, 0, 0]]
    with pytest.raises(ConfigError, match=re.escape("has words ['blue', 'green']")):
        tokens("pick up the blue green cube")
