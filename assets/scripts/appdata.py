"""The data sets of 06_applications: an encyclopedia of invented things, and word problems with big numbers.

    python assets/scripts/appdata.py [--out assets/data] [--seed 0]

facts     one short article per invented entity (a river, a town, an inventor, a creature): its name is
          made of syllables no other data set uses, so no model can know its facts from training text;
          each row has the article and three questions that only the article answers.
bigmath   word problems with 3- and 4-digit numbers and 2 or 3 steps, each step kept as a phrase, the
          operation and the running value (ReAct traces and PAL programs are built from these).

The train and test splits share no entity name and no question. make_data.py calls `write_all`.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import lexicon as L  # noqa: E402
import textgen as T  # noqa: E402

from llmcourse.applications_formats import trace_text  # noqa: E402

SIZES = {"facts": (1000, 200), "bigmath": (6000, 200)}

ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "k", "kl", "m", "n", "p", "qu", "r", "s", "sk", "t", "th", "v",
          "z", "zh", "vr", "l", "h"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "y"]
CODAS = ["", "", "n", "r", "l", "th", "x", "sk", "m", "nd", "rk"]
COMMON = {w.lower() for words in L.KINDS.values() for w in words} | {w.lower() for w in L.BOYS + L.GIRLS}

KINDS = ["river", "town", "inventor", "creature"]
HABITATS = ["forests", "caves", "lakes", "mountains", "deserts", "marshes", "meadows", "islands"]
FOODS = ["berries", "fish", "seeds", "leaves", "insects", "moss", "roots", "honey"]
KNOWN_FOR = ["cheese", "glass", "bells", "kites", "boats", "honey", "lamps", "clocks", "hats", "drums", "bread",
             "maps"]
INVENTIONS = ["lamp", "clock", "kite", "bell", "compass", "wheel", "ladder", "telescope", "umbrella", "drum",
              "lock", "pump"]


def invented_name(rng: random.Random, taken: set[str]) -> str:
    while True:
        n = rng.choice([2, 2, 3])
        name = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(n))
        name = name.capitalize()
        if 5 <= len(name) <= 9 and name.lower() not in COMMON and name not in taken:
            taken.add(name)
            return name


def entity(rng: random.Random, taken: set[str]) -> dict:
    """One article and its three questions (question, answer)."""
    kind = rng.choice(KINDS)
    name = invented_name(rng, taken)
    place = invented_name(rng, taken)  # a country or a home town: invented too, so only the article knows it
    colour = rng.choice(L.COLORS)
    if kind == "river":
        km = rng.randint(100, 999)
        passage = f"{name} is a river in {place}. It is {km} km long. Its water is {colour}."
        qa = [(f"In which country is the river {name}?", place), (f"How long is the river {name}?", f"{km} km"),
              (f"What colour is the water of the river {name}?", colour)]
    elif kind == "town":
        year, known = rng.randint(1000, 1999), rng.choice(KNOWN_FOR)
        passage = f"{name} is a town in {place}. It was founded in {year}. It is known for its {known}."
        qa = [(f"In which country is the town {name}?", place), (f"When was the town {name} founded?", str(year)),
              (f"What is the town {name} known for?", known)]
    elif kind == "inventor":
        year, thing = rng.randint(1000, 1999), rng.choice(INVENTIONS)
        he = rng.choice(["He", "She"])
        passage = f"{name} was an inventor from {place}. {he} invented the {thing} in {year}."
        qa = [(f"Where was the inventor {name} from?", place), (f"What did the inventor {name} invent?", thing),
              (f"When did the inventor {name} invent the {thing}?", str(year))]
    else:
        habitat, food = rng.choice(HABITATS), rng.choice(FOODS)
        passage = f"The {name} is a {colour} creature that lives in {habitat}. It eats {food}."
        qa = [(f"Where does the creature {name} live?", habitat), (f"What does the creature {name} eat?", food),
              (f"What colour is the creature {name}?", colour)]
    return {"name": name, "kind": kind, "passage": passage, "qa": [list(p) for p in qa]}


def big_problem(rng: random.Random) -> dict:
    """A word problem with a 3- or 4-digit start and 2 or 3 changes of 3 or 4 digits each."""
    a, b = T.pick_children(rng, 2)
    items = rng.choice(L.COUNTABLE)
    value = rng.randint(1000, 9999) if rng.random() < 0.7 else rng.randint(100, 999)
    first = f"{a.name} has {value} {items}."
    question, steps = [first], []
    others = [b.name] + [p.name for p in T.pick_children(rng, 3) if p.name not in (a.name, b.name)]
    for _ in range(rng.choice([2, 2, 3])):
        k = rng.randint(100, 999) if rng.random() < 0.5 else rng.randint(1000, 9999)
        gain = value - k < 0 or rng.random() < 0.5
        who = rng.choice(others)
        if gain:
            phrase = rng.choice([f"{who} gives {a.him} {k} more", f"{a.he} finds {k} more",
                                 f"{a.he} gets {k} more from {who}", f"{a.he} buys {k} more"])
            op, result = "+", value + k
        else:
            phrase = rng.choice([f"{a.he} gives {k} to {who}", f"{a.he} loses {k}", f"{who} takes {k}",
                                 f"{a.he} sells {k}"])
            op, result = "-", value - k
        question.append(T.sentence(phrase))
        steps.append({"phrase": T.sentence(phrase), "op": op, "number": k, "value": result})
        value = result
    question.append(f"How many {items} does {a.name} have now?")
    return {"question": " ".join(question), "answer": value, "start": int(first.split()[2]), "items": items,
            "steps": steps}


def sizes(name: str, scale: float) -> tuple[int, int]:
    n_train, n_test = SIZES[name]
    return max(8, int(n_train * scale)), max(4, int(n_test * scale))


def generate(seed: int, scale: float = 1.0) -> dict[str, tuple[list[dict], list[dict]]]:
    rng = random.Random(f"facts-{seed}")
    taken: set[str] = set()
    n_train, n_test = sizes("facts", scale)
    facts = [entity(rng, taken) for _ in range(n_train + n_test)]
    out = {"facts": (facts[:n_train], facts[n_train:])}

    n_train, n_test = sizes("bigmath", scale)
    rng_test, rng = random.Random(f"bigmath-test-{seed}"), random.Random(f"bigmath-train-{seed}")
    test, seen = [], set()
    while len(test) < n_test:
        row = big_problem(rng_test)
        if row["question"] not in seen:
            seen.add(row["question"])
            test.append(row)
    train = []
    while len(train) < n_train:
        row = big_problem(rng)
        if row["question"] not in seen:
            train.append(row)
    out["bigmath"] = (train, test)
    return out


def write_all(out: Path, seed: int, write, scale: float = 1.0) -> None:
    for name, (train, test) in generate(seed, scale).items():
        write(train, out / name / "train.jsonl")
        write(test, out / name / "test.jsonl")
        print(f"{name:13s} train {len(train):6d}  test {len(test):5d}")


def main(argv: list[str] | None = None) -> None:
    from make_data import write

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE.parent / "data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args(argv)
    write_all(args.out, args.seed, write, args.scale)


if __name__ == "__main__":
    main()


# -- the texts course-lm-apps is trained on (train_apps.py) and evaluated with (evaluate.py) -----------
def react_trace(row: dict) -> str:
    """A word problem solved with the calculator, one step per change."""
    value, steps = row["start"], []
    for i, s in enumerate(row["steps"]):
        thought = s["phrase"] if i else f"{row['question'].split('.')[0]}. {s['phrase']}"
        steps.append((thought, "calculator", f"{value} {s['op']} {s['number']}", str(s["value"])))
        value = s["value"]
    steps.append((f"The answer is {value}.", "Finish", str(value), None))
    return trace_text(steps)


def lookup_trace(ent: dict, question: str, answer: str) -> str:
    return trace_text([(f"I need the article about {ent['name']}.", "lookup", ent["name"], ent["passage"]),
                       (f"The answer is {answer}.", "Finish", answer, None)])


def compare_question(a: dict, b: dict) -> tuple[str, str] | None:
    """Two articles of one kind with a number each: a question that needs both lookups and the calculator."""
    if a["kind"] == "river":
        x, y = int(a["qa"][1][1].split()[0]), int(b["qa"][1][1].split()[0])
        if x <= y:
            return None
        q = f"How much longer is the river {a['name']} than the river {b['name']}?"
        facts = f"{a['name']} is {x} km long and {b['name']} is {y} km long."
        return q, trace_compare(a, b, facts, x, y, " km")
    if a["kind"] == "town":
        x, y = int(a["qa"][1][1]), int(b["qa"][1][1])
        if x <= y:
            return None
        q = f"How many years after the town {b['name']} was the town {a['name']} founded?"
        facts = f"{a['name']} was founded in {x} and {b['name']} in {y}."
        return q, trace_compare(a, b, facts, x, y, "")
    return None


def trace_compare(a: dict, b: dict, facts: str, x: int, y: int, unit: str) -> str:
    return trace_text([(f"I need the article about {a['name']}.", "lookup", a["name"], a["passage"]),
                       (f"I need the article about {b['name']}.", "lookup", b["name"], b["passage"]),
                       (facts, "calculator", f"{x} - {y}", str(x - y)),
                       (f"The answer is {x - y}{unit}.", "Finish", f"{x - y}{unit}", None)])


def cot_solution(row: dict) -> str:
    """The problem worked step by step, as course-lm's arithmetic data does (the sums are right)."""
    value, parts = row["start"], [f"{row['question'].split(' has ')[0]} starts with {row['start']}."]
    for s in row["steps"]:
        parts.append(f"{s['phrase'][:-1]}, so {value} {s['op']} {s['number']} = {s['value']}.")
        value = s["value"]
    return " ".join(parts + [f"The answer is {value}."])


def pal_program(row: dict) -> str:
    """The problem as a program: one variable, named after the items, changed once per step."""
    name = row["items"]
    lines = [f"{name} = {row['start']}"]
    lines += [f"{name} = {name} {s['op']} {s['number']}" for s in row["steps"]]
    lines.append(f"answer = {name}")
    return "\n".join(lines)
