"""The Qwen2 tokenizer of a checkpoint directory, and BAGEL's four special tokens.

BAGEL wraps every text as `<|im_start|> text <|im_end|>` (bos / eos) and every image as
`<|vision_start|> image tokens <|vision_end|>`. The Qwen2.5 tokenizer already has all four; the
official code looks them up by name and adds any that are missing, and so do we. Files are read with
the `tokenizers` library: `tokenizer.json`, or else `vocab.json` + `merges.txt` with Qwen2's
byte-level pre-tokenizer.
"""

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = {
    "bos_token_id": "<|im_start|>",
    "eos_token_id": "<|im_end|>",
    "start_of_image": "<|vision_start|>",
    "end_of_image": "<|vision_end|>",
}

# The official think-mode system prompts (inferencer.py of ByteDance-Seed/Bagel): the text that asks the model
# to reason before it answers or draws. Shapes World's think traces follow the same convention.
VLM_THINK_SYSTEM_PROMPT = (
    "You should first think about the reasoning process in the mind and then provide the user with the answer. \n"
    "The reasoning process is enclosed within <think> </think> tags, i.e. <think> reasoning process here </think> "
    "answer here"
)
GEN_THINK_SYSTEM_PROMPT = (
    "You should first think about the planning process in the mind and then generate the image. \n"
    "The planning process is enclosed within <think> </think> tags, i.e. <think> planning process here </think> "
    "image here"
)


# How Qwen2 splits text into words before byte-level BPE (contractions, letters, single digits, ...).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class BagelTokenizer:
    """Text <-> ids, plus the ids of the special tokens (`special_ids`, named as the official code names them)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        missing = [token for token in SPECIAL_TOKENS.values() if tokenizer.token_to_id(token) is None]
        tokenizer.add_special_tokens(missing)
        self.special_ids = {name: tokenizer.token_to_id(token) for name, token in SPECIAL_TOKENS.items()}

    @classmethod
    def from_dir(cls, directory: str | Path) -> "BagelTokenizer":
        directory = Path(directory)
        if (directory / "tokenizer.json").is_file():
            try:
                return cls(Tokenizer.from_file(str(directory / "tokenizer.json")))
            except Exception as error:  # the tokenizers library raises its own Exception for any bad file
                raise ValueError(f"{directory / 'tokenizer.json'}: not a valid tokenizer file ({error})") from None
        vocab, merges = directory / "vocab.json", directory / "merges.txt"
        if vocab.is_file() and merges.is_file():
            try:
                tokenizer = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
            except Exception as error:
                raise ValueError(f"{vocab} / {merges.name}: not a valid vocabulary and merges ({error})") from None
            tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
                [
                    pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
                ]
            )
            tokenizer.decoder = decoders.ByteLevel()
            return cls(tokenizer)
        raise FileNotFoundError(f"{directory}: no tokenizer.json, nor vocab.json and merges.txt")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "BagelTokenizer":
        """A small byte-level BPE tokenizer for a toy world, with BAGEL's special tokens reserved first."""
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS.values()),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer)

    def save(self, directory: str | Path) -> None:
        self.tokenizer.save(str(Path(directory) / "tokenizer.json"))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """The ids of a plain text, without special tokens (the caller adds bos / eos)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)
