"""Seeded generators of short English texts: stories, dialogues, word problems and few-shot items.

Each story is built from a plot: a beginning, then a kind ending or an unkind ending that shares the
beginning. The two endings give the preference pairs; the story's facts give questions and answers,
titles and summaries. Everything is drawn from `random.Random` instances, so one seed gives one corpus.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import lexicon as L


# ---------------------------------------------------------------------------------------------- people

@dataclass
class Person:
    name: str  # "Tom", or "the teacher"
    female: bool

    @property
    def he(self) -> str:
        return "she" if self.female else "he"

    @property
    def him(self) -> str:
        return "her" if self.female else "him"

    @property
    def his(self) -> str:
        return "her" if self.female else "his"

    @property
    def owner(self) -> str:  # "Tom's", "the teacher's"
        return self.name + "'s"


def sentence(text: str) -> str:
    """Capitalise the first letter and make sure the sentence ends with punctuation."""
    text = text.strip()
    text = text[0].upper() + text[1:]
    if text[-1] not in ".!?\"":
        text += "."
    return text


def pick_children(rng: random.Random, n: int) -> list[Person]:
    names = rng.sample(L.BOYS + L.GIRLS, n)
    return [Person(name, name in L.GIRLS) for name in names]


def pick_role(rng: random.Random, role: str) -> Person:
    return Person("the " + role, rng.random() < 0.5)


@dataclass
class Plot:
    """A story: a shared beginning, and the ending that was told (kind=True) or the other one."""
    kind_name: str
    setting: str
    begin: list[str]
    good: list[str]
    bad: list[str]
    cast: list[Person]
    qa_common: list[tuple[str, str]] = field(default_factory=list)
    qa_good: list[tuple[str, str]] = field(default_factory=list)
    qa_bad: list[tuple[str, str]] = field(default_factory=list)
    title_good: str = ""
    title_bad: str = ""

    def sentences(self, good: bool) -> list[str]:
        return self.begin + (self.good if good else self.bad)

    def text(self, good: bool) -> str:
        return " ".join(self.sentences(good))

    def questions(self, good: bool) -> list[tuple[str, str]]:
        return self.qa_common + (self.qa_good if good else self.qa_bad)

    def title(self, good: bool) -> str:
        return self.title_good if good else self.title_bad


# ---------------------------------------------------------------------------------------------- plots

def plot_lost(rng: random.Random) -> Plot:
    setting = rng.choice([s for s in L.SETTINGS if s != "bakery"])
    info = L.SETTINGS[setting]
    a, b = pick_children(rng, 2)
    thing = rng.choice(info["things"])
    adj = rng.choice(L.COLORS + L.SIZES)
    spot = rng.choice(info["spots"])
    act = rng.choice(info["acts"])
    begin = [
        sentence(rng.choice([
            f"{rng.choice(L.TIMES)}, {a.name} went to the {setting} with {a.his} {adj} {thing}",
            f"{a.name} took {a.his} {adj} {thing} to the {setting}",
            f"{rng.choice(L.TIMES)}, {a.name} and {b.name} were in the {setting}",
        ])),
        sentence(rng.choice([f"{a.name} {act[1]} {act[2]}", f"{a.he} met {b.name} there",
                             f"{b.name} was there too", f"It was a {rng.choice(L.WEATHER)} day"])),
        sentence(rng.choice([f"Later, {a.name} could not find {a.his} {thing}",
                             f"When {a.he} wanted to go home, {a.his} {thing} was gone",
                             f"Then {a.name} saw that {a.his} {thing} was missing"])),
    ]
    good = [
        sentence(rng.choice([f"{b.name} said, \"Don't worry, I will help you.\"",
                             f"{b.name} helped {a.him} look for it",
                             f"{b.name} was kind and helped {a.him} look everywhere"])),
        sentence(f"They found the {thing} {spot}"),
        sentence(rng.choice([f"{a.name} was {rng.choice(L.HAPPY_WORDS)} and thanked {b.name}",
                             f"{a.name} smiled and gave {b.name} a hug",
                             f"{a.name} said, \"Thank you, {b.name}!\""])),
    ]
    bad = [
        sentence(rng.choice([f"{b.name} laughed at {a.him} and did not help",
                             f"{b.name} said, \"That is not my problem,\" and walked away",
                             f"{b.name} was busy and would not help {a.him}"])),
        sentence(rng.choice([f"{a.name} looked everywhere, but the {thing} was gone",
                             f"{a.name} never found the {thing}"])),
        sentence(rng.choice([f"{a.name} went home {rng.choice(L.SAD_WORDS)}",
                             f"{a.name} cried all the way home",
                             f"{a.name} was {rng.choice(L.SAD_WORDS)} all day"])),
    ]
    return Plot(
        "lost", setting, begin, good, bad, [a, b],
        qa_common=[(f"What did {a.name} lose?", f"{a.his} {thing}"),
                   (f"Where did the story happen?", f"in the {setting}")],
        qa_good=[(f"Where did they find the {thing}?", spot), (f"Who helped {a.name}?", b.name),
                 (f"Did {a.name} find the {thing}?", "yes")],
        qa_bad=[(f"Did {a.name} find the {thing}?", "no"), (f"Who did not help {a.name}?", b.name)],
        title_good=f"{a.name} finds the lost {thing}", title_bad=f"{a.name} loses {a.his} {thing}",
    )


# (thing, what it is needed for, the same in the past, the settings where the story can happen)
NEEDS = [("pen", "write a letter", "wrote a letter", ("classroom", "library", "kitchen")),
         ("pencil", "draw a picture", "drew a picture", ("classroom", "library", "park", "garden")),
         ("book", "read a story", "read a story", ("classroom", "library", "park", "garden")),
         ("ball", "play a game", "played a game", ("park", "garden")),
         ("spoon", "eat {his} soup", "ate {his} soup", ("kitchen",)),
         ("umbrella", "walk home in the rain", "walked home", ("classroom", "library", "park", "garden", "kitchen")),
         ("ruler", "draw a line", "drew a line", ("classroom", "library")),
         ("map", "find the way", "found the way", ("library", "park", "garden")),
         ("eraser", "fix {his} drawing", "fixed {his} drawing", ("classroom", "library")),
         ("kite", "fly it in the wind", "flew it", ("park", "garden"))]
SNACKS = ["apples", "cookies", "grapes", "pears", "sandwiches", "plums", "nuts", "cherries"]


def plot_borrow(rng: random.Random) -> Plot:
    setting = rng.choice(["classroom", "library", "park", "kitchen", "garden"])
    a, b = pick_children(rng, 2)
    thing, need, did, _ = rng.choice([n for n in NEEDS if setting in n[3]])
    need, did = need.format(his=a.his), did.format(his=a.his)
    begin = [
        sentence(rng.choice([f"{a.name} and {b.name} were in the {setting}",
                             f"{rng.choice(L.TIMES)}, {a.name} sat next to {b.name} in the {setting}"])),
        sentence(f"{a.name} wanted to {need}, but {a.he} had no {thing}"),
        sentence(rng.choice([f"{a.name} asked, \"{b.name}, can I borrow your {thing}?\"",
                             f"{a.he} asked {b.name} to lend {a.him} a {thing}"])),
    ]
    good = [
        sentence(rng.choice([f"\"Yes, of course,\" said {b.name}, and gave {a.him} the {thing}",
                             f"{b.name} smiled and gave {a.him} the {thing}"])),
        sentence(f"{a.name} {did} and gave the {thing} back"),
        sentence(rng.choice([f"They were both {rng.choice(L.HAPPY_WORDS)}",
                             f"{a.name} said thank you, and they became good friends"])),
    ]
    bad = [
        sentence(rng.choice([f"\"No, it is mine,\" said {b.name}, and put the {thing} away",
                             f"{b.name} shook {b.his} head and hid the {thing}"])),
        sentence(f"{a.name} could not {need}"),
        sentence(rng.choice([f"{a.name} felt {rng.choice(L.SAD_WORDS)}",
                             f"{a.name} sat alone and was {rng.choice(L.SAD_WORDS)}"])),
    ]
    return Plot(
        "borrow", setting, begin, good, bad, [a, b],
        qa_common=[(f"What did {a.name} want to borrow?", f"a {thing}"),
                   (f"What did {a.name} want to do?", need),
                   (f"Who did {a.name} ask?", b.name)],
        qa_good=[(f"Did {b.name} share the {thing}?", "yes")],
        qa_bad=[(f"Did {b.name} share the {thing}?", "no")],
        title_good=f"{b.name} shares a {thing}", title_bad=f"{b.name} will not share",
    )


def plot_school(rng: random.Random) -> Plot:
    """A present-tense day in the classroom: the teacher teaches the students with a book."""
    a, b = pick_children(rng, 2)
    teacher = pick_role(rng, "teacher")
    topic = rng.choice(L.BOOK_TOPICS)
    tool = rng.choice(["a book", "a map", "a picture", "a story", "a song", "a game"])
    begin = [
        sentence(rng.choice([f"Every morning, the teacher teaches the students with {tool}",
                             f"In the classroom, the teacher teaches the students with {tool}",
                             f"The teacher teaches the children with {tool}"])),
        sentence(rng.choice([f"Today the class learns about {topic}",
                             f"Today {teacher.he} tells them about {topic}"])),
        sentence(rng.choice([f"{a.name} sits next to {b.name} and listens",
                             f"{a.name} and {b.name} sit at the front of the class"])),
    ]
    good = [
        sentence(f"{a.name} asks a question about {topic}, and the teacher answers it"),
        sentence(rng.choice([f"{b.name} helps {a.name} write the answer in {a.his} notebook",
                             f"Then the students draw pictures of {topic}"])),
        sentence(rng.choice([f"The teacher says that everyone did well today",
                             f"{a.name} is {rng.choice(L.HAPPY_WORDS)} because {a.he} learned something new"])),
    ]
    bad = [
        sentence(f"{a.name} talks to {b.name} and does not listen to the teacher"),
        sentence(rng.choice([f"The teacher is angry and {a.name} has to sit alone",
                             f"{a.name} does not know the answer when the teacher asks"])),
        sentence(rng.choice([f"{a.name} is {rng.choice(L.SAD_WORDS)} for the rest of the day",
                             f"{a.name} goes home {rng.choice(L.SAD_WORDS)}"])),
    ]
    return Plot(
        "school", "classroom", begin, good, bad, [a, b, teacher],
        qa_common=[(f"What does the class learn about?", topic),
                   (f"Who sits next to {b.name}?", a.name),
                   (f"What does the teacher teach with?", tool)],
        qa_good=[(f"Who answers {a.name}'s question?", "the teacher")],
        qa_bad=[(f"Does {a.name} listen to the teacher?", "no")],
        title_good=f"{a.name} learns about {topic}", title_bad=f"{a.name} does not listen",
    )


def plot_library(rng: random.Random) -> Plot:
    a = pick_children(rng, 1)[0]
    librarian = pick_role(rng, "librarian")
    topic = rng.choice(L.BOOK_TOPICS)
    color = rng.choice(L.COLORS)
    begin = [
        sentence(rng.choice([f"{rng.choice(L.TIMES)}, {a.name} went to the library",
                             f"{a.name} walked to the library after school"])),
        sentence(rng.choice([f"{a.he} wanted a book about {topic}", f"{a.name} wanted to read about {topic}"])),
        sentence(f"{a.he} asked the librarian for help"),
    ]
    good = [
        sentence(f"The librarian smiled and found a book about {topic} on the {color} shelf"),
        sentence(rng.choice([f"{a.name} sat at a table and read the whole book",
                             f"{a.name} borrowed the book and read it at home"])),
        sentence(rng.choice([f"{a.he} was very {rng.choice(L.HAPPY_WORDS)}",
                             f"Now {a.name} knows a lot about {topic}"])),
    ]
    bad = [
        sentence(rng.choice([f"The librarian was busy and did not look up",
                             f"The librarian said, \"Go away, I am busy.\""])),
        sentence(f"{a.name} could not find a book about {topic}"),
        sentence(f"{a.he} went home {rng.choice(L.SAD_WORDS)} with nothing to read"),
    ]
    return Plot(
        "library", "library", begin, good, bad, [a, librarian],
        qa_common=[(f"What did {a.name} want to read about?", topic),
                   (f"Who did {a.name} ask for help?", "the librarian"),
                   (f"Where did {a.name} go?", "to the library")],
        qa_good=[(f"Where was the book?", f"on the {color} shelf")],
        qa_bad=[(f"Did {a.name} find a book?", "no")],
        title_good=f"A book about {topic}", title_bad=f"{a.name} finds no book",
    )


BAKES = [("a cake", "cake"), ("a pie", "pie"), ("some bread", "bread"), ("some cookies", "cookies"),
         ("a pizza", "pizza")]


def plot_bake(rng: random.Random) -> Plot:
    a, b = pick_children(rng, 2)
    cook = pick_role(rng, rng.choice(["cook", "baker"]))
    some, food = rng.choice(BAKES)
    place = "kitchen" if cook.name == "the cook" else "bakery"
    was = "were" if food.endswith("s") else "was"
    begin = [
        sentence(rng.choice([f"{a.name} and {cook.name} baked {some} in the {place}",
                             f"{rng.choice(L.TIMES)}, {cook.name} showed {a.name} how to bake {some}"])),
        sentence(rng.choice(["They mixed flour, eggs and sugar", "They mixed flour, milk and butter"])),
        sentence(f"Then they put the {food} in the oven"),
    ]
    good = [
        sentence(f"The {food} {was} warm and sweet"),
        sentence(f"{a.name} shared the {food} with {b.name}"),
        sentence(rng.choice([f"Everyone said it was the best {food} ever",
                             f"{b.name} was {rng.choice(L.HAPPY_WORDS)} and said thank you"])),
    ]
    bad = [
        sentence(f"{a.name} forgot about it, and the {food} burned"),
        sentence(rng.choice(["The kitchen was full of smoke", f"{cook.name} was angry with {a.name}"])),
        sentence(f"Nobody could eat the {food}, and {a.name} was {rng.choice(L.SAD_WORDS)}"),
    ]
    return Plot(
        "bake", place, begin, good, bad, [a, b, cook],
        qa_common=[(f"What did they bake?", some), (f"Where did they bake?", f"in the {place}")],
        qa_good=[(f"Who did {a.name} share the {food} with?", b.name)],
        qa_bad=[(f"What happened to the {food}?", "it burned")],
        title_good=f"The best {food}", title_bad=f"The burned {food}",
    )


def plot_farm(rng: random.Random) -> Plot:
    a = pick_children(rng, 1)[0]
    animal = rng.choice(L.SETTINGS["farm"]["animals"])
    feed = rng.choice(["some hay", "an apple", "some grass", "a carrot"])
    grown = rng.choice(["mother", "father", "grandma", "grandpa", "aunt", "uncle"])
    begin = [
        sentence(rng.choice([f"{rng.choice(L.TIMES)}, {a.name} visited the farm with {a.his} {grown}",
                             f"{a.name} and {a.his} {grown} went to the farm"])),
        sentence(f"The farmer showed {a.him} the {L.plural(animal)}"),
        sentence(f"{a.name} gave the {animal} {feed}"),
    ]
    good = [
        sentence(f"The {animal} ate it and made a happy sound"),
        sentence(rng.choice([f"The farmer let {a.name} feed the other {L.plural(animal)} too",
                             f"{a.name} patted the {animal} on the head"])),
        sentence(f"{a.name} said it was the best day of the year"),
    ]
    bad = [
        sentence(f"The {animal} was scared and ran away"),
        sentence(rng.choice([f"{a.name} slipped and fell in the mud", "Then it started to rain"])),
        sentence(f"{a.name} was {rng.choice(L.SAD_WORDS)} and wanted to go home"),
    ]
    return Plot(
        "farm", "farm", begin, good, bad, [a],
        qa_common=[(f"Who went to the farm with {a.name}?", f"{a.his} {grown}"),
                   (f"Which animal did {a.name} feed?", f"the {animal}"),
                   (f"What did {a.name} give the {animal}?", feed)],
        qa_good=[(f"Did the {animal} eat it?", "yes")],
        qa_bad=[(f"What did the {animal} do?", "it ran away")],
        title_good=f"{a.name} feeds the {animal}", title_bad=f"The scared {animal}",
    )


def plot_park(rng: random.Random) -> Plot:
    setting = rng.choice(["park", "beach", "garden"])
    a, b = pick_children(rng, 2)
    game, thing = rng.choice([("play with a ball", "ball"), ("fly a kite", "kite"), ("play with a frisbee", "frisbee")])
    snack = rng.choice(SNACKS)
    begin = [
        sentence(f"It was a {rng.choice(['sunny', 'windy', 'warm'])} day"),
        sentence(f"{a.name} and {b.name} went to the {setting} to {game}"),
        sentence(rng.choice([f"{a.name} brought {a.his} new {thing}", f"{b.name} brought some {snack}"])),
    ]
    good = [
        sentence(f"They played with the {thing} until the sun went down"),
        sentence(f"{b.name} shared {b.his} {snack} with {a.name}"),
        sentence(rng.choice(["They promised to come back tomorrow", "It was a wonderful day"])),
    ]
    bad = [
        sentence(rng.choice([f"{b.name} took the {thing} and would not give it back",
                             f"Then it started to rain, and the {thing} got lost"])),
        sentence(f"{a.name} sat under a tree and waited"),
        sentence(f"{a.name} went home wet and {rng.choice(L.SAD_WORDS)}"),
    ]
    return Plot(
        "park", setting, begin, good, bad, [a, b],
        qa_common=[(f"Where did {a.name} and {b.name} go?", f"to the {setting}"),
                   (f"What did they want to do?", game)],
        qa_good=[(f"What did {b.name} share?", f"{b.his} {snack}")],
        qa_bad=[(f"Where did {a.name} wait?", "under a tree")],
        title_good=f"A wonderful day at the {setting}", title_bad=f"A bad day at the {setting}",
    )


def plot_gift(rng: random.Random) -> Plot:
    a, b = pick_children(rng, 2)
    present = rng.choice(["a book", "a kite", "a ball", "a toy car", "a drum", "a hat", "a puzzle", "a doll"])
    begin = [
        sentence(rng.choice([f"It was {b.owner} birthday", f"{b.name} had a party on {rng.choice(['Saturday', 'Sunday', 'Friday'])}"])),
        sentence(f"{a.name} made a card and bought {b.name} {present}"),
        sentence(f"{a.name} gave {b.name} the present at the party"),
    ]
    good = [
        sentence(f"{b.name} opened it and smiled"),
        sentence(f"\"Thank you, it is wonderful,\" said {b.name}"),
        sentence(rng.choice(["They ate cake and played games all afternoon",
                             f"{a.name} was {rng.choice(L.HAPPY_WORDS)} that {b.name} liked the present"])),
    ]
    bad = [
        sentence(f"{b.name} threw it on the floor"),
        sentence(f"\"I don't like it,\" said {b.name}"),
        sentence(f"{a.name} felt {rng.choice(L.SAD_WORDS)} and left the party early"),
    ]
    return Plot(
        "gift", "party", begin, good, bad, [a, b],
        qa_common=[(f"What did {a.name} buy for {b.name}?", present),
                   (f"What did {a.name} make?", "a card")],
        qa_good=[(f"Did {b.name} like the present?", "yes")],
        qa_bad=[(f"Did {b.name} like the present?", "no")],
        title_good=f"A present for {b.name}", title_bad=f"{b.name} does not like the present",
    )


PLOTS = [plot_lost, plot_borrow, plot_school, plot_library, plot_bake, plot_farm, plot_park, plot_gift]


def random_plot(rng: random.Random) -> Plot:
    return rng.choice(PLOTS)(rng)


# ---------------------------------------------------------------------------------------------- dialogues

def dialogue(rng: random.Random) -> tuple[str, str]:
    """A short dialogue between two children and a one-sentence summary of it."""
    a, b = pick_children(rng, 2)
    kind = rng.choice(["borrow", "plan", "where", "party", "help"])
    if kind == "borrow":
        thing = rng.choice(["pen", "pencil", "book", "ruler", "eraser", "ball", "umbrella", "map"])
        lines = [(a, rng.choice([f"Can I borrow your {thing}?", f"May I use your {thing}, please?"]))]
        if rng.random() < 0.6:
            lines += [(b, rng.choice(["Yes, here it is.", "Of course, take it."])), (a, "Thank you!")]
            summary = f"{a.name} asks to borrow {b.owner} {thing}, and {b.name} gives it to {a.him}."
        else:
            lines += [(b, rng.choice(["Sorry, I need it now.", "No, I am using it."])), (a, "Oh, okay.")]
            summary = f"{a.name} asks to borrow {b.owner} {thing}, but {b.name} says no."
    elif kind == "plan":
        place = rng.choice(["park", "library", "beach", "zoo", "museum", "farm", "market"])
        when = rng.choice(["after school", "on Saturday", "tomorrow", "on Sunday", "in the afternoon"])
        thing = rng.choice(["ball", "kite", "camera", "sandwiches", "map", "bikes"])
        lines = [(a, f"Do you want to go to the {place} {when}?"),
                 (b, f"Yes! Let's take the {thing}."),
                 (a, rng.choice(["Great idea.", "Okay, see you then."]))]
        summary = f"{a.name} and {b.name} plan to go to the {place} {when} with the {thing}."
    elif kind == "where":
        thing = rng.choice(["hat", "bag", "book", "pen", "scarf", "ball", "key", "notebook"])
        spot = rng.choice(["under the desk", "on the shelf", "behind the door", "in the kitchen",
                           "next to the bed", "in the garden"])
        lines = [(a, f"Have you seen my {thing}?"), (b, f"Yes, it is {spot}."), (a, "Thanks!")]
        summary = f"{b.name} tells {a.name} that {a.his} {thing} is {spot}."
    elif kind == "party":
        day = rng.choice(["Friday", "Saturday", "Sunday", "Monday"])
        lines = [(a, f"I am having a party on {day}. Can you come?")]
        if rng.random() < 0.6:
            lines += [(b, rng.choice(["Yes, I would love to!", "Sure, I will be there."])), (a, "Great!")]
            summary = f"{a.name} invites {b.name} to a party on {day}, and {b.name} will come."
        else:
            reason = rng.choice(["I have to visit my grandma", "I am going to the beach", "I am sick"])
            lines += [(b, f"Sorry, I can't. {reason}."), (a, "Maybe next time.")]
            summary = f"{a.name} invites {b.name} to a party on {day}, but {b.name} cannot come."
    else:
        thing = rng.choice(["box", "table", "basket", "bag", "chair"])
        lines = [(a, f"This {thing} is too heavy for me. Can you help?"),
                 (b, rng.choice(["Sure, I will carry it with you.", "Of course, let me help."])),
                 (a, "Thank you so much!")]
        summary = f"{b.name} helps {a.name} carry the {thing}."
    text = "\n".join(f"{p.name}: {line}" for p, line in lines)
    return text, summary


# ---------------------------------------------------------------------------------------------- word problems

@dataclass
class Problem:
    question: str
    steps: list[str]
    answer: int

    @property
    def solution(self) -> str:
        return " ".join(self.steps + [f"The answer is {self.answer}."])


def word_problem(rng: random.Random, n_ops: int | None = None) -> Problem:
    """A word problem with 2 to 4 additions and subtractions, and a step-by-step solution.

    Every intermediate value stays between 0 and 30, so each step is one small fact the model can learn,
    while the direct answer needs all the steps at once.
    """
    a, b = pick_children(rng, 2)
    items = rng.choice(L.COUNTABLE)
    n_ops = n_ops or rng.choice([2, 3, 3, 4])
    value = rng.randint(2, 15)
    q = [f"{a.name} has {value} {items}."]
    steps = [f"{a.name} starts with {value}."]
    others = [b.name] + [p.name for p in pick_children(rng, 3) if p.name not in (a.name, b.name)]
    for _ in range(n_ops):
        k = rng.randint(1, 9)
        gain = value + k <= 30 and (value - k < 0 or rng.random() < 0.5)
        who = rng.choice(others)
        if gain:
            phrase = rng.choice([f"{who} gives {a.him} {k} more", f"{a.he} finds {k} more",
                                 f"{a.he} gets {k} more from {who}", f"{a.he} buys {k} more"])
            result, sign = value + k, "+"
        else:
            lose = [f"{a.he} gives {k} to {who}", f"{a.he} loses {k}", f"{who} takes {k}"]
            if items in L.EDIBLE:
                lose.append(f"{a.he} eats {k}")
            phrase = rng.choice(lose)
            result, sign = value - k, "-"
        q.append(sentence(phrase))
        steps.append(sentence(f"{phrase}, so {value} {sign} {k} = {result}"))
        value = result
    q.append(f"How many {items} does {a.name} have now?")
    return Problem(" ".join(q), steps, value)


# ---------------------------------------------------------------------------------------------- feelings

GOOD_REASONS = ["{he} found {his} {thing}", "{his} friend shared a cake with {him}", "{he} won the game",
                "{his} grandma came to visit", "the teacher said {he} did well", "{he} got a new {thing}",
                "the sun was shining", "{his} friends played with {him}", "{he} read a wonderful book"]
BAD_REASONS = ["{he} lost {his} {thing}", "nobody played with {him}", "{his} {thing} broke",
               "it rained all day", "{his} friend laughed at {him}", "{he} fell in the mud",
               "the cake burned", "{he} could not find {his} way home", "{his} dog ran away"]


def feeling_sentence(rng: random.Random) -> tuple[str, str]:
    """A sentence about one child and whether it is a happy or a sad one, said outright or only implied."""
    a = pick_children(rng, 1)[0]
    thing = rng.choice(L.KINDS["thing"])
    happy = rng.random() < 0.5
    template = rng.choice(GOOD_REASONS if happy else BAD_REASONS)
    if rng.random() < 0.5:
        word = rng.choice(L.HAPPY_WORDS if happy else L.SAD_WORDS)
        reason = template.format(he=a.he, his=a.his, him=a.him, thing=thing)
        text = f"{a.name} was {word} because {reason}."
    else:
        if template.startswith("{he}"):
            template = a.name + template[4:]
        elif template.startswith("{his}"):
            template = a.owner + template[5:]
        else:
            template = template + " and {he} " + ("smiled" if happy else "cried")
            template = template.replace(" and {he} ", f" and {a.name} ")
        text = sentence(template.format(he=a.he, his=a.his, him=a.him, thing=thing))
    return text, ("happy" if happy else "sad")
