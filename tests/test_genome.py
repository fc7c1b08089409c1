"""Prompt <-> genome: A1111 emphasis parsing, CLIP word splitting, frozen syntax, and the pinned prompt."""

import importlib.util
import math
import sys
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib_pinning.emphasis import parse_attention
from lib_pinning.genome import PromptError, build_genome, weights_from_prompt
from lib_pinning.words import split_words

ROUND, SQUARE = 1.1, 1 / 1.1


# --- A1111 emphasis (expected values worked out by hand from A1111's algorithm) ---------------------------

@pytest.mark.parametrize(
    "text, expected",
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", ROUND), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", ROUND)]),
        ("[unbalanced", [("unbalanced", SQUARE)]),
        (r"\(literal\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", ROUND)]),
        (  # A1111's docstring example: the first "(" never closes, so it weights everything after it at the end
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.3 * ROUND * ROUND),
                (" ", ROUND),
                ("on", SQUARE * ROUND),
                (" a ", ROUND),
                ("hill", 0.5 * ROUND),
                (", sun, ", ROUND),
                ("sky", ROUND * ROUND * ROUND * ROUND),
                (".", ROUND),
            ],
        ),
        ("((a)", [("a", ROUND * ROUND)]),
        ("[[x]]", [("x", SQUARE * SQUARE)]),
        ("(x:0.5)", [("x", 0.5)]),
        ("(x: 1.3 )", [("x", 1.3)]),
        ("(x:-1)", [("x", -1.0)]),
        ("(::1.2)", [(":", 1.2)]),
        ("a)b]", [("a)b]", 1.0)]),  # closers with nothing open are text
        ("x:1.2)", [("x:1.2)", 1.0)]),
        ("a\\b", [("ab", 1.0)]),  # a lone backslash is dropped
        ("\\\\", [("\\", 1.0)]),
        ("", [("", 1.0)]),
        ("a BREAK b", [("a", 1.0), ("BREAK", -1), ("b", 1.0)]),
        (  # emphasis scales BREAK too (A1111 then reads it as text, not as a chunk break)
            "a (b BREAK c) [d BREAK]",
            [("a ", 1.0), ("b", ROUND), ("BREAK", -ROUND), ("c", ROUND), (" ", 1.0),
             ("d", SQUARE), ("BREAK", -SQUARE), ("", SQUARE)],
        ),
        ("aBREAK b", [("aBREAK b", 1.0)]),
    ],
)
def test_parse_attention_matches_a1111(text, expected):
    assert parse_attention(text) == expected


def test_parse_attention_fails_like_a1111_on_an_unreadable_weight():
    with pytest.raises(PromptError, match="1.2.3"):
        parse_attention("(x:1.2.3)")


# --- CLIP words --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, words",
    [
        ("computer", ["computer"]),  # the original extension split it into "compu" + "ter"
        ("overexposed", ["overexposed"]),
        ("t-rex", ["t", "-", "rex"]),
        ("8k", ["8", "k"]),
        ("1920", ["1", "9", "2", "0"]),
        ("don't", ["don", "'t"]),
        ("DON'T", ["DON", "'T"]),  # CLIP lower-cases first; the genome keeps the spelling
        ("it’s", ["it", "’s"]),  # ftfy straightens the quote before CLIP sees it
        ("''s", ["''", "s"]),
        ("a,b", ["a", ",", "b"]),
        ("café", ["café"]),
        ("cafe\u0301s", ["cafe\u0301s"]),  # NFC fuses the accent into one letter run
        ("猫犬", ["猫犬"]),
        ("🐱🐶!", ["🐱🐶!"]),
        ("__init__", ["__", "init", "__"]),
        ("snake_case", ["snake", "_", "case"]),
        ("a&amp;b", ["a&amp;b"]),  # CLIP may decode the entity to "&": never cut around it
        ("<|endoftext|>", ["<|endoftext|>"]),
        ("  spaced \n out ", ["spaced", "out"]),
    ],
)
def test_split_words(text, words):
    assert split_words(text) == words


def _clip_tokenizer():
    """openai CLIP's tokenizer, loaded without its package (which imports torch); None if not installed."""
    spec = importlib.util.find_spec("clip")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).with_name("simple_tokenizer.py")
    module_spec = importlib.util.spec_from_file_location("clip_simple_tokenizer", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    try:
        module_spec.loader.exec_module(module)
    except ImportError:  # ftfy or regex missing
        return None
    return module.SimpleTokenizer()


@pytest.fixture(scope="module")
def clip():
    tokenizer = _clip_tokenizer()
    if tokenizer is None:
        pytest.skip("openai CLIP's tokenizer is not installed")
    return tokenizer


@pytest.fixture(scope="module")
def sd1():
    """The tokenizer A1111 uses for SD1 (and SDXL's CLIP-L): transformers 4.30.2's CLIPTokenizer, which cleans text
    with ftfy.fix_text alone (openai CLIP also html-unescapes). This stand-in is openai CLIP's tokenizer with that
    cleaning; it gave transformers 4.30.2's ids on 20,000 random strings of words, entities, "<", special tokens."""
    tokenizer = _clip_tokenizer()
    if tokenizer is None:
        pytest.skip("openai CLIP's tokenizer is not installed")
    import ftfy
    module = sys.modules[type(tokenizer).__module__]
    cleaned = module.basic_clean
    module.basic_clean = ftfy.fix_text
    yield module.SimpleTokenizer()
    module.basic_clean = cleaned


# Characters ftfy cannot mistake for mojibake (its repair of those is not per character).
WORDY = st.sampled_from(
    list("abcXYZ019 ,.'-_!?()&;#<>|:") + ["’", "é", "e\u0301", "İ", "猫", "🐱", "ｓ", "①", "\x00", "&amp;",
                                          "&#39;", "'s", "'T", "ﬁ", "\u3000", "<|endoftext|>", "Ω", "\ufeff"]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(WORDY, max_size=12).map("".join))
def test_words_tokenize_like_the_whole_text(clip, text):
    """The real CLIP tokenizer: word by word gives the tokens of the whole text (no unit is ever cut)."""
    assert [t for word in split_words(text) for t in clip.encode(word)] == clip.encode(text)


# --- the genome and the pinned prompt ------------------------------------------------------------------

def zeros(genome):
    return [0.0] * len(genome)


def test_frozen_parts_pass_through_verbatim():
    genome = build_genome("a cat, <lora:x:0.5> BREAK dog")
    assert genome.words == ["a", "cat", "dog"]  # the comma is punctuation: left as written
    assert genome.frozen == ("<lora:x:0.5>", "BREAK")
    assert genome.prompt(zeros(genome)) == ("a cat, <lora:x:0.5> BREAK dog", "")
    assert genome.prompt([0.5, 0.0, 0.25]) == ("(a:1.5) cat, <lora:x:0.5> BREAK (dog:1.25)", "")


def test_and_and_its_weight_are_frozen_in_the_positive_prompt_only():
    genome = build_genome("a cat AND a dog :1.2", "ugly AND blurry")
    assert genome.words == ["a", "cat", "a", "dog"]
    assert genome.negative_words == ["ugly", "AND", "blurry"]  # A1111 reads AND as text there
    assert genome.frozen == ("AND", ":1.2")
    assert genome.prompt(zeros(genome)) == ("a cat AND a dog :1.2", "ugly A\\ND blurry")
    assert genome.prompt([0.1] * 7) == ("(a:1.1) (cat:1.1) AND (a:1.1) (dog:1.1) :1.2",
                                        "(ugly:1.1) (A\\ND:1.1) (blurry:1.1)")


def test_frozen_parts_are_listed_once():
    assert build_genome("BREAK a BREAK b [x|y] c [x|y]").frozen == ("BREAK", "[x|y]")


@pytest.mark.parametrize("construct", ["[cat:dog:5]", "[cat:dog:0.5]", "[dog:5]", "[cat::5]", "[cat: dog : 5 ]",
                                       "[cat|dog]", "[cat|]", "[a:[b:c:2]:5]", "[(cat:1.2):5]"])
def test_prompt_editing_and_alternation_are_frozen(construct):
    genome = build_genome(f"a {construct} on a mat")
    assert genome.words == ["a", "on", "a", "mat"]
    assert genome.frozen == (construct,)
    assert genome.prompt(zeros(genome))[0] == f"a {construct} on a mat"
    assert genome.prompt([0.2] * 4)[0] == f"(a:1.2) {construct} (on:1.2) (a:1.2) (mat:1.2)"


def test_a_frozen_part_keeps_the_emphasis_around_it():
    genome = build_genome("((a [cat:dog:5] b))")
    assert genome.prompt(zeros(genome))[0] == "(a:1.21) ([cat:dog:5]:1.2100000000000002) (b:1.21)"
    assert genome.prompt([-0.21, 0.0])[0] == "(a:1) ([cat:dog:5]:1.2100000000000002) (b:1.21)"


def test_a_word_glued_to_prompt_editing_keeps_its_weight():
    genome = build_genome("[cat:dog:5]s run")  # A1111 tokenizes "cats" / "dogs"
    assert genome.words == ["run"]
    assert genome.prompt([1.0])[0] == "[cat:dog:5]s (run:2)"


def test_brackets_that_are_not_prompt_editing_are_emphasis():
    # "[a:b]" has no step; a top-level "|" makes A1111 take all literally
    genome = build_genome("[a:b] x | y", punctuation=True)
    assert genome.words == ["a", ":", "b", "x", "|", "y"]
    assert genome.base_weights() == [SQUARE, SQUARE, SQUARE, 1.0, 1.0, 1.0]
    assert genome.prompt(zeros(genome))[0] == "(a:0.9091)(::0.9091)(b:0.9091) x \\| y"
    assert genome.prompt([0.1] * 6)[0] == "(a:1.0091)(::1.0091)(b:1.0091) (x:1.1) (\\|:1.1) (y:1.1)"


def test_extra_networks_are_frozen_on_both_sides():
    genome = build_genome("<lora:a:1>cat", "(<lora:b:1> ugly)")
    assert genome.frozen == ("<lora:a:1>", "<lora:b:1>")
    assert genome.prompt(zeros(genome)) == ("<lora:a:1>cat", "(<lora:b:1>:1.1) (ugly:1.1)")


def test_negative_weights_are_kept_not_evolved():
    genome = build_genome("(x:-1) y")
    assert genome.words == ["y"]
    assert genome.frozen == ("x",)
    assert genome.prompt([0.5])[0] == "(x:-1.0) (y:1.5)"


def test_weight_is_the_absolute_value_of_base_plus_gene_rounded_to_4_decimals():
    genome = build_genome("[a] b")
    assert genome.prompt([0.0, -3.0]) == ("(a:0.9091) (b:2)", "")
    assert genome.prompt([0.123456, 0.00004])[0] == "(a:1.0325) b"  # b's weight is 1 at the written precision


def test_syntax_characters_in_words_are_escaped():
    genome = build_genome(r"\(cat\) \[x\] a\\b B\REAK A\ND <\_:x>", punctuation=True)
    assert genome.words == ["(", "cat", ")", "[", "x", "]", "a", "\\", "b", "BREAK", "AND", "<_:", "x", ">"]
    positive, _ = genome.prompt([0.5] * len(genome))
    assert positive == ("(\\(:1.5)(cat:1.5)(\\):1.5) (\\[:1.5)(x:1.5)(\\]:1.5) (a:1.5)(\\\\:1.5)(b:1.5) (B\\REAK:1.5) "
                        "(A\\ND:1.5) (<\\_::1.5)(x:1.5)(>:1.5)")
    assert weights_from_prompt(genome, positive, "") == [(1.5,)] * len(genome)
    # Left as written, the words are written bare with the same escapes: the prompt as the user wrote it.
    assert genome.prompt(zeros(genome))[0] == r"\(cat\) \[x\] a\\b B\REAK A\ND <\_:x>"


def test_zero_genes_write_the_base_weights():
    genome = build_genome("a ((cat)), [dog] on (a:0.3) mat", "(((ugly))), [(blurry:1.5)] [x:y]", punctuation=True)
    expected = [tuple(round(base, 4) for base in gene.base_weights) for gene in genome.genes]
    assert weights_from_prompt(genome, *genome.prompt(zeros(genome))) == expected
    assert list(zip(genome.words + genome.negative_words, genome.base_weights())) == [
        ("a", 1.0), ("cat", ROUND * ROUND), (",", 1.0), ("dog", SQUARE), ("on", 1.0), ("a", 0.3), ("mat", 1.0),
        ("ugly", ROUND * ROUND * ROUND), (",", 1.0), ("blurry", 1.5 * SQUARE),
        ("x", SQUARE), (":", SQUARE), ("y", SQUARE),  # "[x:y]" has no step: emphasis, not prompt editing
    ]


def test_textual_inversion_names_stay_one_word():
    names = ["easynegativev2", "bad-hands-5"]
    assert split_words("EasyNegativeV2, bad-hands-5", names) == ["EasyNegativeV2", ",", "bad-hands-5"]
    assert split_words("EasyNegativeV2") == ["EasyNegativeV", "2"]
    genome = build_genome("a cat", "(bad-hands-5:1.2), EasyNegativeV2", embeddings=names)
    assert genome.negative_words == ["bad-hands-5", "EasyNegativeV2"]
    assert genome.prompt([0, 0, 0.1, 0]) == ("a cat", "(bad-hands-5:1.3), EasyNegativeV2")


def test_words_of_separate_fragments_stay_apart():
    genome = build_genome("(ca)t")  # A1111 tokenizes "ca" and "t" apart; written together they would be "cat"
    assert genome.prompt([0.0, 0.1]) == ("(ca:1.1) (t:1.1)", "")


def test_tag_granularity_gives_one_gene_per_comma_separated_chunk():
    plain = build_genome("a red cat, sitting on a mat, (masterpiece)", "blurry, ugly", "tag")
    assert plain.words == ["a red cat", "sitting on a mat", "masterpiece"]  # the commas stay as written
    assert plain.prompt([0.5, 0, 0, 0, 0])[0] == "(a:1.5) (red:1.5) (cat:1.5), sitting on a mat, (masterpiece:1.1)"
    genome = build_genome("a red cat, sitting on a mat, (masterpiece)", "blurry, ugly", "tag", punctuation=True)
    assert genome.words == ["a red cat,", "sitting on a mat,", "masterpiece"]
    assert genome.negative_words == ["blurry,", "ugly"]
    assert genome.genes[0].words == ("a", "red", "cat", ",")
    assert genome.genes[2].base_weights == (ROUND,)
    positive, negative = genome.prompt([0.5, 0.0, -0.1, 1.0, 0.0])
    assert positive == "(a:1.5) (red:1.5) (cat:1.5)(,:1.5) sitting on a mat, (masterpiece:1)"
    assert negative == "(blurry:2)(,:2) ugly"


def test_gene_sides_and_base_weights():
    genome = build_genome("(a) b", "[c]")
    assert [(gene.text, gene.side) for gene in genome.genes] == [("a", "positive"), ("b", "positive"),
                                                                 ("c", "negative")]
    assert genome.base_weights() == [ROUND, 1.0, SQUARE]
    assert len(genome) == 3


@pytest.mark.parametrize("prompt, negative, message", [
    ("", "", "it is empty"),
    ("  <lora:x:1> BREAK ", "", "only <lora:x:1>, BREAK"),
    ("[a:b:5]", "()", "only [a:b:5]"),
])
def test_a_prompt_without_words_is_refused(prompt, negative, message):
    with pytest.raises(PromptError, match=re.escape(f"the prompt has no words to pin: {message}")):
        build_genome(prompt, negative)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="granularity"):
        build_genome("cat", granularity="token")
    genome = build_genome("a cat")
    with pytest.raises(ValueError, match="expected 2"):
        genome.prompt([0.0])
    with pytest.raises(ValueError, match="finite"):
        genome.prompt([0.0, math.nan])


# --- properties on arbitrary strings --------------------------------------------------------------------

SYNTAX = st.sampled_from(list("ab AB1 ,.:()[]\\<>|_-'\n") + [
    " AND ", "BREAK", " BREAK ", "<lora:x:0.5>", "[a:b:5]", "[c|d]", ":1.2)", ":-1)", ":0)", "cat", "é", "’s",
    "&amp;",
])
SYNTAX_TEXT = st.lists(SYNTAX, max_size=12).map("".join)
ANY_TEXT = st.text(max_size=30)
GENES = st.floats(-3, 3, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(st.one_of(SYNTAX_TEXT, ANY_TEXT), st.one_of(SYNTAX_TEXT, ANY_TEXT), st.sampled_from(["word", "tag"]))
def test_build_genome_refuses_only_with_prompt_error(prompt, negative, granularity):
    try:
        build_genome(prompt, negative, granularity)
    except PromptError:
        pass


def genome_and_values(texts, punctuation=st.booleans(), keep=st.sampled_from([(), ("a",), ("cat", "b 1")])):
    """(genome, gene values, granularity) for two generated texts that have a word."""
    @st.composite
    def build(draw):
        prompt, negative = draw(texts), draw(texts)
        granularity = draw(st.sampled_from(["word", "tag"]))
        embeddings = draw(st.sampled_from([(), ("cat", "a-b", "b1", "a b")]))
        try:
            genome = build_genome(prompt, negative, granularity, embeddings, keep=draw(keep),
                                  punctuation=draw(punctuation))
        except PromptError:
            return None
        return genome, draw(st.lists(GENES, min_size=len(genome), max_size=len(genome))), granularity
    return build().filter(lambda drawn: drawn is not None)


def expected_weights(genome, values):
    """round(|base + gene|, 4) for each word of each gene."""
    return [tuple(round(abs(base + value), 4) for base in gene.base_weights)
            for gene, value in zip(genome.genes, values)]


@settings(max_examples=200, deadline=None)
@given(genome_and_values(st.one_of(SYNTAX_TEXT, ANY_TEXT)))
def test_the_pinned_prompt_reads_back_as_the_same_words_and_weights(drawn):
    genome, values, _ = drawn
    assert weights_from_prompt(genome, *genome.prompt(values)) == expected_weights(genome, values)


@settings(max_examples=200, deadline=None)
@given(genome_and_values(st.one_of(SYNTAX_TEXT, ANY_TEXT)))
def test_a_pinned_prompt_has_the_same_genome(drawn):
    genome, values, granularity = drawn
    again = build_genome(*genome.prompt(values), granularity, genome.embeddings, keep=genome.keep,
                         punctuation=genome.punctuation)
    assert (again.words, again.negative_words, again.frozen) == (genome.words, genome.negative_words, genome.frozen)
    assert [gene.words for gene in again.genes] == [gene.words for gene in genome.genes]


PLAIN = st.lists(st.sampled_from(list("abc1 ,.:()\\_'!") + ["cat", "é", ":1.2)", ":0)", "\\(", "&amp;"]),
                 max_size=12).map("".join)


@settings(max_examples=200, deadline=None)
@given(genome_and_values(PLAIN, punctuation=st.just(True), keep=st.just(())))
def test_emphasis_parsing_of_the_pinned_prompt_gives_each_word_its_weight(drawn):
    """A negative prompt without frozen syntax: A1111's own reading (emphasis, then CLIP words) recovers every
    gene word with its weight."""
    genome, values, _ = drawn
    _, negative = genome.prompt(values)
    written = [(word, weight) for fragment, weight in parse_attention(negative)
               for word in split_words(fragment, genome.embeddings)]
    expected = [(word, weight) for gene, weights in zip(genome.genes, expected_weights(genome, values))
                if gene.side == "negative" for word, weight in zip(gene.words, weights)]
    assert written == expected


def a1111_tokens(clip, text):
    """What A1111 feeds CLIP for a negative prompt without prompt editing: each fragment tokenized alone."""
    return [t for fragment, weight in parse_attention(text)
            for t in ([-1] if (fragment, weight) == ("BREAK", -1) else clip.encode(fragment))]


TOKEN_TEXT = st.lists(st.sampled_from(list("ab1 ,.:()\\_-'") + [
    "cat", "é", "e\u0301", "’s", "&amp;", "猫", "BREAK", " BREAK ", ":1.2)", ":-1)", ":0)", "don't"]),
    max_size=12).map("".join)


@settings(max_examples=150, deadline=None)
@given(TOKEN_TEXT, st.lists(GENES, min_size=80, max_size=80))
def test_the_pinned_prompt_has_the_same_tokens(clip, negative, values):
    try:
        genome = build_genome("x", negative)
    except PromptError:
        return
    _, written = genome.prompt(values[: len(genome)])
    assert a1111_tokens(clip, written) == a1111_tokens(clip, negative)


# --- words the user leaves alone ----------------------------------------------------------------------------

def test_punctuation_is_left_as_written_unless_asked_for():
    genome = build_genome("a red cat, 8k!! --ar $^$ 🐱", "blur, (noise:1.2).")
    assert genome.words == ["a", "red", "cat", "8", "k", "ar", "🐱"]  # emoji are words, not punctuation
    assert genome.negative_words == ["blur", "noise"]
    assert genome.frozen == ()  # left alone by choice: no notice
    assert genome.prompt([0.2] * 9) == ("(a:1.2) (red:1.2) (cat:1.2), (8:1.2)(k:1.2)!! --(ar:1.2) $^$ (🐱:1.2)",
                                        "(blur:1.2), (noise:1.4).")
    assert build_genome("a red cat, 8k!!", punctuation=True).words == ["a", "red", "cat", ",", "8", "k", "!!"]


def test_kept_words_and_runs_of_words_stay_as_written_in_both_prompts():
    genome = build_genome("a Blue sky, blue eyes, (blue sky:1.3)", "blue sky, sky blue", keep=["blue sky", "A"])
    # "blue" alone is not kept: the run is "blue sky"; a run split by a frozen part does not match
    assert genome.words == ["blue", "eyes"] and genome.negative_words == ["sky", "blue"]
    assert genome.prompt([0.5] * len(genome)) == ("a Blue sky, (blue:1.5) (eyes:1.5), (blue:1.3) (sky:1.3)",
                                                  "blue sky, (sky:1.5) (blue:1.5)")
    assert build_genome("blue [x:y:3] sky", keep=["blue sky"]).words == ["blue", "sky"]


def test_a_prompt_whose_words_are_all_left_alone_is_refused_with_the_reason():
    with pytest.raises(PromptError, match=r"its words are all kept fixed or punctuation \(cat, ,\)"):
        build_genome("cat, cat", keep=["cat"])


def test_words_left_as_written_are_written_bare_as_the_user_wrote_them():
    genome = build_genome("a quiet painting, soft light", "noise, (stripes:1.2)")
    assert genome.prompt([0.0] * len(genome)) == ("a quiet painting, soft light", "noise, (stripes:1.2)")
    # a gene whose weight rounds to its own writes the word as written; others take their new weight
    assert genome.prompt([0.00001, 0.3, 0, 0, 0, 0, 0])[0] == "a (quiet:1.3) painting, soft light"


def test_bare_words_are_used_only_where_they_read_like_the_parenthesized_prompt():
    # Bare, ":1.2" at the end of a sub-prompt would read as that sub-prompt's weight; <lora:x:1> as a network.
    genome = build_genome("(a:1.2)(::1)1.2")
    assert genome.prompt([0.0] * len(genome))[0] == "(a:1.2)(::1.0)(1:1)(.:1.0)(2:1)"
    assert build_genome("<(lora:1):x:1>").prompt([0.0, 0.0, 0.0])[0] == "<\\lora:x:1>"


# --- bugs found by A1111 v1.10.1's own parser and tokenizer ------------------------------------------------

def test_break_glued_to_prompt_editing_inside_emphasis_stays_break():
    # A1111 reads "(a BREAK[x::3]" as text "a BREAKx" (weight 1.1) for 3 steps, then "BREAK" as a keyword that
    # emphasis turns into text of weight -1.1. Only "BREAK[x::3]" written together keeps both readings.
    genome = build_genome("(a BREAK[x::3]")
    assert genome.words == ["a"] and genome.frozen == ("BREAK[x::3]",)
    assert genome.prompt([0.3])[0] == "(a:1.4) (BREAK[x::3]:1.1)"
    assert build_genome("[x::3]BREAK b").prompt([0.0])[0] == "[x::3]BREAK b"
    # a lone backslash ended the text before a BREAK: written apart, it stays a keyword
    assert build_genome("[c|d]\\BREAK b").prompt([0.2])[0] == "[c|d] BREAK (b:1.2)"


def test_a_side_with_both_a_less_than_sign_and_an_html_entity_is_kept_as_written():
    # ftfy, the first step of A1111's CLIP tokenizer, decodes &amp; only in text without a "<": written apart,
    # "a&amp;b" would lose the "<" of its fragment and read as "a&b".
    genome = build_genome("a cat", "< a&amp;b")
    assert genome.negative_words == [] and genome.prompt([0.3, 0.3]) == ("(a:1.3) (cat:1.3)", "< a&amp;b")
    assert "negative prompt is kept as written" in genome.notes[0] and "&amp;" in genome.notes[0]
    assert build_genome("a cat", "a&amp;b").negative_words == ["a&amp;b"]  # no "<": nothing depends on it
    assert build_genome("a cat", "< &unknownentity;").negative_words == ["&unknownentity;"]  # never decoded


HTML_TEXT = st.lists(st.sampled_from(list("ab1 ,.:()\\_-'<>&;") + [
    "cat", "&amp;", "&lt;", "&#39;", "a&amp;b", "BREAK", ":1.2)", ":0)", "\n"]), max_size=10).map("".join)


@settings(max_examples=300, deadline=None)
@given(HTML_TEXT, st.lists(st.sampled_from([0.0, 0.5, -2.0, -0.1, 1.0, 0.25]), min_size=40, max_size=40),
       st.booleans())
def test_the_pinned_prompt_has_the_same_tokens_under_a1111s_tokenizer(sd1, negative, values, punctuation):
    try:
        genome = build_genome("x", negative, punctuation=punctuation)
    except PromptError:
        return
    _, written = genome.prompt(values[: len(genome)])
    assert a1111_tokens(sd1, written) == a1111_tokens(sd1, negative)
