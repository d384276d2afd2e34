"""Review 23 of the language-model area: Kneser-Ney against a hand computation of Chen &
Goodman's formulas, the checkpoint that `--eval_contexts` / `--sample` name for a
`train.keep_best=False` run, a non-UTF-8 input to `experiments.significance`, and the depth
answer of `experiments.regularization` against a middle depth within the seed spread."""

import re
import types

import ml_collections
import pytest

from experiments import kneser_ney, language_model, significance
from experiments import regularization_report as report
from experiments.kneser_ney import EOS, UNK, KneserNeyLM
from tests.test_regularization import _summary


def test_kneser_ney_bigram_equals_a_hand_computation():
    """ "a b", "a", "b a" padded as <s> ... </s>, order 2. Bigrams (raw): <s> a 2, a </s> 2,
    a b 1, b </s> 1, <s> b 1, b a 1: no count 3 or 4, so KenLM's fallback D = 0.5, 1, 1.5
    at both orders. Unigrams (distinct left words): a {<s>, b}, b {<s>, a}, </s> {a, b}: 2
    each, total 6, numerators 2 - 1 = 1, gamma = 1 * 3 / 6 = 1/2, so p(w) = 1/6 + 1/2 / 4
    = 7/24 for a, b, </s> and 1/8 for <UNK> (|V| = 4: a, b, </s>, <UNK>).
    p(. | a): a(a .) = 3, gamma = (0.5 + 1) / 3 = 1/2: p(b|a) = 0.5/3 + 7/48 = 15/48,
    p(</s>|a) = 1/3 + 7/48 = 23/48, p(a|a) = 7/48, p(<UNK>|a) = 3/48.
    p(. | b): a(b .) = 2, gamma = (0.5 + 0.5) / 2 = 1/2: p(a|b) = 0.5/2 + 7/48 = 19/48."""
    model = KneserNeyLM.estimate([["a", "b"], ["a"], ["b", "a"]], 2)
    assert model.discounts == [(0.5, 1.0, 1.5)] * 2
    unigram = {"a": 7 / 24, "b": 7 / 24, EOS: 7 / 24, UNK: 1 / 8, "never seen": 1 / 8}
    for word, p in unigram.items():
        assert model.score(word) == pytest.approx(p, rel=1e-12)
    after_a = {"b": 15 / 48, EOS: 23 / 48, "a": 7 / 48, UNK: 3 / 48}
    for word, p in after_a.items():
        assert model.score(word, ["a"]) == pytest.approx(p, rel=1e-12)
    assert model.score("a", ["b"]) == pytest.approx(19 / 48, rel=1e-12)
    assert model.score("a", ["<s>"]) == pytest.approx(2 / 3 - 1 / 3 + 7 / 48, rel=1e-12)


def test_eval_context_and_sample_name_the_newest_checkpoint_without_keep_best():
    """With `train.keep_best=False`, `_restore` reads the newest periodic checkpoint, but
    W/eval_context.md and `--sample`'s first line still said 'Best checkpoint'."""
    config = ml_collections.ConfigDict({"train": {"keep_best": False}})
    label = language_model.checkpoint_label(config)
    assert "newest" in label and "best" not in label.replace("keep_best", "")
    table = {"valid": {"1 row": 1.0, "8 rows, context 0": 1.25}}
    text = language_model.context_markdown(table, 40, "token", label)
    assert "Newest checkpoint (keep_best=False) (step 40)" in text and "Best" not in text
    config.train.keep_best = True
    label = language_model.checkpoint_label(config)
    assert "Best checkpoint (step 40)" in language_model.context_markdown(table, 40, "x", label)


def test_significance_names_a_file_that_is_not_utf8_with_file_and_line(
    tmp_path, monkeypatch, capsys
):
    """A Latin-1 system output was a UnicodeDecodeError traceback (exit 1); now its file:line
    and exit status 2, before any test runs and with nothing written. CRLF files read as
    before (text mode's newline translation)."""
    references = tmp_path / "refs.txt"
    references.write_text("a b c\nd e f\ng h\n")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("a b c\nd e f\ng caf\u00e9\n".encode("latin-1"))
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"a b c\r\nd e f\r\ng h\r\n")
    assert significance.read_lines(crlf) == significance.read_lines(references)
    with pytest.raises(ValueError, match=re.escape(f"{latin}:3: not UTF-8")):
        significance.read_lines(latin)
    output = tmp_path / "sig.json"
    flags = dict(references=str(references), baseline=str(crlf), systems=[str(latin)])
    flags.update(test="ar", samples=10, tokenize="none", output=str(output))
    monkeypatch.setattr(significance, "FLAGS", types.SimpleNamespace(**flags))
    with pytest.raises(SystemExit) as exit_info:
        significance.main(["significance"])
    assert exit_info.value.code == significance.USAGE_STATUS
    assert f"--systems: {latin}:3: not UTF-8" in capsys.readouterr().err
    assert not output.exists()


def _depth_point(layers, best, params=1000, questions=(12,)):
    """test_regularization's unregularised point summary with `params` parameters."""
    return {**_summary("none", best, layers, questions), "params": params}


def test_depth_answer_calls_a_depth_best_only_beyond_every_other_depths_spread():
    """3 layers beat 1 beyond the spread, but 2 layers are 0.005 bits behind with
    overlapping seeds: '3 layers are best' (checked against the shallowest depth only) was
    a claim the measurement does not support."""
    one = _depth_point(1, [3.25, 3.29])
    two = _depth_point(2, [3.21, 3.23])
    three = _depth_point(3, [3.205, 3.225])
    answer = report.answers({"a": one, "b": two, "c": three})[12]
    assert "layers are best" not in answer
    assert "3 layers beat 1 (-0.055 bits) but not 2 by more than 0.02 bits" in answer
    three_apart = _depth_point(3, [3.15, 3.17])
    answer = report.answers({"a": one, "b": two, "c": three_apart})[12]
    assert "3 layers are best, -0.11 bits against 1" in answer


def test_depth_table_takes_the_q17_parameter_count_from_a_q17_point():
    """A depth-only run (a sweep's entry without Q17 points) called its first depth point's
    matched count (here the 1-layer model's 1,010) 'the 1,010-parameter Q17 model'."""
    only_depths = {"a": _depth_point(1, [3.2, 3.3], 1010), "b": _depth_point(3, [3.2, 3.3], 990)}
    text = report.markdown(only_depths)
    assert "1,010-parameter" not in text and "matches the Q17 model within" in text
    q17 = _depth_point(2, [3.2, 3.3], 1000, questions=(17,))
    text = report.markdown({"q": q17, **only_depths})
    assert "matches the 1,000-parameter Q17 model within" in text


def test_kneser_ney_refuses_padding_symbols_inside_a_sentence():
    """ "a </s> c" was counted with `</s>` as a word (and `<s>` became a predicted word that
    also cut the contexts after it); KenLM's lmplz refuses both in its corpus."""
    for bad in ("<s>", "</s>"):
        with pytest.raises(ValueError, match=f"sentence 2 holds {bad}: the padding symbols"):
            KneserNeyLM.estimate([["a", "b"], ["a", bad, "c"]], 3)
    assert KneserNeyLM.estimate([["a", UNK, "c"]], 3).score("c", ["a", UNK]) > 0.5


def test_overfitting_is_claimed_only_beyond_the_seed_spread_with_the_train_loss_falling():
    """The unregularised run was said to overfit whenever its mean validation rose by more
    than TIE after the best evaluation: also when one seed ended below the other's best
    (within the spread) and when the training slice's loss rose as well (instability)."""
    none = _depth_point(2, [3.25, 3.29], questions=(17,))
    overfitting = {**none, "final_valid_bits": [3.6, 3.7]}  # train 2.0 -> 1.0
    assert "the model overfits" in report.answers({"n": overfitting})[17]
    overlapping = {**none, "final_valid_bits": [3.2, 3.5]}  # mean rise 0.08
    answer = report.answers({"n": overlapping})[17]
    assert "overfits" not in answer and "0.08 bits after its best evaluation, within" in answer
    unstable = {**overfitting, "final_train_bits": [2.5, 2.5]}
    answer = report.answers({"n": unstable})[17]
    assert "overfits" not in answer and "training slice's loss rose too (2 -> 2.5)" in answer


def test_discounts_without_an_ngram_seen_four_times_are_estimated_as_lmplz_does():
    """lmplz falls back only when n_1, n_2 or n_3 is 0 (or a discount leaves its range):
    n_4 = 0 gives D3+ = 3 - 0 = 3. Here every order with n_4 = 0 fell back to 0.5, 1, 1.5.
    The bigrams of "a b" x 3 and "c d" / "c d" / "e f": <s> a 3, a b 3, b </s> 3, <s> c 2,
    c d 2, d </s> 2, <s> e 1, e f 1, f </s> 1: n = 3, 3, 3, 0."""
    n1, n2, n3 = 10, 4, 2
    y = n1 / (n1 + 2 * n2)
    expected = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3.0)
    assert kneser_ney.modified_discounts([n1, n2, n3, 0]) == pytest.approx(expected)
    sentences = [["a", "b"]] * 3 + [["c", "d"]] * 2 + [["e", "f"]]
    model = KneserNeyLM.estimate(sentences, 2)
    assert model.discounts[1] == pytest.approx((1 / 3, 1.0, 3.0))  # Y = 3 / (3 + 6)
    # a b seen 3 times: all of it discounted, p(b | a) = gamma(a) p(b) = (3 / 3) p(b).
    assert model.score("b", ["a"]) == pytest.approx(model.score("b"), rel=1e-12)
