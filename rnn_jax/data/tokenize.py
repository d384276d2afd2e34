"""Tokenisation: a line of text -> a list of token strings.

    word_tokens("the cat sat ")  == ["the", "cat", "sat"]     # whitespace split
    char_tokens("ab c")          == ["a", "b", " ", "c"]      # every character, spaces kept
    get_tokenizer("word" | "char") -> one of the two

Word tokenisation is a whitespace split, because the corpora whose published counts we
reproduce (PTB, CoNLL, UD, the translation experiment's Multi30k `tok/` files) are already
tokenised by their creators; re-tokenising would change those counts. The registry's
`multi30k` reads the raw, untokenised files on purpose (docs/design.md), so there punctuation
stays attached to words ("bushes." is one token); a model that needs the tokenised corpus
reads `tok/` (experiments/exposure_bias_translation.py).
`word_tokens` splits running text (read_text, read_tsv, read_parallel, the catalog and the TFDS
builders) at any Unicode whitespace, a no-break space (U+00A0) included, as the creators' own
tokenisers did: raw Multi30k's "Nummer\\xa028." is "nummer 28." in `tok/`. Formats whose
separators are part of the format split at ASCII spaces and tabs only (`read_conll`, SST trees
in readers.py; CoNLL-U at tabs), so a no-break space inside a token stays in it (SST's leaf
"8\\xa01\\/2").
Character tokenisation keeps spaces (and, when the caller passes them, newlines), as char-rnn
does, so that the model predicts word boundaries too.
"""

from __future__ import annotations

from collections.abc import Callable

Tokenizer = Callable[[str], list[str]]


def word_tokens(line: str) -> list[str]:
    """Whitespace-separated tokens of `line` (leading/trailing spaces ignored)."""
    return line.split()


def char_tokens(line: str) -> list[str]:
    """Every character of `line`, spaces and newlines included."""
    return list(line)


TOKENIZERS: dict[str, Tokenizer] = {"word": word_tokens, "char": char_tokens}


def get_tokenizer(level: str) -> Tokenizer:
    """The tokenizer for `level` ('word' or 'char')."""
    if level not in TOKENIZERS:
        raise ValueError(
            f"level={level!r} is not a tokenisation level; choose from {list(TOKENIZERS)}"
        )
    return TOKENIZERS[level]
