"""IBM Models 1 and 2 (Brown et al. 1993) as nltk 3.10.4 trains them, with EM's E-step mended.

EM for Model 2 counts, for each target position j of a sentence pair, the posterior of each
source position i (0: NULL) being the one j is aligned to:

    c(t_j | s_i) += p(i | j) = t(t_j | s_i) a(i | j, l, m) / sum_i' t(t_j | s_i') a(i' | j, l, m)

(Model 1: a uniform; Koehn 2010, figure 4.3, resets `s-total(e)` for every target word). The
normaliser is that position's own sum. nltk's `IBMModel1.train` and `IBMModel2.train`
accumulate it per target *word* instead (`prob_all_alignments` sums over every position
holding the word), so a word that occurs k times in a sentence has each of its positions
divided by about k times its sum: its counts are shrunk k-fold (Model 1: a sentence "x x" with
"a" gives t(x | a) the weight of one x), and its positions weigh less in the alignment table.
That is not EM for the models' likelihood: on 2,000 Multi30k training pairs nltk's Model 1
reaches a lower likelihood than EM after every number of iterations, and the symmetrised
alignments of a quarter of the pairs differ (docs/design.md, SMT bullets). Most Multi30k
sentences that repeat a word repeat "a"/"ein" or "the"/"die".

The classes below override only `train` (the E-step); the initialisation, the M-step with its
1e-12 floor, the Viterbi alignment (`align_all`: ties go to the later source position) and the
Model 1 -> Model 2 schedule (Model 1 for twice Model 2's iterations) are nltk's.
tests/test_smt_training.py checks them against a hand computation and a transcription of EM
that recounts every posterior per position.
"""

from __future__ import annotations

from collections.abc import Sequence

from nltk.translate import AlignedSent, IBMModel1, IBMModel2
from nltk.translate.ibm2 import Model2Counts
from nltk.translate.ibm_model import Counts, IBMModel


class PositionalIBMModel1(IBMModel1):
    """nltk's `IBMModel1`, P(`words` | `mots`), with each target position's posteriors
    normalised over that position alone. Trains `iterations` EM iterations on construction
    and sets each sentence's Viterbi `alignment` ((words index, mots index or None) points)."""

    def train(self, parallel_corpus: Sequence[AlignedSent]) -> None:
        counts = Counts()
        for aligned_sentence in parallel_corpus:
            src_sentence = [None, *aligned_sentence.mots]
            for t in aligned_sentence.words:
                probabilities = [self.prob_alignment_point(s, t) for s in src_sentence]
                total = sum(probabilities)
                for s, probability in zip(src_sentence, probabilities, strict=True):
                    counts.t_given_s[t][s] += probability / total
                    counts.any_t_given_s[s] += probability / total
        self.maximize_lexical_translation_probabilities(counts)


class PositionalIBMModel2(IBMModel2):
    """nltk's `IBMModel2` with each target position's posteriors normalised over that
    position alone, started from `PositionalIBMModel1` (2 x `iterations`) and a uniform
    alignment table, as nltk starts it. Aligns the corpus on construction."""

    def __init__(self, sentence_aligned_corpus: Sequence[AlignedSent], iterations: int) -> None:
        IBMModel.__init__(self, sentence_aligned_corpus)  # vocabularies and empty tables
        model1 = PositionalIBMModel1(sentence_aligned_corpus, 2 * iterations)
        self.translation_table = model1.translation_table
        self.set_uniform_probabilities(sentence_aligned_corpus)
        for _ in range(iterations):
            self.train(sentence_aligned_corpus)
        self.align_all(sentence_aligned_corpus)

    def train(self, parallel_corpus: Sequence[AlignedSent]) -> None:
        counts = Model2Counts()
        for aligned_sentence in parallel_corpus:
            src_sentence = [None, *aligned_sentence.mots]
            trg_sentence = ["UNUSED", *aligned_sentence.words]  # 1-indexed, as nltk's
            source_length, target_length = len(aligned_sentence.mots), len(aligned_sentence.words)
            for j in range(1, target_length + 1):
                probabilities = [
                    self.prob_alignment_point(i, j, src_sentence, trg_sentence)
                    for i in range(source_length + 1)
                ]
                total = sum(probabilities)
                for i, probability in enumerate(probabilities):
                    counts.update_lexical_translation(
                        probability / total, src_sentence[i], trg_sentence[j]
                    )
                    counts.update_alignment(probability / total, i, j, source_length, target_length)
        self.maximize_lexical_translation_probabilities(counts)
        self.maximize_alignment_probabilities(counts)
