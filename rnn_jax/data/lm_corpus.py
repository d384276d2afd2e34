"""Language-model corpora: a vocabulary plus one int32 token stream per split.

    corpus = lm_corpus("ptb")                   # or "tiny_shakespeare", "markov", "text:PATH"
    corpus.vocab                                 # Vocabulary (PTB: 10,000 incl. <eos>)
    corpus.splits["train"]                       # int32 [929_589]
    stream = LMStream(corpus.splits["train"], batch_size=20, num_steps=35)

Word level (PTB): every line is followed by `<eos>`, as in Mikolov's and Zaremba's code, and
the vocabulary is the training tokens with no added specials (`<unk>` is already in the
files). Character level (Tiny Shakespeare): every character of the text, newlines included,
with the 90/5/5 split of `corpora.tiny_shakespeare_splits` and a closed 65-character
vocabulary. A user's own text (`text:PATH[,VALID[,TEST]]`) is word level with `<eos>` per
line and an `<unk>` for tokens unseen in training; a leading `~` in its paths is the home
folder.
"""

from __future__ import annotations

import collections
import dataclasses
import os

import numpy as np

from rnn_jax.data.corpora import read_tiny_shakespeare, split_paths
from rnn_jax.data.readers import read_text
from rnn_jax.data.root import default_data_root
from rnn_jax.data.synthetic import MarkovLanguage
from rnn_jax.data.vocab import Vocabulary

PathLike = str | os.PathLike


@dataclasses.dataclass(frozen=True)
class LMCorpus:
    """`vocab` and `splits`: `{split: int32 [num_tokens]}` token streams."""

    vocab: Vocabulary
    splits: dict[str, np.ndarray]


def _encode_lines(vocab: Vocabulary, lines: list[list[str]]) -> np.ndarray:
    return vocab.encode([token for line in lines for token in line])


def ptb_lm(manual_dir: PathLike | None = None) -> LMCorpus:
    """Penn Treebank (Mikolov's files) as word streams with `<eos>` after every line."""
    manual_dir = manual_dir or default_data_root() / "ptb"
    paths = split_paths("ptb", manual_dir)
    lines = {s: [e["tokens"] for e in read_text(p[0], eos="<eos>")] for s, p in paths.items()}
    vocab = Vocabulary.build(lines["train"], pad=None, unk="<unk>", bos=None, eos="<eos>")
    return LMCorpus(vocab, {s: _encode_lines(vocab, ls) for s, ls in lines.items()})


def tiny_shakespeare_lm(manual_dir: PathLike | None = None) -> LMCorpus:
    """Tiny Shakespeare as character streams (90/5/5 split, 65-character closed vocabulary)."""
    manual_dir = manual_dir or default_data_root() / "tiny_shakespeare"
    path = split_paths("tiny_shakespeare", manual_dir)["train"][0]
    texts = read_tiny_shakespeare(path)
    vocab = Vocabulary.build(
        collections.Counter(texts["train"]), pad=None, unk=None, bos=None, eos=None
    )
    return LMCorpus(vocab, {s: vocab.encode(list(t)) for s, t in texts.items()})


def text_lm(
    train: PathLike, valid: PathLike | None = None, test: PathLike | None = None
) -> LMCorpus:
    """A user's word-level text files (one sentence per line, `<eos>` appended)."""
    files = {"train": train, "valid": valid, "test": test}
    lines = {
        s: [e["tokens"] for e in read_text(p, eos="<eos>")]
        for s, p in files.items()
        if p is not None
    }
    vocab = Vocabulary.build(lines["train"], pad=None, unk="<unk>", bos=None, eos="<eos>")
    return LMCorpus(vocab, {s: _encode_lines(vocab, ls) for s, ls in lines.items()})


def markov_lm(
    language: MarkovLanguage,
    num_tokens: dict[str, int] | None = None,
    seed: int = 0,
) -> LMCorpus:
    """Streams sampled from a `MarkovLanguage` (token `i` is the string `str(i)`).

    Args:
      num_tokens: tokens per split (default train 200,000, valid and test 20,000 each).
      seed: the `k`-th split of `num_tokens` (0-based, in its order: train 0, valid 1, test 2
        by default) is `language.stream([seed, k], n)`, whose draws never repeat those that
        made `language.transitions` (`synthetic.sample_rng`), `seed == language.seed` included.
    """
    num_tokens = num_tokens or {"train": 200_000, "valid": 20_000, "test": 20_000}
    vocab = Vocabulary(tuple(str(i) for i in range(language.vocab_size)), None, None, None, None)
    splits = {s: language.stream([seed, k], n) for k, (s, n) in enumerate(num_tokens.items())}
    return LMCorpus(vocab, splits)


LM_CORPORA = ("ptb", "tiny_shakespeare", "markov", "text:PATH[,VALID[,TEST]]")


def lm_corpus(name: str, data_root: PathLike | None = None) -> LMCorpus:
    """An LM corpus by name: 'ptb', 'tiny_shakespeare', 'markov' (defaults), 'text:PATHS'."""
    root = default_data_root(data_root)
    if name == "ptb":
        return ptb_lm(root / "ptb")
    if name == "tiny_shakespeare":
        return tiny_shakespeare_lm(root / "tiny_shakespeare")
    if name == "markov":
        return markov_lm(MarkovLanguage())
    if name.startswith("text:"):
        paths = name[len("text:") :].split(",")
        if len(paths) > 3 or not all(paths):
            raise ValueError(
                f"language-model corpus {name!r} is not text:TRAIN[,VALID[,TEST]] (one to three "
                "non-empty paths, comma-separated)"
            )
        # A leading ~ is the home folder, as in `data_root` (a config value reaches us unexpanded).
        return text_lm(*(os.path.expanduser(path) for path in paths))
    raise ValueError(f"unknown language-model corpus {name!r}; choose from {list(LM_CORPORA)}")
