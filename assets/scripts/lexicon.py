"""The course's small world: people, places, things, and the words the generators build sentences from.

Every data set in assets/data is made from these lists by seeded generators (make_data.py), so the
course never depends on a downloaded corpus. The word lists are deliberately small: a model of a few
MB can learn them well, and the test splits can then ask about combinations it has not seen.
"""
from __future__ import annotations

BOYS = ["Tom", "Ben", "Sam", "Max", "Leo", "Jack", "Noah", "Finn", "Omar", "Hugo", "Paul", "Dan"]
GIRLS = ["Anna", "Lily", "Mia", "Eva", "Zoe", "Emma", "Lucy", "Rosa", "Nora", "Ivy", "Kate", "Ruth"]

# Grown-ups that the stories call by their job. Each belongs to one place and has a typical activity.
ROLES = {
    "teacher": {"place": "classroom", "verb": "teaches", "past": "taught"},
    "librarian": {"place": "library", "verb": "helps", "past": "helped"},
    "baker": {"place": "bakery", "verb": "bakes", "past": "baked"},
    "farmer": {"place": "farm", "verb": "feeds", "past": "fed"},
    "gardener": {"place": "garden", "verb": "waters", "past": "watered"},
    "cook": {"place": "kitchen", "verb": "cooks", "past": "cooked"},
    "doctor": {"place": "clinic", "verb": "helps", "past": "helped"},
    "painter": {"place": "studio", "verb": "paints", "past": "painted"},
}

# Places where stories happen: the things found there, the spots where a lost thing can hide, the
# animals one meets there, and what children do there (present tense, past tense, object).
SETTINGS = {
    "classroom": {
        "things": ["book", "pen", "pencil", "map", "ruler", "bag", "notebook", "eraser"],
        "spots": ["under the desk", "behind the door", "in the bag", "next to the window", "on the shelf"],
        "animals": ["fish", "hamster"],
        "acts": [("reads", "read", "a book"), ("draws", "drew", "a map"), ("writes", "wrote", "a letter"),
                 ("counts", "counted", "the chairs"), ("learns", "learned", "a new word")],
        "role": "teacher",
    },
    "library": {
        "things": ["book", "map", "card", "notebook", "pencil", "bag"],
        "spots": ["on the shelf", "under the table", "behind the chair", "next to the lamp", "in the box"],
        "animals": ["cat"],
        "acts": [("reads", "read", "a book"), ("finds", "found", "a story"), ("borrows", "borrowed", "a book"),
                 ("looks at", "looked at", "a map")],
        "role": "librarian",
    },
    "park": {
        "things": ["ball", "kite", "hat", "bike", "scarf", "frisbee"],
        "spots": ["under the bench", "behind the tree", "near the pond", "in the grass", "next to the gate"],
        "animals": ["dog", "duck", "bird", "squirrel", "rabbit"],
        "acts": [("plays with", "played with", "a ball"), ("flies", "flew", "a kite"),
                 ("runs to", "ran to", "the pond"), ("climbs", "climbed", "a tree")],
        "role": "gardener",
    },
    "kitchen": {
        "things": ["cup", "spoon", "bowl", "plate", "apron", "pot"],
        "spots": ["on the table", "in the cupboard", "under the chair", "next to the sink", "behind the oven"],
        "animals": ["cat", "dog"],
        "acts": [("makes", "made", "soup"), ("bakes", "baked", "a cake"), ("washes", "washed", "the cups"),
                 ("cuts", "cut", "the bread")],
        "role": "cook",
    },
    "farm": {
        "things": ["bucket", "hat", "rope", "basket", "boot", "shovel"],
        "spots": ["in the barn", "behind the fence", "near the pond", "under the hay", "next to the gate"],
        "animals": ["cow", "horse", "sheep", "goat", "pig", "hen", "duck"],
        "acts": [("feeds", "fed", "the cow"), ("rides", "rode", "the horse"), ("picks", "picked", "apples"),
                 ("carries", "carried", "the hay")],
        "role": "farmer",
    },
    "garden": {
        "things": ["hat", "basket", "glove", "watering can", "ball", "shovel"],
        "spots": ["under the bush", "behind the shed", "near the roses", "in the grass", "next to the wall"],
        "animals": ["bird", "frog", "rabbit", "cat"],
        "acts": [("waters", "watered", "the flowers"), ("plants", "planted", "a tree"),
                 ("picks", "picked", "roses"), ("digs", "dug", "a hole")],
        "role": "gardener",
    },
    "beach": {
        "things": ["ball", "hat", "towel", "bucket", "shell", "kite"],
        "spots": ["in the sand", "near the water", "under the towel", "behind the rock", "next to the boat"],
        "animals": ["crab", "fish", "bird"],
        "acts": [("builds", "built", "a sandcastle"), ("swims in", "swam in", "the sea"),
                 ("finds", "found", "a shell"), ("plays with", "played with", "a ball")],
        "role": "painter",
    },
    "bakery": {
        "things": ["cake", "bread", "cookie", "apron", "tray", "bag"],
        "spots": ["on the counter", "behind the oven", "in the basket", "under the table", "next to the door"],
        "animals": ["cat"],
        "acts": [("buys", "bought", "bread"), ("bakes", "baked", "a pie"), ("eats", "ate", "a cookie"),
                 ("smells", "smelled", "the bread")],
        "role": "baker",
    },
}

# The four kinds of words that the few-shot tasks are about. Every word is a single, common noun.
KINDS = {
    "animal": ["cat", "dog", "bird", "fish", "horse", "cow", "pig", "sheep", "goat", "duck", "hen", "rabbit",
               "mouse", "fox", "owl", "bear", "lion", "tiger", "frog", "deer", "wolf", "monkey", "snake",
               "crab", "squirrel", "zebra", "eagle", "whale"],
    "food": ["apple", "bread", "cake", "cheese", "soup", "egg", "rice", "pear", "banana", "cookie", "orange",
             "carrot", "pie", "honey", "grape", "plum", "lemon", "tomato", "potato", "peach", "sandwich", "pizza",
             "nut", "berry", "melon", "bean", "onion", "olive"],
    "thing": ["book", "pen", "ball", "chair", "table", "cup", "box", "bag", "hat", "key", "lamp", "map", "clock",
              "kite", "pencil", "desk", "bell", "coin", "brush", "drum", "spoon", "shoe", "sock", "toy",
              "basket", "knife", "umbrella", "ruler"],
    "place": ["library", "school", "park", "garden", "kitchen", "river", "forest", "market", "beach", "farm",
              "museum", "village", "classroom", "hill", "lake", "zoo", "city", "bakery", "shop", "church",
              "castle", "island", "bridge", "station", "harbor", "office", "airport", "field"],
}

IRREGULAR_PLURALS = {"mouse": "mice", "sheep": "sheep", "fish": "fish", "deer": "deer", "wolf": "wolves",
                     "knife": "knives", "goose": "geese"}


def plural(noun: str) -> str:
    """The plural of a noun from KINDS (English rules plus the few irregular ones)."""
    if noun in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    if noun in ("tomato", "potato"):
        return noun + "es"
    return noun + "s"


def article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


# Feelings that the stories and the classification task use.
HAPPY_WORDS = ["happy", "glad", "proud", "excited", "cheerful"]
SAD_WORDS = ["sad", "upset", "unhappy", "lonely", "worried"]

WEATHER = ["sunny", "rainy", "windy", "cold", "warm", "cloudy", "snowy"]
TIMES = ["One morning", "One day", "After school", "On Monday", "On Saturday", "In the afternoon",
         "Early in the morning", "One evening", "Last summer", "On a sunny day"]
COLORS = ["red", "blue", "green", "yellow", "white", "black", "brown", "pink", "orange", "purple"]
SIZES = ["big", "small", "old", "new", "little", "soft", "shiny"]
BOOK_TOPICS = ["animals", "the sea", "the stars", "trains", "dragons", "flowers", "castles", "birds",
               "the moon", "pirates", "robots", "dinosaurs"]

# Items that the arithmetic word problems count.
COUNTABLE = ["apples", "books", "pencils", "marbles", "stickers", "cookies", "shells", "coins", "cards",
             "eggs", "balloons", "stamps", "flowers", "candies", "crayons"]
EDIBLE = {"apples", "cookies", "eggs", "candies"}
