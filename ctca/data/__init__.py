"""Corpus readers, SynthSign, frame extraction, the clip cache, the vocabulary and the data loader."""
