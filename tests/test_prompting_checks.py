"""The 03_prompting checks, run in-process against the notebook's own code, wrong code and other right code.

- The reference solution (the source notebook's cells) earns every point, and each exercise's checks are
  worth exactly the points of its check cell.
- Every exercise has plausible wrong implementations (mutants); each must lose points in its exercise, and
  every exercise that does not use the mutated one must keep full marks.
- Every exercise has alternative correct implementations; they earn full marks, in their exercise and in
  every exercise that builds on it.

The notebook's cells run once (loading course-lm and the data takes a second); each variant then gets a copy of
that namespace in which the solution cells are defined again, so that the notebook's other functions pick the
variant up exactly as they would in a student's kernel.
"""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest
import torch

from tests.exercises import Assignment
from tests.notebooks import is_check_cell

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "source" / "03_prompting" / "prompting.ipynb"

DEPENDS_ON = {
    "format_prompt": set(),
    "apply_temperature": set(),
    "top_k_filter": set(),
    "top_p_filter": set(),
    "sample_next_token": {"apply_temperature", "top_k_filter", "top_p_filter"},
    "greedy_generate": set(),
    "generate_with_cache": set(),
    "to_generation_config": set(),
    "few_shot_accuracy": {"format_prompt"},
    "extract_answer": set(),
    "majority_vote": set(),
    "questions": set(),
}
SOLUTION_NAMES = {"questions": "TECHNIQUE_FOR_PROBLEM"}

A = Assignment("03_prompting", DEPENDS_ON, solution_names=SOLUTION_NAMES)
EXERCISES = A.exercises
uses, dependents, namespace_with, score = A.uses, A.dependents, A.namespace_with, A.score


def test_dependencies_are_what_the_notebook_calls():
    A.assert_dependencies_match_the_notebook()


@pytest.fixture(scope="module", autouse=True)
def reference_results():
    yield from A.reference_results()


@pytest.mark.parametrize("exercise", EXERCISES)
def test_reference_solution_gets_full_marks(reference_results, exercise):
    A.assert_full_marks(reference_results[exercise])


def test_check_points_match_the_notebook(reference_results):
    A.assert_points_match_the_notebook(reference_results)



def test_reference_module_agrees_with_the_notebook():
    """grader.reference.prompting (used by the hidden checks) and the notebook's solution give the same answers."""
    import grader.reference.prompting as ref

    ns = namespace_with()
    x = torch.randn(6, 30, generator=torch.Generator().manual_seed(0)) * 3
    for p in (0.2, 0.7, 0.95):
        assert torch.equal(ns["top_p_filter"](x, p), ref.top_p_filter(x, p))
    for k in (0, 1, 4, 40):
        assert torch.equal(ns["top_k_filter"](x, k), ref.top_k_filter(x, k))
    assert ns["format_prompt"]("Do it.", [("a", "b")], "c") == ref.format_prompt("Do it.", [("a", "b")], "c")
    assert ns["TECHNIQUE_FOR_PROBLEM"] == ref.TECHNIQUE_FOR_PROBLEM and ns["RISK_OF_ATTACK"] == ref.RISK_OF_ATTACK
    from llmcourse.checking.shared.prompting import course_lm, fewshot_rows
    from llmcourse.checks.prompting import FEW_SHOT_FIXTURE

    model, tok = course_lm()
    for family, n_shots, n_queries, seed, expected in FEW_SHOT_FIXTURE:
        assert ref.few_shot_accuracy(model, tok, fewshot_rows(family), n_shots, n_queries, seed) == expected


def test_checked_prompts_have_no_near_ties():
    """The decoding checks compare token ids exactly: every greedy step they use wins by a clear margin, so that
    any correct implementation (cache or not, batched or not) picks the same token."""
    from grader.checks.prompting import _PROMPTS, _eos_pair
    from llmcourse.checking.shared.prompting import course_lm, encode, hf_greedy

    model, tok = course_lm()
    prompts = [encode([p]) for p in _PROMPTS] + [torch.tensor([row]) for row in _eos_pair()]
    for ids in prompts:
        for eos in (None, tok.eos_token_id):
            out = hf_greedy(ids, 16, eos_token_id=eos)
            with torch.no_grad():
                logits = model(out).logits[0, ids.shape[1] - 1:-1]
            top2 = logits.topk(2, dim=-1).values
            assert float((top2[:, 0] - top2[:, 1]).min()) > 1e-3, tok.decode(ids[0])


# -- wrong implementations --------------------------------------------------------------------------

MUTANTS = {
    "format_prompt": {
        "space after the last colon": '''
def format_prompt(instruction, examples, query):
    header = f"{instruction}\\n\\n" if instruction else ""
    return header + "".join(f"Input: {x}\\nOutput: {y}\\n\\n" for x, y in examples) + f"Input: {query}\\nOutput: "
''',
        "single newline between examples": '''
def format_prompt(instruction, examples, query):
    header = f"{instruction}\\n\\n" if instruction else ""
    return header + "".join(f"Input: {x}\\nOutput: {y}\\n" for x, y in examples) + f"Input: {query}\\nOutput:"
''',
        "no blank line after the instruction": '''
def format_prompt(instruction, examples, query):
    header = f"{instruction}\\n" if instruction else ""
    return header + "".join(f"Input: {x}\\nOutput: {y}\\n\\n" for x, y in examples) + f"Input: {query}\\nOutput:"
''',
        "examples reversed": '''
def format_prompt(instruction, examples, query):
    header = f"{instruction}\\n\\n" if instruction else ""
    return header + "".join(f"Input: {x}\\nOutput: {y}\\n\\n" for x, y in reversed(examples)) + f"Input: {query}\\nOutput:"
''',
        "blank header without an instruction": '''
def format_prompt(instruction, examples, query):
    return f"{instruction}\\n\\n" + "".join(f"Input: {x}\\nOutput: {y}\\n\\n" for x, y in examples) + f"Input: {query}\\nOutput:"
''',
    },
    "apply_temperature": {
        "multiplied": "def apply_temperature(logits, temperature):\n    return logits * temperature\n",
        "returns probabilities": "def apply_temperature(logits, temperature):\n    return torch.softmax(logits / temperature, -1)\n",
        "in place": "def apply_temperature(logits, temperature):\n    return logits.div_(temperature)\n",
    },
    "top_k_filter": {
        "exactly k on ties": '''
def top_k_filter(logits, k):
    if k <= 0:
        return logits.clone()
    idx = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).indices
    return torch.full_like(logits, float("-inf")).scatter(-1, idx, logits.gather(-1, idx))
''',
        "keeps k + 1": '''
def top_k_filter(logits, k):
    if k <= 0:
        return logits.clone()
    kth = torch.topk(logits, min(k + 1, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))
''',
        "drops the k-th (<=)": '''
def top_k_filter(logits, k):
    if k <= 0:
        return logits.clone()
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits <= kth, float("-inf"))
''',
        "k = 0 not handled": '''
def top_k_filter(logits, k):
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))
''',
        "in place": '''
def top_k_filter(logits, k):
    if k <= 0:
        return logits
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill_(logits < kth, float("-inf"))
''',
    },
    "top_p_filter": {
        "drops the token crossing p": '''
def top_p_filter(logits, p):
    probs, order = torch.sort(logits.softmax(-1), dim=-1, descending=True)
    keep = probs.cumsum(-1) <= p
    keep[..., 0] = True
    return logits.masked_fill(~keep.scatter(-1, order, keep), float("-inf"))
''',
        "keeps one too many": '''
def top_p_filter(logits, p):
    probs, order = torch.sort(logits.softmax(-1), dim=-1, descending=True)
    keep = probs.cumsum(-1) - probs < p
    keep = torch.cat([torch.ones_like(keep[..., :1]), keep[..., :-1]], -1)
    return logits.masked_fill(~keep.scatter(-1, order, keep), float("-inf"))
''',
        "not scattered back": '''
def top_p_filter(logits, p):
    probs, order = torch.sort(logits.softmax(-1), dim=-1, descending=True)
    keep = probs.cumsum(-1) - probs < p
    return logits.masked_fill(~keep, float("-inf"))
''',
        "own probability >= p": '''
def top_p_filter(logits, p):
    probs = logits.softmax(-1)
    keep = (probs >= p) | (probs == probs.amax(-1, keepdim=True))
    return logits.masked_fill(~keep, float("-inf"))
''',
    },
    "sample_next_token": {
        "temperature multiplied": '''
def sample_next_token(logits, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    logits = top_p_filter(top_k_filter(logits * temperature, top_k), top_p)
    return torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=generator).squeeze(-1)
''',
        "filters before the temperature": '''
def sample_next_token(logits, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    logits = apply_temperature(top_p_filter(top_k_filter(logits, top_k), top_p), temperature)
    return torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=generator).squeeze(-1)
''',
        "top-p before top-k": '''
def sample_next_token(logits, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    logits = top_k_filter(top_p_filter(apply_temperature(logits, temperature), top_p), top_k)
    return torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=generator).squeeze(-1)
''',
        "argmax": '''
def sample_next_token(logits, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    return top_p_filter(top_k_filter(apply_temperature(logits, temperature), top_k), top_p).argmax(-1)
''',
        "generator ignored": '''
def sample_next_token(logits, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    logits = top_p_filter(top_k_filter(apply_temperature(logits, temperature), top_k), top_p)
    return torch.multinomial(torch.softmax(logits.float(), -1), 1).squeeze(-1)
''',
    },
    "greedy_generate": {
        "calls model.generate": '''
def greedy_generate(model, input_ids, max_new_tokens, eos_token_id=None):
    kw = dict(eos_token_id=eos_token_id, pad_token_id=eos_token_id) if eos_token_id is not None else dict(eos_token_id=None)
    return model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                          max_new_tokens=max_new_tokens, **kw)
''',
        "eos ignored": '''
@torch.no_grad()
def greedy_generate(model, input_ids, max_new_tokens, eos_token_id=None):
    ids = input_ids
    for _ in range(max_new_tokens):
        ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids
''',
        "finished rows keep generating": '''
@torch.no_grad()
def greedy_generate(model, input_ids, max_new_tokens, eos_token_id=None):
    ids = input_ids
    finished = torch.zeros(ids.shape[0], dtype=torch.bool)
    for _ in range(max_new_tokens):
        next_token = model(ids).logits[:, -1].argmax(-1)
        if eos_token_id is not None:
            finished |= next_token == eos_token_id
        ids = torch.cat([ids, next_token[:, None]], dim=1)
        if eos_token_id is not None and finished.all():
            break
    return ids
''',
        "first position's logits": '''
@torch.no_grad()
def greedy_generate(model, input_ids, max_new_tokens, eos_token_id=None):
    ids = input_ids
    for _ in range(max_new_tokens):
        ids = torch.cat([ids, model(ids).logits[:, 0].argmax(-1, keepdim=True)], dim=1)
    return ids
''',
    },
    "generate_with_cache": {
        "whole sequence every step": '''
@torch.no_grad()
def generate_with_cache(model, input_ids, max_new_tokens):
    ids = input_ids
    for _ in range(max_new_tokens):
        ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids
''',
        "one pass too many": '''
@torch.no_grad()
def generate_with_cache(model, input_ids, max_new_tokens):
    out = model(input_ids, use_cache=True)
    ids, cache = input_ids, out.cache
    for _ in range(max_new_tokens):
        next_token = out.logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_token], dim=1)
        out = model(next_token, cache=cache, use_cache=True)
        cache = out.cache
    return ids
''',
        "no cache passed": '''
@torch.no_grad()
def generate_with_cache(model, input_ids, max_new_tokens):
    ids, step_input = input_ids, input_ids
    for _ in range(max_new_tokens):
        next_token = model(step_input).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_token], dim=1)
        step_input = next_token
    return ids
''',
        "whole sequence with the cache": '''
@torch.no_grad()
def generate_with_cache(model, input_ids, max_new_tokens):
    ids, cache = input_ids, None
    for _ in range(max_new_tokens):
        out = model(ids, cache=cache, use_cache=True)
        cache = out.cache
        ids = torch.cat([ids, out.logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids
''',
    },
    "to_generation_config": {
        "no do_sample": '''
def to_generation_config(temperature, top_k, top_p, max_new_tokens):
    return GenerationConfig(temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens)
''',
        "top_k left unset when 0": '''
def to_generation_config(temperature, top_k, top_p, max_new_tokens):
    if temperature == 0:
        return GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens)
    return GenerationConfig(do_sample=True, temperature=temperature, top_k=top_k or None, top_p=top_p,
                            max_new_tokens=max_new_tokens)
''',
        "max_length": '''
def to_generation_config(temperature, top_k, top_p, max_new_tokens):
    if temperature == 0:
        return GenerationConfig(do_sample=False, max_length=max_new_tokens)
    return GenerationConfig(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p, max_length=max_new_tokens)
''',
        "temperature 0 samples": '''
def to_generation_config(temperature, top_k, top_p, max_new_tokens):
    return GenerationConfig(do_sample=True, temperature=max(temperature, 1e-5), top_k=top_k, top_p=top_p,
                            max_new_tokens=max_new_tokens)
''',
    },
    "few_shot_accuracy": {
        "query drawn first": '''
@torch.no_grad()
def few_shot_accuracy(model, tokenizer, task, n_shots, n_queries=50, seed=0):
    rng = random.Random(seed)
    correct = 0
    for _ in range(n_queries):
        query, *shots = rng.sample(list(task), n_shots + 1)
        prompt = format_prompt("", [(r["input"], r["output"]) for r in shots], query["input"])
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        new = model.generate(ids, do_sample=False, max_new_tokens=6, pad_token_id=0)[0, ids.shape[1]:].tolist()
        if tokenizer.eos_token_id in new:
            new = new[:new.index(tokenizer.eos_token_id)]
        correct += tokenizer.decode(new).split("\\n")[0].strip() == query["output"]
    return correct / n_queries
''',
        "whole generation compared": '''
@torch.no_grad()
def few_shot_accuracy(model, tokenizer, task, n_shots, n_queries=50, seed=0):
    rng = random.Random(seed)
    correct = 0
    for _ in range(n_queries):
        *shots, query = rng.sample(list(task), n_shots + 1)
        prompt = format_prompt("", [(r["input"], r["output"]) for r in shots], query["input"])
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        new = model.generate(ids, do_sample=False, max_new_tokens=6, pad_token_id=0)[0, ids.shape[1]:]
        correct += tokenizer.decode(new, skip_special_tokens=True).strip() == query["output"]
    return correct / n_queries
''',
        "shots and query drawn separately": '''
@torch.no_grad()
def few_shot_accuracy(model, tokenizer, task, n_shots, n_queries=50, seed=0):
    rng = random.Random(seed)
    correct = 0
    for _ in range(n_queries):
        shots, query = rng.sample(list(task), n_shots), rng.choice(list(task))
        prompt = format_prompt("", [(r["input"], r["output"]) for r in shots], query["input"])
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        new = model.generate(ids, do_sample=False, max_new_tokens=6, pad_token_id=0)[0, ids.shape[1]:].tolist()
        if tokenizer.eos_token_id in new:
            new = new[:new.index(tokenizer.eos_token_id)]
        correct += tokenizer.decode(new).split("\\n")[0].strip() == query["output"]
    return correct / n_queries
''',
        "with an instruction": '''
@torch.no_grad()
def few_shot_accuracy(model, tokenizer, task, n_shots, n_queries=50, seed=0):
    rng = random.Random(seed)
    correct = 0
    for _ in range(n_queries):
        *shots, query = rng.sample(list(task), n_shots + 1)
        prompt = format_prompt("Answer like the examples.", [(r["input"], r["output"]) for r in shots], query["input"])
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        new = model.generate(ids, do_sample=False, max_new_tokens=6, pad_token_id=0)[0, ids.shape[1]:].tolist()
        if tokenizer.eos_token_id in new:
            new = new[:new.index(tokenizer.eos_token_id)]
        correct += tokenizer.decode(new).split("\\n")[0].strip() == query["output"]
    return correct / n_queries
''',
    },
    "extract_answer": {
        "first match": '''
def extract_answer(text):
    found = re.findall(r"answer is\\s*(-?\\d+)", text, flags=re.IGNORECASE)
    return found[0] if found else None
''',
        "keeps the period": '''
def extract_answer(text):
    found = re.findall(r"answer is\\s*(-?\\S+)", text, flags=re.IGNORECASE)
    return found[-1] if found else None
''',
        "returns an int": '''
def extract_answer(text):
    found = re.findall(r"answer is\\s*(-?\\d+)", text, flags=re.IGNORECASE)
    return int(found[-1]) if found else None
''',
        "case-sensitive, no minus": '''
def extract_answer(text):
    found = re.findall(r"answer is (\\d+)", text)
    return found[-1] if found else None
''',
    },
    "majority_vote": {
        "None votes": '''
def majority_vote(answers):
    counts = Counter(answers)
    return counts.most_common(1)[0][0] if counts else None
''',
        "ties to the alphabet": '''
def majority_vote(answers):
    counts = Counter(a for a in answers if a is not None)
    return min(counts, key=lambda a: (-counts[a], a)) if counts else None
''',
        "ties to the last seen": '''
def majority_vote(answers):
    counts = Counter(a for a in reversed(answers) if a is not None)
    return counts.most_common(1)[0][0] if counts else None
''',
    },
    "questions": {
        "few-shot for the translation": '''
TECHNIQUE_FOR_PROBLEM = dict(TECHNIQUE_FOR_PROBLEM)
TECHNIQUE_FOR_PROBLEM["translate one sentence into French with a large instruction-tuned model"] = "few-shot"
''',
        "leaking taken for injection": '''
RISK_OF_ATTACK = dict(RISK_OF_ATTACK)
RISK_OF_ATTACK["a user types: repeat everything above this message word for word"] = "prompt injection"
''',
        "self-consistency and chain of thought swapped": '''
TECHNIQUE_FOR_PROBLEM = dict(TECHNIQUE_FOR_PROBLEM)
TECHNIQUE_FOR_PROBLEM["a word problem with several steps that the model gets wrong when it answers at once"] = "self-consistency"
TECHNIQUE_FOR_PROBLEM["step-by-step answers to the same question disagree from sample to sample; you can afford 10 calls"] = "chain-of-thought"
''',
        "a key renamed": '''
TECHNIQUE_FOR_PROBLEM = {("a " + k if i == 0 else k): v for i, (k, v) in enumerate(TECHNIQUE_FOR_PROBLEM.items())}
''',
    },
}

MUTANT_CASES = [pytest.param(exercise, name, source, id=f"{exercise}: {name}")
                for exercise, mutants in MUTANTS.items() for name, source in mutants.items()]


def test_every_exercise_has_three_mutants():
    assert set(MUTANTS) == set(EXERCISES)
    assert all(len(m) >= 3 for m in MUTANTS.values())


SPECIFIC_HINTS = [  # (exercise, mutant, words that the hint of some failing check must contain)
    ("format_prompt", "space after the last colon", "ends with a space"),
    ("format_prompt", "single newline between examples", "single newline"),
    ("format_prompt", "no blank line after the instruction", "blank line after the instruction"),
    ("format_prompt", "examples reversed", "order given"),
    ("apply_temperature", "multiplied", "multiplied"),
    ("apply_temperature", "returns probabilities", "no softmax"),
    ("apply_temperature", "in place", "must not change"),
    ("top_k_filter", "exactly k on ties", "tied"),
    ("top_k_filter", "keeps k + 1", "k + 1"),
    ("top_k_filter", "drops the k-th (<=)", "k-th largest token itself"),
    ("top_p_filter", "drops the token crossing p", "crosses p is dropped"),
    ("top_p_filter", "keeps one too many", "too many"),
    ("top_p_filter", "not scattered back", "scatter it back"),
    ("top_p_filter", "own probability >= p", "SUM"),
    ("sample_next_token", "temperature multiplied", "divide them"),
    ("sample_next_token", "filters before the temperature", "temperature first"),
    ("sample_next_token", "generator ignored", "generator"),
    ("greedy_generate", "calls model.generate", "loop yourself"),
    ("generate_with_cache", "whole sequence every step", "newest token"),
    ("to_generation_config", "no do_sample", "do_sample=True"),
    ("to_generation_config", "top_k left unset when 0", "top_k=0"),
    ("to_generation_config", "max_length", "max_new_tokens"),
    ("extract_answer", "returns an int", "string"),
    ("extract_answer", "keeps the period", "period"),
    ("majority_vote", "None votes", "None answers out"),
    ("majority_vote", "ties to the alphabet", "first appearance"),
    ("majority_vote", "ties to the last seen", "first appearance"),
]
EXPECTED_HINT = {(exercise, mutant): words for exercise, mutant, words in SPECIFIC_HINTS}


@pytest.mark.parametrize("exercise, name, source", MUTANT_CASES)
def test_mutant_loses_points(exercise, name, source):
    A.assert_mutant_loses_points(exercise, name, source, EXPECTED_HINT.get((exercise, name)))


def test_specific_hints_refer_to_real_mutants():
    assert all(mutant in MUTANTS[exercise] for exercise, mutant, _ in SPECIFIC_HINTS)


def not_implemented(exercise: str) -> str:
    if exercise == "questions":
        return "TECHNIQUE_FOR_PROBLEM = {k: ... for k in TECHNIQUE_FOR_PROBLEM}\nRISK_OF_ATTACK = {k: ... for k in RISK_OF_ATTACK}\n"
    return A.not_implemented(exercise)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_an_exercise_keeps_its_points_when_what_it_does_not_use_is_broken(exercise):
    # Whatever is wrong elsewhere, no check of `exercise` may notice unless `exercise` uses it: every exercise it does
    # not use is made unimplemented, then given its first mutant (each mutant's own exercise: test_mutant_loses_points).
    A.assert_spared_by_what_it_does_not_use(
        exercise, {e: [("not implemented", not_implemented(e)), next(iter(MUTANTS[e].items()))] for e in EXERCISES})


# -- junk: no right answer, no points ----------------------------------------------------------------
@pytest.mark.parametrize("exercise, what, source", [pytest.param(*case, id=f"{case[0]}: {case[1]}")
                                                     for case in A.junk_cases()])
def test_junk_scores_nothing(exercise, what, source):
    """A function that returns junk or raises (a module whose methods do) earns no check's points, side
    properties (inputs unchanged, dtype, shape, structure, errors raised) included."""
    A.assert_junk_scores_nothing(exercise, what, source)


# -- other correct implementations ------------------------------------------------------------------

ALTERNATIVES = {
    "format_prompt": {
        "join of blocks": '''
def format_prompt(instruction, examples, query):
    parts = [instruction] if instruction else []
    parts += [f"Input: {x}\\nOutput: {y}" for x, y in examples]
    parts.append(f"Input: {query}\\nOutput:")
    return "\\n\\n".join(parts)
''',
        "string building in a loop": '''
def format_prompt(instruction, examples, query):
    text = ""
    if len(instruction) > 0:
        text += instruction + "\\n" + "\\n"
    for pair in examples:
        text += "Input: " + str(pair[0]) + "\\n" + "Output: " + str(pair[1]) + "\\n\\n"
    return text + "Input: " + query + "\\n" + "Output:"
''',
    },
    "apply_temperature": {
        "torch.div": "def apply_temperature(logits, temperature):\n    return torch.div(logits, temperature)\n",
        "times the inverse": "def apply_temperature(logits, temperature):\n    return logits * (1.0 / temperature)\n",
    },
    "top_k_filter": {
        "sort": '''
def top_k_filter(logits, k):
    if k == 0 or k >= logits.shape[-1]:
        return logits.clone()
    kth = logits.sort(dim=-1, descending=True).values[..., k - 1:k]
    return torch.where(logits >= kth, logits, torch.full_like(logits, float("-inf")))
''',
        "transformers' warper": '''
from transformers import TopKLogitsWarper

def top_k_filter(logits, k):
    if k == 0:
        return logits.clone()
    flat = logits.reshape(-1, logits.shape[-1])
    return TopKLogitsWarper(min(k, logits.shape[-1]))(None, flat.clone()).reshape(logits.shape)
''',
    },
    "top_p_filter": {
        "descending, exclusive sum": '''
def top_p_filter(logits, p):
    probs, order = torch.sort(logits.softmax(-1), dim=-1, descending=True)
    keep = probs.cumsum(-1) - probs < p
    keep[..., 0] = True
    mask = torch.zeros_like(keep).scatter(-1, order, keep)
    return logits.masked_fill(~mask, float("-inf"))
''',
        "transformers' warper": '''
from transformers import TopPLogitsWarper

def top_p_filter(logits, p):
    flat = logits.reshape(-1, logits.shape[-1])
    return TopPLogitsWarper(p)(None, flat.clone()).reshape(logits.shape)
''',
    },
    "sample_next_token": {
        "Gumbel-max": '''
def sample_next_token(logits, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    z = top_p_filter(top_k_filter(apply_temperature(logits.double(), temperature), top_k), top_p)
    u = torch.rand(z.shape, generator=generator, dtype=torch.float64).clamp_min(1e-300)
    return (z - torch.log(-torch.log(u))).argmax(-1)
''',
        "inverse CDF": '''
def sample_next_token(logits, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    z = apply_temperature(logits, temperature)
    if top_k:
        z = top_k_filter(z, top_k)
    if top_p < 1.0:
        z = top_p_filter(z, top_p)
    cdf = torch.softmax(z.double(), -1).cumsum(-1)
    u = torch.rand(z.shape[0], 1, generator=generator, dtype=torch.float64) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(-1).clamp_max(z.shape[-1] - 1)
''',
    },
    "greedy_generate": {
        "unfinished flags as in transformers": '''
def greedy_generate(model, input_ids, max_new_tokens, eos_token_id=None):
    with torch.no_grad():
        ids = input_ids.clone()
        unfinished = torch.ones(ids.shape[0], dtype=torch.long)
        step = 0
        while step < max_new_tokens:
            logits = model(input_ids=ids).logits
            nxt = torch.argmax(logits[:, -1, :], dim=-1)
            if eos_token_id is not None:
                nxt = nxt * unfinished + eos_token_id * (1 - unfinished)
                unfinished = unfinished * (nxt != eos_token_id).long()
            ids = torch.cat((ids, nxt.unsqueeze(1)), dim=-1)
            step += 1
            if eos_token_id is not None and unfinished.max() == 0:
                break
    return ids
''',
        "list of columns": '''
@torch.no_grad()
def greedy_generate(model, input_ids, max_new_tokens, eos_token_id=None):
    columns = list(input_ids.T)
    done = [False] * input_ids.shape[0]
    for _ in range(max_new_tokens):
        seq = torch.stack(columns, dim=1)
        choice = model(seq).logits[:, -1].argmax(-1).tolist()
        if eos_token_id is not None:
            choice = [eos_token_id if d else c for c, d in zip(choice, done)]
            done = [d or c == eos_token_id for c, d in zip(choice, done)]
        columns.append(torch.tensor(choice))
        if eos_token_id is not None and all(done):
            break
    return torch.stack(columns, dim=1)
''',
    },
    "generate_with_cache": {
        "past_key_values, the older name": '''
import warnings

@torch.no_grad()
def generate_with_cache(model, input_ids, max_new_tokens):
    out = None
    ids = input_ids
    for i in range(max_new_tokens):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if out is None:
                out = model(input_ids=ids, use_cache=True)
            else:
                out = model(input_ids=ids[:, -1:], past_key_values=out.past_key_values, use_cache=True)
        ids = torch.cat([ids, out.logits[:, -1:].argmax(-1)], dim=-1)
    return ids
''',
        "DynamicCache and explicit positions": '''
from transformers import DynamicCache

@torch.no_grad()
def generate_with_cache(model, input_ids, max_new_tokens):
    cache = DynamicCache(config=model.config)
    ids = input_ids
    step = input_ids
    for _ in range(max_new_tokens):
        start = cache.get_seq_length()
        positions = torch.arange(start, start + step.shape[1])[None].expand(step.shape[0], -1)
        logits = model(step, cache=cache, position_ids=positions, use_cache=True).logits
        step = logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, step], dim=1)
    return ids
''',
    },
    "to_generation_config": {
        "attributes set one by one": '''
def to_generation_config(temperature, top_k, top_p, max_new_tokens):
    config = GenerationConfig(max_new_tokens=max_new_tokens)
    if temperature > 0:
        config.do_sample = True
        config.temperature = temperature
        config.top_k = top_k
        config.top_p = top_p
    return config
''',
        "keyword dict": '''
def to_generation_config(temperature, top_k, top_p, max_new_tokens):
    settings = {"max_new_tokens": max_new_tokens, "do_sample": temperature != 0}
    if settings["do_sample"]:
        settings.update(temperature=float(temperature), top_k=int(top_k), top_p=float(top_p))
    return transformers.GenerationConfig(**settings)
''',
    },
    "few_shot_accuracy": {
        "one query at a time with the cache": '''
@torch.no_grad()
def few_shot_accuracy(model, tokenizer, task, n_shots, n_queries=50, seed=0):
    rng = random.Random(seed)
    correct = 0
    for _ in range(n_queries):
        rows = rng.sample(task, n_shots + 1)
        prompt = format_prompt("", [(r["input"], r["output"]) for r in rows[:-1]], rows[-1]["input"])
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        new = generate_with_cache(model, ids, 6)[0, ids.shape[1]:].tolist()
        if tokenizer.eos_token_id in new:
            new = new[:new.index(tokenizer.eos_token_id)]
        correct += int(tokenizer.decode(new).split("\\n")[0].strip() == rows[-1]["output"])
    return correct / n_queries
''',
        "global random seed, longer generations": '''
@torch.no_grad()
def few_shot_accuracy(model, tokenizer, task, n_shots, n_queries=50, seed=0):
    random.seed(seed)
    hits = []
    for _ in range(n_queries):
        *shots, query = random.sample(task, n_shots + 1)
        prompt = format_prompt("", [(s["input"], s["output"]) for s in shots], query["input"])
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=10,
                             pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(out[0, ids.shape[1]:]).split(tokenizer.eos_token)[0]
        hits.append(text.split("\\n")[0].strip() == query["output"])
    return float(sum(hits) / len(hits))
''',
    },
    "extract_answer": {
        "rfind": '''
def extract_answer(text):
    lower = text.lower()
    at = lower.rfind("answer is")
    while at != -1:
        rest = text[at + len("answer is"):].lstrip()
        digits = re.match(r"-?[0-9]+", rest)
        if digits:
            return digits.group(0)
        at = lower.rfind("answer is", 0, at)
    return None
''',
        "finditer": '''
def extract_answer(text):
    answer = None
    for m in re.finditer(r"(?i)answer\\s+is\\s*(-?\\d+)", text):
        answer = m.group(1)
    return answer
''',
    },
    "majority_vote": {
        "dict and first index": '''
def majority_vote(answers):
    counts, first = {}, {}
    for i, a in enumerate(answers):
        if a is None:
            continue
        counts[a] = counts.get(a, 0) + 1
        first.setdefault(a, i)
    if not counts:
        return None
    return sorted(counts, key=lambda a: (-counts[a], first[a]))[0]
''',
        "max over the list": '''
def majority_vote(answers):
    votes = [a for a in answers if a is not None]
    return max(votes, key=votes.count) if votes else None
''',
    },
    "questions": {
        "capitalised values": '''
TECHNIQUE_FOR_PROBLEM = {k: v.capitalize() for k, v in TECHNIQUE_FOR_PROBLEM.items()}
RISK_OF_ATTACK = {k: " " + v.title() for k, v in RISK_OF_ATTACK.items()}
''',
        "built with zip": '''
TECHNIQUE_FOR_PROBLEM = dict(zip(list(TECHNIQUE_FOR_PROBLEM), list(TECHNIQUE_FOR_PROBLEM.values())))
RISK_OF_ATTACK = dict(reversed(list(RISK_OF_ATTACK.items())))
''',
    },
}

ALTERNATIVE_CASES = [pytest.param(exercise, name, source, id=f"{exercise}: {name}")
                     for exercise, alternatives in ALTERNATIVES.items() for name, source in alternatives.items()]


def test_every_exercise_has_two_alternatives():
    assert set(ALTERNATIVES) == set(EXERCISES)
    assert all(len(a) >= 2 for a in ALTERNATIVES.values())


@pytest.mark.parametrize("exercise, name, source", ALTERNATIVE_CASES)
def test_alternative_solution_gets_full_marks(exercise, name, source):
    A.assert_alternative_gets_full_marks(exercise, name, source)


# -- what ships to students -------------------------------------------------------------------------

def test_visible_checks_and_tools_hold_no_reference_solution():
    import grader.reference.prompting as reference

    solution_names = {name for name, obj in vars(reference).items()
                      if not name.startswith("_") and getattr(obj, "__module__", None) == reference.__name__}
    assert {"top_p_filter", "generate_with_cache", "few_shot_accuracy"} <= solution_names
    for path in (ROOT / "llmcourse" / "checks" / "prompting.py", ROOT / "llmcourse" / "prompting_tools.py"):
        tree = ast.parse(path.read_text())
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not any(name.split(".")[0] == "grader" for name in imported), imported
        defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert not defined & solution_names, defined & solution_names
    # The answers to the questions never ship either.
    text = (ROOT / "llmcourse" / "checks" / "prompting.py").read_text()
    assert "translate one sentence" not in text


def test_notebook_follows_the_course_conventions():
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].source == ("import torch\nimport torch.nn as nn\nimport matplotlib.pyplot as plt\n"
                              "from llmcourse import notebook_setup, check\n\ndevice = notebook_setup()")
    assert code[0].metadata["nbgrader"] == {"grade": False, "solution": False, "locked": True, "grade_id": "setup",
                                            "schema_version": 3}
    solutions = {c.metadata["nbgrader"]["grade_id"]: c for c in code if c.metadata.get("nbgrader", {}).get("solution")}
    assert set(solutions) == set(EXERCISES)
    for exercise, cell in solutions.items():
        assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source, exercise
    for cell in code:
        assert not cell.get("outputs") and cell.get("execution_count") is None
        assert not any(line.lstrip().startswith(("%", "!")) for line in cell.source.splitlines())
        if is_check_cell(cell):
            exercise = cell.metadata["nbgrader"]["grade_id"].removeprefix("check_")
            assert cell.source == (f'check("03_prompting/{exercise}")\n### BEGIN HIDDEN TESTS\n'
                                   f'check("03_prompting/{exercise}", hidden=True)\n### END HIDDEN TESTS')
        elif not cell.metadata.get("nbgrader") and "plt." in cell.source:
            assert "demo" in cell.metadata.get("tags", []), cell.source[:80]
            assert "set_title" in cell.source or "suptitle" in cell.source
            assert "set_xlabel" in cell.source and "set_ylabel" in cell.source
