"""Few-shot task families whose mapping can only be read off the examples.

All word tasks take the same kind of input (a noun) and all symbol tasks the same kind (three digits),
so a query on its own is ambiguous: "cat" may ask for "animal", "red", "dax", "A" or "yes", and "4 7 2"
for "2 7 4", "2 4 7", "7", "5 8 3" or "r l t". The examples say which family is meant. The label words
of the code families are arbitrary ("dax", "wug"...): nothing in the word says which code is meant.
Some families share a label word ("red" is the animals' label in two colour codes, "dax" in two
nonsense codes), so an example of that kind leaves the family open, and accuracy keeps rising with
more shots; the symbol families share all their digits, so they are told apart only by how each
output relates to its input.

The language model learns the families in pretraining; at test time it has to *recognise* the family
from the examples and apply it to inputs it has never seen in that family: the test split holds out a
quarter of the words of each word family (the model knows their kind from the other families) and a
quarter of the digit triples of each symbol family. Spelling tasks (plural, first letter) are left out
on purpose: a model cannot spell a held-out word's tokens it has never seen spelled.
"""
from __future__ import annotations

import itertools
import random

import lexicon as L

WORDS = [(w, kind) for kind, words in L.KINDS.items() for w in words]
KIND_OF = {w: kind for w, kind in WORDS}

CODES = {
    "colour": {"animal": "red", "food": "blue", "thing": "green", "place": "yellow"},
    "colour_mix": {"animal": "red", "food": "pink", "thing": "brown", "place": "white"},
    "nonsense": {"animal": "dax", "food": "wug", "thing": "blick", "place": "fep"},
    "nonsense_mix": {"animal": "dax", "food": "zib", "thing": "mup", "place": "tor"},
    "letter": {"animal": "A", "food": "B", "thing": "C", "place": "D"},
}

DIGIT_CIPHER = dict(zip("0123456789", ["k", "p", "t", "m", "r", "s", "b", "l", "n", "d"]))


def word_task(task: str, word: str) -> str:
    kind = KIND_OF[word]
    if task == "kind":
        return kind
    if task in CODES:
        return CODES[task][kind]
    if task == "is_animal":
        return "yes" if kind == "animal" else "no"
    raise KeyError(task)


def symbol_task(task: str, digits: tuple[int, ...]) -> str:
    if task == "reverse":
        out = digits[::-1]
    elif task == "sort":
        out = tuple(sorted(digits))
    elif task == "max":
        out = (max(digits),)
    elif task == "add_one":
        out = tuple((d + 1) % 10 for d in digits)
    elif task == "cipher":
        return " ".join(DIGIT_CIPHER[str(d)] for d in digits)
    else:
        raise KeyError(task)
    return " ".join(map(str, out))


WORD_TASKS = ["kind", "colour", "colour_mix", "nonsense", "nonsense_mix", "letter", "is_animal"]
SYMBOL_TASKS = ["reverse", "sort", "max", "add_one", "cipher"]
TASKS = WORD_TASKS + SYMBOL_TASKS
# The families whose answer is a label word that the examples define: the in-context-learning benchmark.
LABEL_TASKS = ["colour", "colour_mix", "nonsense", "nonsense_mix", "letter", "is_animal", "cipher"]


def make_items(seed: int, test_fraction: float = 0.25) -> tuple[list[dict], list[dict]]:
    """Every (task, input, output) item, split so that each task's test inputs are new to that task."""
    rng = random.Random(seed)
    train, test = [], []
    triples = list(itertools.product(range(10), repeat=3))
    for task in TASKS:
        if task in WORD_TASKS:
            inputs = [w for w, _ in WORDS]
            # Hold out the same share of every kind, so that the test split is balanced.
            held = set()
            for kind, words in L.KINDS.items():
                held.update(rng.sample(words, round(len(words) * test_fraction)))
            rows = [(w, word_task(task, w), w in held) for w in inputs]
        else:
            chosen = rng.sample(triples, 400)
            held = set(chosen[: int(len(chosen) * test_fraction)])
            rows = [(" ".join(map(str, t)), symbol_task(task, t), t in held) for t in chosen]
        for inp, out, is_test in rows:
            (test if is_test else train).append({"task": task, "input": inp, "output": out})
    return train, test
