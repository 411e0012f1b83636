"""The checks of 04b_finetuning, visible and hidden, written here once.

A check marked `@visible` ships to students: `grader build` copies it, with the helpers and imports it
uses, into `llmcourse/checks/finetuning.py` (docstring: STUDENT_DOC below), where a student runs it before
grading. Visible checks use small worked examples and properties every right answer has, never the
reference. The other checks stay here and run only when a notebook is graded: they compare the student's
answers with `grader.reference.finetuning` and name the known mistakes.

mixed_dataset draws its replay rows at random, and the contract leaves the random procedure to the student:
its checks judge the counts, the order, the seed's role and the spread of the draws, never which rows one
seed picks.
"""
from __future__ import annotations

import random

from grader.reference import finetuning as ref
from llmcourse.checking import StudentRaised, expect, fail, graded, visible

STUDENT_DOC = """Visible checks for 04b_finetuning: what `check("04b_finetuning/<exercise>")` runs in your notebook.

They call your functions on small lists whose right answers can be worked out by hand (token ids, and rows
named "t0", "t1", ... for the task and "r0", "r1", ... for replay), and check the properties every right
answer has. More checks run when your notebook is graded.
"""

ASSIGNMENT = "04b_finetuning"


# -- instruction_labels ----------------------------------------------------------------------------

_LABELS_HINT = ("input_ids is the prompt followed by the response; labels is -100 for every prompt token, then the "
                "response's ids themselves. Do not shift anything: the model compares position i's prediction with "
                "label i + 1 itself.")


def _show(value, limit: int = 90) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + " ..."


def _as_list(value):
    """A list, tuple or tensor of ids as a list (what it holds is judged first, its type by its own check)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return list(value) if isinstance(value, (list, tuple)) else value


def _labels_mistake(prompt: list, response: list, labels) -> str | None:
    """The hint of a known mistake whose labels these are, or None."""
    n = len(prompt)
    known = [
        (prompt + response, "Every label is set, the prompt's too: without -100 on the prompt the model is also "
                            "trained to write the prompt. Put -100 at each prompt position."),
        ([-100] * n + [-100] * len(response), None),  # everything masked: said by the general message
        (prompt + [-100] * len(response), "The masking is the wrong way round: the PROMPT gets -100, the response "
                                          "keeps its ids (it is what the model must learn to write)."),
        ([-100] * max(n - 1, 0) + response + [-100], "The labels are shifted by one: do not shift them. A causal LM "
                                                     "from transformers shifts them itself (position i predicts "
                                                     "label i + 1), so labels[i] is simply input_ids[i] or -100."),
        ([0] * n + response, "The prompt's labels are 0, a real token id (the pad id): the loss then trains the model "
                             "to predict it. The value the loss skips is -100."),
        (response + [-100] * n, "The labels are in the wrong order: the prompt comes first, so its -100s come first, "
                                "then the response's ids."),
    ]
    for wrong, hint in known:
        if hint and labels == wrong and wrong != [-100] * n + response:
            return hint
    return None


def _expect_pair(result, prompt: list, response: list, what: str) -> None:
    if not isinstance(result, tuple) or len(result) != 2:
        fail(f"{what} should return a tuple (input_ids, labels), not {_show(result)}.",
             hint="End with `return input_ids, labels` (two lists).")
    input_ids, labels = (_as_list(v) for v in result)
    expected_ids, expected_labels = prompt + response, [-100] * len(prompt) + response
    expect(input_ids == expected_ids, f"{what}: input_ids should be {_show(expected_ids)} (the prompt, then the "
                                     f"response), not {_show(input_ids)}.", _LABELS_HINT)
    expect(labels == expected_labels,
           f"{what}: labels should be {_show(expected_labels)}, not {_show(labels)}.",
           _labels_mistake(prompt, response, labels) or _LABELS_HINT)


@visible
@graded("instruction_labels", points=12, hint=_LABELS_HINT)
def test_instruction_labels_small_example(student):
    prompt, response = [5, 17, 9, 40], [23, 8, 2]
    _expect_pair(student.instruction_labels(prompt, response), prompt, response,
                 "instruction_labels([5, 17, 9, 40], [23, 8, 2])")


@visible
@graded("instruction_labels", points=4, requires_main=True,
        hint="Return a tuple of two plain Python lists of ints (prompt_ids + response_ids is already one), not "
             "tensors: the data set is a list of dicts of lists, and pad_batch makes the tensors later.")
def test_instruction_labels_returns_two_lists_of_ints(student):
    input_ids, labels = student.instruction_labels([3, 4], [6, 2])
    for name, value in (("input_ids", input_ids), ("labels", labels)):
        expect(isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value),
               f"{name} should be a list of Python ints, not {type(value).__name__} {_show(value)}.")


@visible
@graded("instruction_labels", points=4, requires_main=True,
        hint="Build new lists (prompt_ids + response_ids makes one); don't extend, append to or assign into the "
             "lists you are given: the caller keeps using them.")
def test_instruction_labels_leaves_its_inputs_unchanged(student):
    prompt, response = [7, 8, 9], [10, 2]
    remote_prompt, remote_response = student.put(list(prompt)), student.put(list(response))
    _expect_pair(student.instruction_labels(remote_prompt, remote_response), prompt, response,
                 "instruction_labels([7, 8, 9], [10, 2])")
    expect(remote_prompt.fetch() == prompt and remote_response.fetch() == response,
           f"instruction_labels changed the lists it was given: prompt_ids is now {_show(remote_prompt.fetch())}, "
           f"response_ids {_show(remote_response.fetch())}.")


@graded("instruction_labels", points=12, hint=_LABELS_HINT)
def test_instruction_labels_random_lengths(student):
    rng = random.Random(70)
    for _ in range(12):
        prompt = [rng.randrange(3, 1600) for _ in range(rng.randint(1, 40))]
        response = [rng.randrange(3, 1600) for _ in range(rng.randint(1, 12))] + [2]
        result = student.instruction_labels(prompt, response)
        _expect_pair(result, prompt, response,
                     f"instruction_labels(a prompt of {len(prompt)} ids, a response of {len(response)})")
        expect(tuple(_as_list(v) for v in result) == ref.instruction_labels(prompt, response),
               "instruction_labels gave other ids than the reference.")


@graded("instruction_labels", points=8,
        hint="Nothing special for the edge cases: an empty prompt gives labels equal to the response, an empty "
             "response gives only -100s; ids equal to -100, 0 or the end-of-sequence id are kept as they are.")
def test_instruction_labels_edge_cases(student):
    cases = [([], [4, 5, 2], "an empty prompt"), ([4, 5, 6], [], "an empty response"), ([], [], "both empty"),
             ([9], [9], "one token each, the same id"), ([0, 0, 1], [0, 2], "pad ids (0) inside the texts"),
             ([2, 2], [2], "end-of-sequence ids in the prompt")]
    for prompt, response, what in cases:
        _expect_pair(student.instruction_labels(prompt, response), prompt, response,
                     f"instruction_labels({prompt}, {response}) ({what})")


# -- mixed_dataset ---------------------------------------------------------------------------------

_MIX_HINT = ("With n task rows and replay_fraction f, take k = round(f * n / (1 - f)) replay rows, so that they are "
             "the fraction f of the k + n rows returned; return all the task rows, in their order, then the k "
             "replay rows.")


def _rows(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def _expect_mix(result, task: list, replay: list, k: int, what: str, fraction: float | None = None) -> list:
    """The structure every right answer has: the task rows in order, then k distinct replay rows. Returns those.
    `fraction`, where given, names the mistake of reading replay_fraction as a share of the task rows."""
    if not isinstance(result, list):
        fail(f"{what} should return a list, not {type(result).__name__} {_show(result)}.",
             hint="Return a new list: list(task_rows) + the chosen replay rows.")
    n = len(task)
    if len(result) != n + k:
        hint = _MIX_HINT
        if len(result) == n and k:
            hint = ("The mixed data set has exactly as many rows as the task's: the replay rows are added to ALL the "
                    "task rows, none is replaced. " + _MIX_HINT)
        elif fraction is not None and len(result) - n == round(fraction * n):
            hint = ("replay_fraction is the share of replay rows in the MIXED data set (task rows + replay rows), "
                    "not a fraction of the task rows: k = round(f * n / (1 - f)), not round(f * n).")
        fail(f"{what} should return {n + k} rows ({n} task rows + {k} replay rows), not {len(result)}.", hint)
    expect(result[:n] == task, f"{what}: the first {n} rows should be the task rows, in their order; they are "
                               f"{_show(result[:n])}.",
           hint="Put the task rows first, unchanged and in their order, then the replay rows: "
                "list(task_rows) + chosen." if result[k:] != task else
                "The replay rows come after the task rows, not before them.")
    chosen = result[n:]
    strangers = [row for row in chosen if row not in replay]
    expect(not strangers, f"{what}: the last {k} rows should come from replay_rows, but {_show(strangers)} do not.")
    expect(len(set(chosen)) == len(chosen),
           f"{what}: the replay rows {_show(chosen)} include the same row more than once.",
           hint="Draw without replacement (each replay row at most once): a random permutation of the indices, cut "
                "to k, or random.Random(seed).sample.")
    return chosen


@visible
@graded("mixed_dataset", points=12, hint=_MIX_HINT)
def test_mixed_dataset_counts_and_order(student):
    task, replay = _rows("t", 12), _rows("r", 30)
    _expect_mix(student.mixed_dataset(task, replay, 0.25, seed=0), task, replay, 4,
                "mixed_dataset(12 task rows, 30 replay rows, 0.25) (4 replay rows: 4 of 16 is 0.25)", 0.25)
    task, replay = _rows("t", 8), _rows("r", 9)
    _expect_mix(student.mixed_dataset(task, replay, 0.5, seed=1), task, replay, 8,
                "mixed_dataset(8 task rows, 9 replay rows, 0.5) (8 replay rows: half of 16)", 0.5)


@visible
@graded("mixed_dataset", points=4,
        hint="replay_fraction = 0 asks for no replay at all: k = 0, and the result is a copy of the task rows.")
def test_mixed_dataset_without_replay(student):
    task, replay = _rows("t", 5), _rows("r", 3)
    _expect_mix(student.mixed_dataset(task, replay, 0.375, seed=3), task, replay, 3,
                "mixed_dataset(5 task rows, 3 replay rows, 0.375) (3 of 8 rows are replay)", 0.375)
    result = student.mixed_dataset(task, replay, 0.0, seed=3)
    expect(result == task, f"mixed_dataset(5 task rows, 3 replay rows, 0.0) should return the 5 task rows, not "
                           f"{_show(result)}.")


@visible
@graded("mixed_dataset", points=8,
        hint="Draw the replay rows at random from a generator seeded with `seed` (torch.Generator().manual_seed(seed) "
             "with torch.randperm, or random.Random(seed)), never from the global random state: the same seed then "
             "gives the same rows, and other seeds other rows.")
def test_mixed_dataset_is_random_but_seeded(student):
    task, replay = _rows("t", 6), _rows("r", 20)
    what = "mixed_dataset(6 task rows, 20 replay rows, 0.25, seed=s)"
    calls = [((task, replay, 0.25), {"seed": s}) for s in (5, 5, 6, 7, 8, 9)]
    results = student.construct("llmcourse.in_kernel.call_each", student.mixed_dataset, calls)
    chosen = [_expect_mix(r, task, replay, 2, what) for r in results]
    expect(chosen[0] == chosen[1], f"Two calls with seed=5 chose different replay rows: {chosen[0]} and {chosen[1]}.")
    expect(len({tuple(c) for c in chosen[1:]}) > 1,
           f"Seeds 5 to 9 all chose the same replay rows {chosen[0]}: is the draw random, and is `seed` used?")
    expect(any(set(c) != set(replay[:2]) for c in chosen),
           "Every seed chose the first replay rows: choose them at random.")


@visible
@graded("mixed_dataset", points=4,
        hint="Check the numbers before you draw: raise ValueError when replay_fraction is not in [0, 1), or when "
             "replay_rows has fewer than the k rows needed (a row must not be used twice).")
def test_mixed_dataset_refuses_what_it_cannot_do(student):
    _expect_mix(student.mixed_dataset(_rows("t", 3), _rows("r", 3), 0.5, seed=4), _rows("t", 3), _rows("r", 3), 3,
                "mixed_dataset(3 task rows, 3 replay rows, 0.5) (exactly enough replay rows)")
    for args, what in [((_rows("t", 10), _rows("r", 4), 0.5), "10 task rows, 4 replay rows, 0.5 (10 are needed)"),
                       ((_rows("t", 4), _rows("r", 40), 1.0), "replay_fraction 1.0 (no task rows could be left)"),
                       ((_rows("t", 4), _rows("r", 40), -0.1), "replay_fraction -0.1")]:
        try:
            result = student.mixed_dataset(*args)
        except StudentRaised as raised:
            expect(raised.type_name == "ValueError",
                   f"mixed_dataset({what}) raised {raised.type_name}; it should raise ValueError.")
            continue
        fail(f"mixed_dataset({what}) returned {_show(result)}; it should raise ValueError.")


@visible
@graded("mixed_dataset", points=4, requires_main=True,
        hint="Build a new list (list(task_rows) + chosen): don't extend, shuffle or pop from the lists you are "
             "given.")
def test_mixed_dataset_leaves_its_inputs_unchanged(student):
    task, replay = _rows("t", 6), _rows("r", 10)
    remote_task, remote_replay = student.put(list(task)), student.put(list(replay))
    _expect_mix(student.mixed_dataset(remote_task, remote_replay, 0.25, seed=0), task, replay, 2,
                "mixed_dataset(6 task rows, 10 replay rows, 0.25)")
    expect(remote_task.fetch() == task and remote_replay.fetch() == replay,
           f"mixed_dataset changed the lists it was given: task_rows is now {_show(remote_task.fetch())}, "
           f"replay_rows {_show(remote_replay.fetch())}.")


@graded("mixed_dataset", points=12, hint=_MIX_HINT)
def test_mixed_dataset_many_sizes(student):
    for n, m, f, seed in [(20, 50, 0.2, 0), (7, 30, 0.3, 1), (100, 400, 0.1, 2), (3, 3, 0.5, 3), (1, 20, 0.9, 4),
                          (50, 12, 0.125, 5), (0, 5, 0.5, 6), (9, 0, 0.0, 7), (40, 120, 0.6, 8)]:
        task, replay = _rows("t", n), _rows("r", m)
        k = ref._replay_count(n, f)
        _expect_mix(student.mixed_dataset(task, replay, f, seed=seed), task, replay, k,
                    f"mixed_dataset({n} task rows, {m} replay rows, {f}, seed={seed}) ({k} replay rows)", f)


@graded("mixed_dataset", points=4, hint="seed has a default, 0: mixed_dataset(task_rows, replay_rows, f) works.")
def test_mixed_dataset_seed_defaults_to_zero(student):
    task, replay = _rows("t", 6), _rows("r", 10)
    first = student.mixed_dataset(task, replay, 0.25)
    again = student.mixed_dataset(task, replay, 0.25, seed=0)
    _expect_mix(first, task, replay, 2, "mixed_dataset(6 task rows, 10 replay rows, 0.25)")
    expect(first == again, "mixed_dataset(..., 0.25) and mixed_dataset(..., 0.25, seed=0) gave different rows.")


@graded("mixed_dataset", points=8,
        hint="Every replay row must have the same chance: draw k distinct indices uniformly (torch.randperm(m)[:k] "
             "or random.Random(seed).sample(range(m), k)), not only from the start of the list.")
def test_mixed_dataset_draws_every_replay_row(student):
    task, replay = _rows("t", 9), _rows("r", 12)
    calls = [((task, replay, 0.25), {"seed": s}) for s in range(240)]
    results = student.construct("llmcourse.in_kernel.call_each", student.mixed_dataset, calls)
    counts = {row: 0 for row in replay}
    for result in results:
        for row in _expect_mix(result, task, replay, 3, "mixed_dataset(9 task rows, 12 replay rows, 0.25, seed=s)"):
            counts[row] += 1
    # 240 draws of 3 of 12 rows: each row is chosen 60 times on average; 25 and 100 are far outside chance.
    rare = [row for row, c in counts.items() if c < 25]
    common = [row for row, c in counts.items() if c > 100]
    expect(not rare and not common,
           f"Over 240 seeds the replay rows were chosen unevenly: {_show(counts, 200)} (each should be near 60).")
    expect(len({tuple(r[len(task):]) for r in results}) > 100, "240 seeds gave fewer than 100 different choices.")


@graded("mixed_dataset", points=4, requires_main=True,
        hint="Raise ValueError (not another error, and before drawing) when replay_fraction is outside [0, 1) or when "
             "fewer replay rows are given than needed.")
def test_mixed_dataset_refuses_impossible_requests(student):
    for args, what in [((_rows("t", 30), _rows("r", 29), 0.5), "30 task rows, 29 replay rows, 0.5 (30 are needed)"),
                       ((_rows("t", 3), _rows("r", 5), 1.5), "replay_fraction 1.5"),
                       ((_rows("t", 3), [], 0.25), "no replay rows, 0.25 (1 is needed)")]:
        try:
            result = student.mixed_dataset(*args)
        except StudentRaised as raised:
            expect(raised.type_name == "ValueError",
                   f"mixed_dataset({what}) raised {raised.type_name}; it should raise ValueError.")
            continue
        fail(f"mixed_dataset({what}) returned {_show(result)}; it should raise ValueError.")
    result = student.mixed_dataset(_rows("t", 4), _rows("r", 4), 0.5, seed=2)  # exactly enough: every row once
    _expect_mix(result, _rows("t", 4), _rows("r", 4), 4, "mixed_dataset(4 task rows, 4 replay rows, 0.5)")
