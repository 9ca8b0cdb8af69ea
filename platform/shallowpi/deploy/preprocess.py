"""Observation -> model inputs in numpy, for backends that run without torch.

The same transformations as `Policy._model_inputs` (policy/policy.py), so an ONNX graph fed
from here computes what the torch policy computes (tests/test_deploy_export.py compares):

    images  uint8 [H, W, 3] per camera -> the centre crop of `crop_scale` of each side (as
            at inference) -> float32 [1, N, 3, S, S] in [-1, 1], aspect kept, black bars,
            antialiased bilinear resize (torch's `antialias=True`, PIL's filter)
    task    text -> BOS + UTF-8 bytes/words/pieces of "task\\n", padded to L: int64 [1, L], bool mask
    state   robot units [S_real] -> normalised, zero-padded to the model's S: float32 [1, S]
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shallowpi.deploy.bundle import Bundle
from shallowpi.errors import ConfigError

STATE = "observation.state"
IMAGE_PREFIX = "observation.images."


@functools.lru_cache(maxsize=64)
def _aa_weights(in_size: int, out_size: int) -> np.ndarray:
    """float32 [out, in] interpolation matrix of a triangle filter widened by the downscale
    factor (antialiasing), centred as align_corners=False; rows sum to 1. Cached (read-only):
    a camera's size does not change between frames."""
    scale = in_size / out_size
    support = max(scale, 1.0)  # the bilinear filter's support (1), widened when shrinking
    inv = 1.0 / support
    matrix = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        j = np.arange(lo, hi)
        w = np.maximum(0.0, 1.0 - np.abs((j - center + 0.5) * inv))
        matrix[i, lo:hi] = w / w.sum()
    matrix = matrix.astype(np.float32)
    matrix.setflags(write=False)
    return matrix


def center_crop(image: np.ndarray, scale: float) -> np.ndarray:
    """[H, W, C] -> the centred [round(scale H), round(scale W), C] (policy/augment.py's
    `crop` at inference; scale 1 returns the image)."""
    H, W = image.shape[:2]
    h, w = max(1, round(scale * H)), max(1, round(scale * W))
    top, left = (H - h) // 2, (W - w) // 2
    return image[top : top + h, left : left + w]


def resize_with_pad(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, 3] -> float32 [3, size, size] in [-1, 1] (policy.resize_with_pad)."""
    # One copy into contiguous channel planes, which the two products below read row by row.
    x = np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1), dtype=np.float32) / 255.0  # [3, H, W]
    h, w = x.shape[1:]
    if (h, w) != (size, size):
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        # Two matrix products: rows, then columns. (A three-operand einsum is evaluated as one
        # loop over all five indices: ~200 ms a 64x64 camera instead of 0.1.)
        x = _aa_weights(h, nh) @ x @ _aa_weights(w, nw).T  # [3, nh, nw]
        top, left = (size - nh) // 2, (size - nw) // 2
        x = np.pad(x, ((0, 0), (top, size - nh - top), (left, size - nw - left)))
    return x * 2.0 - 1.0


# A word as policy/tokenizer.py's `words_of` reads one (that module needs torch; the robot
# side does not have it). tests/test_deploy_bundle.py checks both give the same ids.
WORD = re.compile(r"[\w']+")


def _tokenizer_library(name: str, spec: str) -> Any:
    """The package that reads a π0 tokenizer file (the robot's core install has neither:
    the twins' presets need none); ConfigError (one line) naming it when it is missing."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError(f"this policy's tokenizer ({Path(spec).name}) is read with the `{name}` package, "
                          f"not installed here: pip install {name}") from None


class TextTokens:
    """Task text -> (ids int64 [1, L], mask bool [1, L]) as policy.tokenizer.tokenize does:
    BOS, the text stripped plus a newline, padded to L; ConfigError (one line) for a text
    longer than L, which the policy would read cut, or with words outside a word vocabulary.
    `spec` is "bytes" (ids = byte + 2, pad 0, BOS 1), "words" (pad 0, BOS 1, unknown 2,
    then `vocabulary` in order), or a tokenizer.json read with `tokenizers` (no torch)."""

    def __init__(self, spec: str, max_len: int, vocabulary: Sequence[str] = ()) -> None:
        self.max_len = max_len
        # Words a word vocabulary lacks: each would read as the one unknown id.
        self._unknown: Callable[[str], list[str]] = lambda text: []
        if spec == "bytes":
            self.pad_id, self.bos_id = 0, 1
            self._encode = lambda text: [b + 2 for b in text.encode("utf-8")]
        elif spec == "words":
            self.pad_id, self.bos_id = 0, 1
            ids = {word: i + 3 for i, word in enumerate(vocabulary)}
            self._encode = lambda text: [ids.get(word, 2) for word in WORD.findall(text.lower())]
            self._unknown = lambda text: sorted({w for w in WORD.findall(text.lower()) if w not in ids})
        elif Path(spec).suffix == ".json":
            Tokenizer = _tokenizer_library("tokenizers", spec).Tokenizer

            tok = Tokenizer.from_file(spec)
            self.bos_id = tok.token_to_id("<bos>") or 2
            self.pad_id = tok.token_to_id("<pad>") or 0
            self._encode = lambda text: tok.encode(text, add_special_tokens=False).ids
        else:
            sentencepiece = _tokenizer_library("sentencepiece", spec)
            sp = sentencepiece.SentencePieceProcessor(model_file=spec)
            self.bos_id, self.pad_id = sp.bos_id(), max(sp.pad_id(), 0)
            self._encode = sp.encode
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def of(cls, bundle: Bundle) -> TextTokens:
        """The tokenizer the bundle's policy reads its instruction with."""
        cfg = bundle.config
        return cls(bundle.tokenizer, cfg["max_text_tokens"], cfg.get("vocabulary") or ())

    def __call__(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        if text not in self._cache:  # one task for a whole episode: encode it once
            seq = [self.bos_id, *self._encode(text.strip() + "\n")]
            # As the torch policy refuses them (policy/tokenizer.check_prompt).
            if len(seq) > self.max_len:
                raise ConfigError(f"the instruction '{text}' is {len(seq)} tokens with BOS, over the policy's text "
                                  f"budget of {self.max_len} (it would be cut); shorten it, or retrain with a larger "
                                  "policy.max_text_tokens")
            if unknown := self._unknown(text):
                raise ConfigError(f"the instruction '{text}' has words {unknown} the policy's word vocabulary lacks "
                                  "(each would read as one unknown word); give one of the tasks it was trained on")
            ids = np.full((1, self.max_len), self.pad_id, np.int64)
            mask = np.zeros((1, self.max_len), bool)
            ids[0, : len(seq)], mask[0, : len(seq)] = seq, True
            self._cache[text] = (ids, mask)
        return self._cache[text]


@dataclass
class ModelInputs:
    """One observation as the exported graphs take it (batch 1)."""

    images: np.ndarray  # float32 [1, N, 3, S, S]
    image_masks: np.ndarray  # bool [1, N]
    tokens: np.ndarray  # int64 [1, L]
    token_masks: np.ndarray  # bool [1, L]
    state: np.ndarray  # float32 [1, S_model], normalised and padded


class Preprocessor:
    """`Preprocessor(bundle)(observation) -> ModelInputs`. A camera missing from the
    observation is a blank image nothing attends to, as in the torch policy."""

    def __init__(self, bundle: Bundle) -> None:
        cfg = bundle.config
        self.size = cfg["vision"]["image_size"]
        self.state_dim = cfg["state_dim"]
        self.cameras = bundle.cameras
        self.state_stats = bundle.state_stats
        self.crop_scale = float(cfg.get("crop_scale", 1.0))
        self.tokens = TextTokens.of(bundle)

    def __call__(self, obs: Mapping[str, Any]) -> ModelInputs:
        images, masks = [], []
        for role in self.cameras:
            img = obs.get(IMAGE_PREFIX + role)
            if img is None:
                images.append(-np.ones((3, self.size, self.size), np.float32))
            else:
                images.append(resize_with_pad(center_crop(np.asarray(img), self.crop_scale), self.size))
            masks.append(img is not None)
        state = self.state_stats.normalize(obs[STATE])
        padded = np.zeros((1, self.state_dim), np.float32)
        padded[0, : state.shape[-1]] = state
        tokens, token_masks = self.tokens(str(obs.get("task", "")))
        return ModelInputs(np.stack(images)[None], np.asarray([masks]), tokens, token_masks, padded)
