"""Task text -> token ids, from a local file only (nothing is fetched at run time).

`ByteTokenizer` serves the small presets: UTF-8 bytes shifted past two specials, vocabulary
258. For π0 weights, the PaliGemma vocabulary is read from a local `tokenizer.json`
(Hugging Face `tokenizers`) or a sentencepiece `*.model` file.

π0's prompt is the task text followed by a newline, after a BOS token, padded (or cut) to
`max_len`; the mask is False on padding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from shallowpi.errors import ConfigError


class Tokenizer(Protocol):
    pad_id: int
    bos_id: int

    def encode(self, text: str) -> list[int]: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens: id = byte + 2; 0 is padding, 1 is BOS."""

    pad_id = 0
    bos_id = 1
    vocab_size = 258

    def encode(self, text: str) -> list[int]:
        return [b + 2 for b in text.encode("utf-8")]

    def decode(self, ids: list[int]) -> str:
        return bytes(i - 2 for i in ids if i >= 2).decode("utf-8", errors="replace")


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
        return list(self._encode(text))


def make_tokenizer(spec: str) -> Tokenizer:
    """`bytes` -> ByteTokenizer; otherwise a path to tokenizer.json or a .model file."""
    if spec == "bytes":
        return ByteTokenizer()
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"tokenizer file {path} not found; point policy.tokenizer at a local tokenizer.json "
            "(or set SHALLOWPI_PALIGEMMA_TOKENIZER), or use tokenizer=bytes for small models"
        )
    return FileTokenizer(path)


def tokenize(tok: Tokenizer, texts: list[str], max_len: int) -> tuple[Tensor, Tensor]:
    """Prompts -> ids [B, max_len] (long) and mask [B, max_len] (bool, False on padding)."""
    ids = torch.full((len(texts), max_len), tok.pad_id, dtype=torch.long)
    mask = torch.zeros(len(texts), max_len, dtype=torch.bool)
    for row, text in enumerate(texts):
        seq = [tok.bos_id, *tok.encode(text.strip() + "\n")][:max_len]
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = True
    return ids, mask
