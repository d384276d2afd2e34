"""The phrase-based SMT's decoder (`experiments.smt_baseline`, seed Q16): stack decoding
with nltk's scoring, searched as Moses searches.

`DistortionLimitedDecoder` subclasses nltk's `StackDecoder`: a distortion limit with Moses's
reordering constraint (no dead ends), the LM's sentence end, future costs from the target
phrases (Koehn 2010, section 6.3.3), the lexicalised reordering scores
(`experiments.smt_reordering`) and n-best lists for MERT. Its search recombines hypotheses
(`Hypothesis`, which carries its coverage and output; `RecombiningStack`) and ranks each
stack once, when it is expanded.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Hashable, Sequence

from nltk.translate import PhraseTable, StackDecoder
from nltk.translate.stack_decoder import _Hypothesis

from experiments.smt_language_model import DecoderLanguageModel
from experiments.smt_reordering import ReorderingModel


class Hypothesis(_Hypothesis):
    """nltk's `_Hypothesis` that also carries what recombination and scoring ask of it, so that
    they need not walk the back-pointer chain: `coverage` (bit i set: source word i is
    translated) and `output` (the target words so far). `translated_positions`,
    `total_translated_words` and `translation_so_far` answer from them, with nltk's values."""

    def __init__(
        self,
        raw_score: float = 0.0,
        src_phrase_span: tuple[int, int] | tuple[()] = (),
        trg_phrase: tuple[str, ...] = (),
        previous: Hypothesis | None = None,
        future_score: float = 0.0,
    ) -> None:
        super().__init__(raw_score, src_phrase_span, trg_phrase, previous, future_score)
        self.coverage, self.output = 0, tuple(trg_phrase)
        if previous is not None:
            start, end = src_phrase_span
            self.coverage = previous.coverage | ((1 << end) - (1 << start))
            self.output = previous.output + self.output

    def translated_positions(self) -> list[int]:
        return [i for i in range(self.coverage.bit_length()) if self.coverage >> i & 1]

    def total_translated_words(self) -> int:
        return self.coverage.bit_count()

    def translation_so_far(self) -> list[str]:
        return list(self.output)


class RecombiningStack:
    """The hypotheses that cover one number of source words, at most one per recombination
    state (Koehn, *Statistical Machine Translation*, 2010, ch. 6; Moses): a push whose state
    is already held keeps the higher-scoring of the two (the earlier on a tie); the loser
    could never overtake the winner, since everything later (future cost included) depends
    only on the state. Pushing is O(1); `pruned` ranks once, when the stack is expanded (all
    its pushes come from smaller stacks), with nltk `_Stack`'s pruning: the best `size` by
    `score()` (raw + future, ties in push order), less those below
    `beam_threshold` times the best (0: none)."""

    def __init__(self) -> None:
        self.hypotheses: dict[Hashable, Hypothesis] = {}

    def push(self, state: Hashable, hypothesis: Hypothesis) -> None:
        held = self.hypotheses.get(state)
        if held is None or hypothesis.score() > held.score():
            self.hypotheses[state] = hypothesis

    def pruned(self, size: int, beam_threshold: float = 0.0) -> list[Hypothesis]:
        ranked = sorted(self.hypotheses.values(), key=Hypothesis.score, reverse=True)[:size]
        if ranked and beam_threshold > 0.0:
            floor = ranked[0].score() + math.log(beam_threshold)
            ranked = [h for h in ranked if h.score() >= floor]
        return ranked


class DistortionLimitedDecoder(StackDecoder):
    """nltk's `StackDecoder` scoring, searched as Moses searches. The scoring is nltk's
    (`expansion_score`: phrase score, LM change, distortion, word penalty; `future_score`
    from `compute_future_scores`'s table, which is written here: nltk's scored the source
    phrase with the target LM) plus two things Moses has and nltk lacks:

    - a distortion limit (a jump of more than `distortion_limit` words scores -inf; the cost
      counts from the sentence start for the first phrase, Koehn et al. 2003:
      d = start_i - end_{i-1}, end_0 = 0);
    - the LM's sentence-end probability, P(</s> | last words), added to an expansion that
      completes the translation, so that a complete translation is scored as a sentence.

    The search (`decode`, replacing nltk's `translate` loop; nltk's `find_all_src_phrases`,
    `valid_phrases`, `expansion_score` and `future_score` do the rest) differs from nltk's in
    three ways, none of which changes a hypothesis's score:

    - hypothesis recombination (`recombination_state`, `RecombiningStack`; off with
      `recombination = False`): of two hypotheses that the rest of the search cannot tell
      apart, only the better is kept, so a stack's slots hold different futures;
    - a stack is ranked once, when it is expanded, instead of re-sorted on every push (nltk's
      `_Stack`: quadratic in the stack size); its pruning is nltk's;
    - Moses's reordering constraint (`reorderable`): no expansion past the distortion limit
      (nltk pushes them at -inf) and none that leaves the first untranslated word out of
      reach. nltk keeps such dead ends, and returned a -inf translation (one that breaks the
      limit) for 44 of the first 200 val sentences at stack 10 (37 at stack 30; quick's
      system).

    With stacks too large to prune it returns the best translation under the scoring among
    the orders Moses allows (tests/test_smt_baseline.py checks it against brute force).

    With a `reordering` model, each expansion also scores its phrase's `decoding_orientation`
    after the previous phrase, `reordering_weights[0]` times the backward log-probability of
    the new phrase pair and `reordering_weights[1]` times the forward one of the previous
    pair (of the last pair towards the sentence end, on completion); recombination then also
    keeps apart hypotheses whose last phrase pairs differ."""

    def __init__(
        self,
        table: PhraseTable,
        language_model: DecoderLanguageModel,
        distortion_factor: float,
        distortion_limit: int,
        reordering: ReorderingModel | None = None,
    ) -> None:
        super().__init__(table, language_model)
        # Score per source word jumped: log(factor) (Koehn et al. 2003's d^|jump|); MERT sets
        # the weight itself, which may leave (0, 1)'s log range.
        self.distortion_weight = math.log(max(distortion_factor, 1e-9))
        self.distortion_limit = distortion_limit
        self.recombination = True
        self.reordering = reordering
        self.reordering_weights = (1.0, 1.0)  # backward, forward
        self.source_sentence: tuple[str, ...] = ()  # set by `decode_nbest`

    def recombination_state(self, hypothesis: Hypothesis) -> tuple:
        """What the rest of a search can see of a hypothesis: the coverage vector, the LM's
        state (`DecoderLanguageModel.state`: at most the last lm_order - 1 output words) and
        the end of the last source phrase (where the next jump counts from); with a
        reordering model, also the last phrase pair (its source span and target words: the
        next orientation and the forward score depend on them)."""
        end = hypothesis.src_phrase_span[1] if hypothesis.src_phrase_span else 0
        state = (hypothesis.coverage, self.language_model.state(hypothesis.output), end)
        if self.reordering is not None:
            state += (hypothesis.src_phrase_span, hypothesis.trg_phrase)
        return state

    def reorderable(self, hypothesis: Hypothesis, span: tuple[int, int]) -> bool:
        """Moses's reordering constraint (`SearchNormal`): the jump to `span` is within the
        distortion limit and, unless `span` starts at the first untranslated word, `span`
        ends within the limit of that word. The second part means no dead end: every
        hypothesis can still be completed (word by word, each jump within the limit, where
        every word has a one-word translation, as `System.translate` ensures). nltk's search
        has no such rule: it keeps dead ends, which score -inf once complete, and returns a
        -inf translation when they crowd out the others."""
        previous_end = hypothesis.src_phrase_span[1] if hypothesis.src_phrase_span else 0
        if abs(span[0] - previous_end) > self.distortion_limit:
            return False
        coverage = hypothesis.coverage
        first_gap = (~coverage & (coverage + 1)).bit_length() - 1
        return span[0] == first_gap or abs(span[1] - first_gap) <= self.distortion_limit

    def decode(self, src_sentence: Sequence[str]) -> Hypothesis | None:
        """The best complete hypothesis (None: no finite-scoring one survived the search)."""
        best = self.decode_nbest(src_sentence, 1)
        return best[0] if best else None

    def decode_nbest(self, src_sentence: Sequence[str], size: int) -> list[Hypothesis]:
        """The best `size` complete hypotheses with different outputs, best first (fewer when
        fewer finite-scoring ones survived the search). The last stack is never expanded, so
        it keeps the best derivation of each output rather than of each recombination state:
        its n best are n different translations, as MERT's n-best lists need (an output that
        two states reached once each is listed once), and its best is the search's best."""
        sentence = self.source_sentence = tuple(src_sentence)
        self.sentence_length = length = len(sentence)
        phrases = self.find_all_src_phrases(sentence)
        future_table = self.compute_future_scores(sentence)
        future_scores: dict[int, float] = {}
        stacks = [RecombiningStack() for _ in range(length + 1)]
        stacks[0].push(None, Hypothesis())
        for stack in stacks[:-1]:
            for hypothesis in stack.pruned(self.stack_size, self.beam_threshold):
                for span in self.valid_phrases(phrases, hypothesis):
                    if not self.reorderable(hypothesis, span):
                        continue
                    for option in self.phrase_table.translations_for(sentence[span[0] : span[1]]):
                        new = Hypothesis(
                            self.expansion_score(hypothesis, option, span),
                            span,
                            option.trg_phrase,
                            hypothesis,
                        )
                        if new.coverage not in future_scores:
                            future_scores[new.coverage] = self.future_score(
                                new, future_table, length
                            )
                        new.future_score = future_scores[new.coverage]
                        covered = new.total_translated_words()
                        if covered == length:
                            state = new.output
                        elif self.recombination:
                            state = self.recombination_state(new)
                        else:
                            state = new
                        stacks[covered].push(state, new)
        return [h for h in stacks[length].pruned(size) if h.raw_score > -math.inf]

    def translate(self, src_sentence: Sequence[str]) -> list[str]:
        best = self.decode(src_sentence)
        return [] if best is None else best.translation_so_far()

    def expansion_score(
        self, hypothesis: _Hypothesis, translation_option: object, src_phrase_span: tuple[int, int]
    ) -> float:
        score = super().expansion_score(hypothesis, translation_option, src_phrase_span)
        covered = hypothesis.total_translated_words() + src_phrase_span[1] - src_phrase_span[0]
        complete = covered == self.sentence_length
        if complete:
            output = hypothesis.translation_so_far() + list(translation_option.trg_phrase)
            score += self.language_model.end_probability(output)
        if self.reordering is not None:
            backward, forward = self.reordering.expansion_scores(
                self.source_sentence,
                hypothesis,
                src_phrase_span,
                translation_option.trg_phrase,
                complete,
            )
            score += self.reordering_weights[0] * backward + self.reordering_weights[1] * forward
        return score

    def compute_future_scores(self, src_sentence: Sequence[str]) -> dict[int, dict[int, float]]:
        """The future-cost table: `[start][end]` is the estimated best score of translating
        source words start..end-1 (Koehn 2010, section 6.3.3; Moses's translation options'
        future scores): the best over the span's segmentations into table phrases of the
        summed best option estimate, an option's estimate being its phrase score, the LM's
        score of its target words alone (`probability`: no context before the first) and
        the word penalty per target word; -inf where no segmentation exists. No reordering
        term. Replaces nltk's (3.10.4), which scored the *source* phrase with the target LM
        (its words `<UNK>` there, unless the target language shares them) beside the option
        best by phrase score alone, and left out the word penalty."""
        length = len(src_sentence)
        scores: dict[int, dict[int, float]] = collections.defaultdict(
            lambda: collections.defaultdict(lambda: -math.inf)
        )
        for size in range(1, length + 1):
            for start in range(length - size + 1):
                end = start + size
                phrase = tuple(src_sentence[start:end])
                if phrase in self.phrase_table:
                    scores[start][end] = max(
                        option.log_prob
                        + self.language_model.probability(option.trg_phrase)
                        - self.word_penalty * len(option.trg_phrase)
                        for option in self.phrase_table.translations_for(phrase)
                    )
                for mid in range(start + 1, end):
                    combined = scores[start][mid] + scores[mid][end]
                    if combined > scores[start][end]:
                        scores[start][end] = combined
        return scores

    def distortion_score(
        self, hypothesis: _Hypothesis, next_src_phrase_span: tuple[int, int]
    ) -> float:
        previous_end = hypothesis.src_phrase_span[1] if hypothesis.src_phrase_span else 0
        distance = abs(next_src_phrase_span[0] - previous_end)
        if distance > self.distortion_limit:
            return -math.inf
        return distance * self.distortion_weight
