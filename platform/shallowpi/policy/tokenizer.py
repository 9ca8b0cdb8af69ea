"""Task text -> token ids, from a local file only (nothing is fetched at run time).

`ByteTokenizer` serves the small presets: UTF-8 bytes shifted past two specials, vocabulary
258. `WordTokenizer` (`tokenizer: words`) has one token per word of the training store's
task texts, its vocabulary built at training and saved with the checkpoint (in its
config): "hand the red cube from the left arm to the right" is 12 tokens instead of 50
bytes, so a small prefix holds the whole instruction. For π0 weights, the PaliGemma vocabulary is read from a local `tokenizer.json`
(Hugging Face `tokenizers`) or a sentencepiece `*.model` file.

π0's prompt is the task text followed by a newline, after a BOS token, padded to
`max_len`; the mask is False on padding. A prompt longer than `max_len` is cut by
`tokenize` (its contract is a fixed width) but never silently on the policy's path:
`check_prompts` refuses it, and two different task texts that encode alike, before
training starts; the policy refuses an over-long prompt at inference too. Texts of the same
words that the tokenizer reads alike ("Pick up the cube." and "pick up the cube", typed
differently at two recording sessions, with the word tokenizer) are one instruction.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from shallowpi.errors import ConfigError

log = logging.getLogger(__name__)


class Tokenizer(Protocol):
    """Text -> token ids, with the ids of padding and BOS (`make_tokenizer` builds one)."""

    pad_id: int
    bos_id: int

    def encode(self, text: str) -> list[int]:
        """The ids of `text` alone: no BOS, no padding."""
        ...


class ByteTokenizer:
    """UTF-8 bytes as tokens: id = byte + 2; 0 is padding, 1 is BOS."""

    pad_id = 0
    bos_id = 1
    vocab_size = 258

    def encode(self, text: str) -> list[int]:
        """The UTF-8 bytes of `text`, each + 2; no BOS."""
        return [b + 2 for b in text.encode("utf-8")]

    def decode(self, ids: list[int]) -> str:
        """The text of `ids`, dropping pad and BOS; invalid UTF-8 becomes U+FFFD."""
        return bytes(i - 2 for i in ids if i >= 2).decode("utf-8", errors="replace")


WORD = re.compile(r"[\w']+")


def words_of(text: str) -> list[str]:
    """Lower-case words of a task text (punctuation and spacing ignored)."""
    return WORD.findall(text.lower())


def build_vocabulary(texts: Iterable[str]) -> list[str]:
    """Every word of `texts`, sorted (so the same texts give the same ids on any machine)."""
    return sorted({w for t in texts for w in words_of(t)})


class WordTokenizer:
    """One id a word: 0 padding, 1 BOS, 2 unknown word, then the vocabulary in order."""

    pad_id = 0
    bos_id = 1
    unk_id = 2

    def __init__(self, vocabulary: Sequence[str]) -> None:
        self.vocabulary = list(vocabulary)
        self._ids = {w: i + 3 for i, w in enumerate(self.vocabulary)}

    @property
    def vocab_size(self) -> int:
        """Vocabulary words plus the three specials (pad, BOS, unknown)."""
        return len(self.vocabulary) + 3

    def encode(self, text: str) -> list[int]:
        """One id a lower-case word of `text` (`unk_id` for a word outside the vocabulary);
        no BOS."""
        return [self._ids.get(w, self.unk_id) for w in words_of(text)]

    def unknown(self, text: str) -> list[str]:
        """Words of `text` outside the vocabulary (each becomes the unknown token)."""
        return [w for w in words_of(text) if w not in self._ids]


class FileTokenizer:
    """A local tokenizer.json or sentencepiece .model (PaliGemma's: BOS 2, PAD 0)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.suffix == ".json":
            from tokenizers import Tokenizer as HFTokenizer

            self._tok = HFTokenizer.from_file(str(path))
            self._encode = lambda text: self._tok.encode(text, add_special_tokens=False).ids
            self.bos_id = self._tok.token_to_id("<bos>") or 2
            self.pad_id = self._tok.token_to_id("<pad>") or 0
        else:
            try:
                import sentencepiece
            except ImportError:
                raise ConfigError(
                    f"{path} is a sentencepiece model but sentencepiece is not installed; "
                    "pip install sentencepiece, or convert it to tokenizer.json"
                ) from None
            self._tok = sentencepiece.SentencePieceProcessor(model_file=str(path))
            self._encode = lambda text: self._tok.encode(text)
            self.bos_id, self.pad_id = self._tok.bos_id(), max(self._tok.pad_id(), 0)

    def encode(self, text: str) -> list[int]:
        """The ids of `text`, without special tokens."""
        return list(self._encode(text))


def make_tokenizer(spec: str, vocabulary: Sequence[str] = ()) -> Tokenizer:
    """`bytes` -> ByteTokenizer; `words` -> WordTokenizer over `vocabulary` (ConfigError if
    empty); otherwise a path to tokenizer.json or a .model file."""
    if spec == "bytes":
        return ByteTokenizer()
    if spec == "words":
        if not vocabulary:
            raise ConfigError(
                "policy.tokenizer=words has no vocabulary; it is built from the store's task texts "
                "by `platform train` (or set policy.vocabulary)"
            )
        return WordTokenizer(vocabulary)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"tokenizer file {path} not found; point policy.tokenizer at a local tokenizer.json "
            "(or set SHALLOWPI_PALIGEMMA_TOKENIZER), or use tokenizer=bytes for small models"
        )
    return FileTokenizer(path)


def prompt_ids(tok: Tokenizer, text: str) -> list[int]:
    """The whole prompt of one task text: BOS, the text, a newline (π0's format)."""
    return [tok.bos_id, *tok.encode(text.strip() + "\n")]


def check_prompt(tok: Tokenizer, text: str, max_len: int) -> None:
    """ConfigError (one line) if the prompt of `text` does not fit `max_len` tokens, or
    holds words a word vocabulary lacks (each would read as the one unknown token: "pick up
    the blue cube" and "pick up the green cube" would be one instruction)."""
    n = len(prompt_ids(tok, text))
    if n > max_len:
        raise ConfigError(
            f"the instruction '{text}' is {n} tokens with BOS, over the policy's text budget of "
            f"{max_len} (it would be cut); raise policy.max_text_tokens to {n} or use policy.tokenizer=words"
        )
    if isinstance(tok, WordTokenizer) and (unknown := tok.unknown(text)):
        raise ConfigError(
            f"the instruction '{text}' has words {sorted(set(unknown))} the policy's word vocabulary lacks "
            f"(it knows {len(tok.vocabulary)}: {' '.join(tok.vocabulary[:12])}{' ...' if len(tok.vocabulary) > 12 else ''}); "
            "give one of its tasks, or train on a store that holds this instruction"
        )


def check_prompts(tok: Tokenizer, texts: Iterable[str], max_len: int) -> None:
    """Refuse (ConfigError, one line) task texts that would be cut, hold words outside a
    word vocabulary (all of them named), or encode to the same tokens as another text of
    other words: the policy could not tell those instructions apart. Texts of the same
    words (case, punctuation and spacing aside) are one instruction: logged, not refused."""
    texts = sorted(set(texts))
    if isinstance(tok, WordTokenizer):
        unknown = sorted({w for t in texts for w in tok.unknown(t)})
        if unknown:
            raise ConfigError(
                f"task words {unknown} are not in the policy's word vocabulary; train on a store "
                "that holds these instructions"
            )
    seen: dict[tuple[int, ...], str] = {}
    for text in texts:
        check_prompt(tok, text, max_len)
        ids = tuple(prompt_ids(tok, text))
        if ids in seen and words_of(seen[ids]) == words_of(text):
            log.info("tasks %r and %r differ only in case, punctuation or spacing: one instruction", seen[ids], text)
            continue
        if ids in seen:
            raise ConfigError(
                f"tasks '{seen[ids]}' and '{text}' encode to the same tokens, so the policy cannot "
                "tell them apart; reword one, or use a tokenizer that separates them"
            )
        seen[ids] = text


def tokenize(tok: Tokenizer, texts: list[str], max_len: int) -> tuple[Tensor, Tensor]:
    """Prompts -> ids [B, max_len] (long) and mask [B, max_len] (bool, False on padding).
    A prompt longer than `max_len` is cut: call `check_prompts` first where that matters."""
    ids = torch.full((len(texts), max_len), tok.pad_id, dtype=torch.long)
    mask = torch.zeros(len(texts), max_len, dtype=torch.bool)
    for row, text in enumerate(texts):
        seq = prompt_ids(tok, text)[:max_len]
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = True
    return ids, mask
