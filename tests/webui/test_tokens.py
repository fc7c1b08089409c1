"""Pinned words reach the WebUI's text encoder whole and with their intended weights.

The original extension wrote weights on BPE pieces ("compu"/"ter", "ove"/"rex") that A1111 re-tokenizes
differently; here every word of a pinned prompt must give the WebUI's own tokenizer (`process_texts`, through
the extension's `/prompt-pinning/v1/tokens` route) the same tokens as the prompt as typed, each token carrying
its word's weight.
"""

import numpy as np
import pytest

from lib_pinning.genome import build_genome, weights_from_prompt

BOS, EOS = 49406, 49407  # CLIP's start and end tokens (SD1 pads with the end token)
TRICKY = [
    ("a computer beside an overexposed photo of a T-rex", "lowres, jpeg artifacts"),
    ("émigré café, 3D render, 1990s, don't stop, firefighter's helmet", "blurry"),
    ("(masterpiece:1.2), [ultra-detailed], f/1.8 lens, 8k, re-entry", "(worst quality:1.4), watermark"),
    ("NASA's JWST, a.k.a. webb; ½ moon — «art nouveau» BREAK cat-ear headphones", ""),
]


def token_stream(webui, text: str) -> list[tuple[int, float]]:
    """(token, emphasis multiplier) of every token the WebUI gives `text`, chunk markers and padding left out."""
    chunks = webui.post("/prompt-pinning/v1/tokens", {"prompt": text})["chunks"]
    return [(token, multiplier) for chunk in chunks
            for token, multiplier in zip(chunk["tokens"], chunk["multipliers"]) if token not in (BOS, EOS)]


@pytest.mark.parametrize("prompt, negative", TRICKY)
def test_pinned_words_keep_their_tokens_and_get_their_weights(webui, prompt, negative):
    genome = build_genome(prompt, negative, punctuation=True)  # every word a gene: each one's tokens are checked
    genes = np.random.default_rng(5).uniform(-0.6, 0.6, len(genome))
    pinned = genome.prompt(genes)
    intended = weights_from_prompt(genome, *pinned)
    for gene, value, weights in zip(genome.genes, genes, intended):
        assert weights == pytest.approx([round(abs(b + value), 4) for b in gene.base_weights], abs=1e-4)
    for side, typed, written in (("positive", prompt, pinned[0]), ("negative", negative, pinned[1])):
        if not typed:
            continue
        stream = token_stream(webui, written)
        assert [t for t, _ in stream] == [t for t, _ in token_stream(webui, typed)], "words were re-tokenized"
        expected = []
        for gene, weights in zip(genome.genes, intended):
            if gene.side != side:
                continue
            for word, weight in zip(gene.words, weights):
                expected += [(token, weight) for token, _ in token_stream(webui, word)]
        assert [t for t, _ in stream] == [t for t, _ in expected]
        assert [m for _, m in stream] == pytest.approx([w for _, w in expected], abs=1e-5)
