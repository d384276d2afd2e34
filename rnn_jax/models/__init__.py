"""Models: RNN taggers, seq2seq, classifiers, transformer baselines, parameter counting."""
