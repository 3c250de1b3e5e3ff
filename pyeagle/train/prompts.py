"""The self-distillation prompt set, built here from templates and word lists (no dataset download).

Seven kinds of request, in roughly equal shares: conversation (incl. role-play), coding, math,
writing, factual QA (incl. STEM and humanities explanations), summarising / extraction, and
reasoning. Every prompt is a template filled from the lists below with a seeded RNG, so the set
is the same on every machine. Nothing comes from evaluation sets (MT-bench, HumanEval, GSM8K,
Alpaca): templates and lists were written for this project; the passages to summarise are
docstrings of Python standard-library modules (not the ones benchmarks/requant_quality.py holds
out), the numbers in math prompts are random.

    build_prompts(n, seed) -> list[str]   # user messages; the chat template is applied later
"""
from __future__ import annotations

import importlib
import json
import random
import warnings

TOPICS = """volcanoes|honey bees|the printing press|black holes|photosynthesis|the Roman Empire|coral reefs|
electric cars|the human heart|jazz music|rainforests|the moon landing|vaccines|chess|the Great Wall of China|
plate tectonics|the internet|solar panels|sleep|coffee|the French Revolution|octopuses|glaciers|recycling|
the stock market|Mount Everest|dinosaurs|the immune system|bicycles|the Renaissance|tea ceremonies|wind turbines|
earthquakes|the Silk Road|penguins|artificial intelligence|the water cycle|ancient Egypt|rainbows|DNA|
the Olympic Games|bread baking|submarines|the Amazon river|democracy|hurricanes|the violin|mushrooms|
public libraries|satellites|the Industrial Revolution|whales|compost|airplanes|the periodic table|deserts|
origami|the Moon|batteries|friendship|time zones|lighthouses|migration of birds|Shakespeare|gardening|
quantum computers|the Vikings|urban parks|meditation|bridges|tsunamis|the piano|vitamins|cloud computing|
the Aztecs|trains|the ocean floor|vaccination campaigns|bees and pollination|chocolate|the Sahara|
nuclear energy|the Eiffel Tower|video games|wolves|the microscope|inflation|marathons|the telescope|
paper money|renewable energy|language learning|the Nile|wildfires|robots|cheese making|the Milky Way|
street food|the Beatles|antibiotics|the Arctic|3D printing|elephants|bamboo|the camera|castles|
social media|rivers|the compass|tides|pizza|cryptography|the Andes|minimalism|snow|clocks|cities|spiders""".replace("\n", "").split("|")

COUNTRIES = """France|Japan|Brazil|Canada|Kenya|India|Norway|Mexico|Egypt|Australia|Peru|Vietnam|Germany|
Argentina|Morocco|Thailand|Spain|Chile|Ghana|Italy|Poland|Turkey|Indonesia|Sweden|Portugal|Greece|Nepal|
Ireland|Colombia|New Zealand|South Korea|Finland|Ethiopia|Iceland|Cuba|Hungary|Mongolia|Senegal""".replace(
    "\n", "").split("|")

PEOPLE = """a pirate captain|a medieval knight|a friendly robot|a detective in 1920s London|a tour guide in Rome|
a chef at a busy restaurant|an astronaut on the space station|a wise old librarian|a cheerful kindergarten
teacher|a grumpy wizard|a sports commentator|a museum curator|a barista|a park ranger|a travel blogger|
a fitness coach""".replace("\n", " ").split("|")

CHAT = [
    "Hi! How are you today?", "I had a long day at work. Any ideas to relax this evening?",
    "Can you recommend a good hobby for someone who likes being outdoors?",
    "I'm nervous about a job interview tomorrow. Any advice?", "What should I cook for dinner tonight?",
    "I can't decide between a cat and a dog. What do you think?", "Tell me a fun fact.",
    "How can I make new friends after moving to a new city?", "I want to start running. How do I begin?",
    "What are some good habits for staying focused while studying?", "Can you tell me a joke?",
    "I keep procrastinating. How can I stop?", "What's a good way to start learning to draw?",
    "How do I politely say no to extra work?", "Suggest a weekend plan for a rainy day.",
    "What are some tips for saving money each month?", "How can I sleep better?",
    "I'm bored. Give me three things to do right now.", "What is a good gift for my grandmother?",
    "How do I keep houseplants alive?", "Thanks for your help earlier! What else can you do?",
]

CODING_TASKS = """checks whether a string is a palindrome|returns the n-th Fibonacci number|counts the words in a
text|removes duplicates from a list while keeping order|finds the largest number in a list|converts
Celsius to Fahrenheit|checks whether a number is prime|reverses the words in a sentence|merges two sorted
lists|computes the factorial of a number|flattens a nested list|counts vowels in a string|finds the
second smallest element of a list|implements binary search|sorts a list of dictionaries by a key|validates
an email address with a simple rule|reads a CSV file and sums a column|computes the average of a list|
returns the most common element in a list|checks whether two strings are anagrams|generates all
subsets of a set|converts a Roman numeral to an integer|implements a stack class|computes the greatest
common divisor of two numbers|transposes a matrix|checks balanced parentheses|rotates a list by k
positions|finds all pairs in a list that sum to a target|capitalizes the first letter of every word|
implements a simple queue with two stacks|counts the lines in a file|computes the running sum of a
list|converts a decimal number to binary|finds the length of the longest word|groups words by their
first letter|implements bubble sort|returns the intersection of two lists|checks if a year is a leap
year|computes simple interest|parses a date string""".replace("\n", " ").split("|")
LANGUAGES = ["Python", "Python", "Python", "JavaScript", "C", "Java", "Go", "Rust", "TypeScript"]
CODING = [
    "Write a {lang} function that {task}.", "How would you write code in {lang} that {task}?",
    "Show me a short {lang} program that {task}, with comments.",
    "Write a function that {task} and explain how it works.",
    "Write a {lang} function that {task}. Then give an example of calling it.",
    "What is a clean way in {lang} to write a function that {task}?",
]
CODING_CONCEPTS = [
    "Explain what a {c} is in programming, with a small example.", "When should I use a {c}?",
    "What is the difference between a {c} and a {c2}?",
]
CONCEPTS = """hash map|linked list|recursion|closure|class|interface|generator|thread|mutex|pointer|
dictionary|tuple|lambda function|unit test|binary tree|queue|API|database index|regular expression|
decorator|exception|compiler|garbage collector|variable scope""".replace("\n", "").split("|")

MATH = [
    "What is {a} + {b} * {c}? Show your steps.",
    "A shop sells pencils for {p} cents each. How much do {n} pencils cost in dollars?",
    "Solve for x: {a}x + {b} = {d}.",
    "What is {q}% of {big}?",
    "A rectangle is {a} cm long and {b} cm wide. What are its area and perimeter?",
    "If a car travels at {s} km/h for {h} hours, how far does it go?",
    "What is the average of {a}, {b}, {c} and {d}?",
    "A recipe needs {a} eggs for {n} people. How many eggs are needed for {m} people?",
    "Simplify the fraction {x}/{y}.",
    "What is {a} squared minus {b} squared? Explain a shortcut.",
    "Tom has {big} dollars and spends {q}% of it. How much is left?",
    "A circle has a radius of {a} meters. What is its area? Use pi = 3.14.",
    "How many minutes are there in {h} hours and {a} minutes?",
    "Is {big} divisible by {a}? Explain how to check.",
    "Find the next number in the sequence {a}, {a2}, {a3}, {a4}, ...",
    "What is the probability of rolling a sum of {dice} with two six-sided dice?",
]

WRITING = [
    "Write a short poem about {t}.", "Write a haiku about {t}.", "Write a short story about {t}.",
    "Write a persuasive paragraph about why people should learn about {t}.",
    "Write a product description for a board game about {t}.", "Write a limerick about {t}.",
    "Write a blog post introduction about {t}.", "Write an email inviting a friend to a talk about {t}.",
    "Write a short speech for a school assembly about {t}.", "Write a diary entry by someone who discovers {t}.",
    "Write a dialogue between two friends arguing about {t}.", "Write a catchy slogan and a tagline about {t}.",
    "Write a children's bedtime story involving {t}.", "Write a formal letter to a mayor about {t}.",
    "Write a travel guide paragraph about visiting {country}.", "Write a short news report about {t}.",
]
ROLEPLAY = [
    "Pretend you are {p}. Introduce yourself.", "You are {p}. Describe your typical day.",
    "Act as {p} and give me advice about {t}.", "Imagine you are {p}. What do you think about {t}?",
]

QA = [
    "What is {t}?", "How does {t} work?", "Why is {t} important?", "Explain {t} to a ten-year-old.",
    "What are three interesting facts about {t}?", "What is the history of {t}?",
    "What are the pros and cons of {t}?", "How has {t} changed over time?",
    "Explain the science behind {t}.", "What are common misconceptions about {t}?",
    "What is the capital of {country}, and what is it known for?", "What language is spoken in {country}?",
    "Describe the culture and food of {country}.", "What is the climate like in {country}?",
]

SUMMARY = [
    "Summarize the following text in two sentences:\n\n{passage}",
    "Give three bullet points with the main ideas of this text:\n\n{passage}",
    "Explain this text in plain language:\n\n{passage}",
    "What is this text about? Answer briefly.\n\n{passage}",
    "List the names of functions or classes mentioned in the following text:\n\n{passage}",
    "Write a one-line title for this text:\n\n{passage}",
]
REASONING = [
    "If all {x} are {y} and some {y} are green, are some {x} necessarily green? Explain.",
    "I have {a} apples, eat {b}, then buy twice as many as I have left. How many do I have?",
    "Which is heavier, a kilogram of {m1} or a kilogram of {m2}? Explain.",
    "Anna is older than Ben. Ben is older than Carl. Who is the youngest? Explain your reasoning.",
    "A farmer has {a} chickens and {b} cows. How many legs are there in total?",
    "What comes next: Monday, Wednesday, Friday, ...? Explain the pattern.",
    "Compare {t} and {t2}: how are they similar and how are they different?",
    "What would happen if {t} disappeared tomorrow? Think step by step.",
    "Give me a plan, step by step, to learn about {t} in one week.",
]
ANIMALS = ["cats", "birds", "robots", "teachers", "trees", "cars", "dogs", "painters"]
MATERIALS = ["feathers", "iron", "cotton", "rocks", "water", "sand"]

HELD_OUT_MODULES = {"argparse", "collections", "json", "logging", "pathlib", "subprocess", "textwrap", "zipfile",
                    "heapq", "bisect", "fractions", "decimal"}  # benchmarks/requant_quality.py's text
PASSAGE_MODULES = ["abc", "ast", "asyncio", "base64", "calendar", "cmd", "codecs", "colorsys", "contextlib", "copy",
                   "csv", "dataclasses", "datetime", "difflib", "enum", "filecmp", "fnmatch", "functools", "getopt",
                   "gettext", "glob", "gzip", "hashlib", "hmac", "html", "imaplib", "inspect", "ipaddress",
                   "itertools", "locale", "mailbox", "mimetypes", "numbers", "operator", "optparse", "os",
                   "pickle", "pkgutil", "platform", "plistlib", "poplib", "pprint", "queue", "quopri", "random",
                   "re", "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "signal", "smtplib",
                   "socket", "sqlite3", "statistics", "string", "struct", "tarfile", "tempfile", "threading",
                   "timeit", "tokenize", "trace", "traceback", "types", "typing", "unittest", "uuid", "warnings",
                   "wave", "weakref", "webbrowser", "xml", "zlib"]


def passages(max_chars: int = 900) -> list[str]:
    """Paragraph groups from standard-library docstrings (modules and their public members)."""
    out: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in PASSAGE_MODULES:
            assert name not in HELD_OUT_MODULES
            try:
                mod = importlib.import_module(name)
            except ImportError:
                continue
            docs = [mod.__doc__] + [getattr(getattr(mod, a), "__doc__", None) for a in sorted(dir(mod))
                                    if not a.startswith("_")]
            for d in docs:
                if not isinstance(d, str):
                    continue
                d = d.strip()
                if 200 <= len(d):
                    out.append(d[:max_chars].rsplit(" ", 1)[0] if len(d) > max_chars else d)
    return sorted(set(out))


def build_prompts(n: int = 4000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = passages()
    r = rng.randint

    def t() -> str:
        return rng.choice(TOPICS)

    makers = {
        "conversation": lambda: rng.choice(CHAT) if rng.random() < 0.5 else rng.choice(ROLEPLAY).format(
            p=rng.choice(PEOPLE).strip(), t=t()),
        "coding": lambda: rng.choice(CODING).format(lang=rng.choice(LANGUAGES), task=rng.choice(CODING_TASKS).strip())
        if rng.random() < 0.8 else rng.choice(CODING_CONCEPTS).format(c=rng.choice(CONCEPTS),
                                                                         c2=rng.choice(CONCEPTS)),
        "math": lambda: rng.choice(MATH).format(
            a=(a := r(2, 40)), b=r(2, 30), c=r(2, 20), d=r(41, 200), p=r(5, 95), n=r(3, 30), m=r(2, 12), q=r(5, 90),
            big=r(50, 2000), s=r(20, 120), h=r(2, 9), x=(g := r(2, 9)) * r(2, 12), y=g * r(2, 12),
            a2=a * 2, a3=a * 4, a4=a * 8, dice=r(2, 12)),
        "writing": lambda: rng.choice(WRITING).format(t=t(), country=rng.choice(COUNTRIES)),
        "qa": lambda: rng.choice(QA).format(t=t(), country=rng.choice(COUNTRIES)),
        "summary": lambda: rng.choice(SUMMARY).format(passage=rng.choice(texts)),
        "reasoning": lambda: rng.choice(REASONING).format(
            x=rng.choice(ANIMALS), y=rng.choice(ANIMALS), a=r(3, 20), b=r(1, 3), m1=rng.choice(MATERIALS),
            m2=rng.choice(MATERIALS), t=t(), t2=t()),
    }
    kinds = list(makers)
    seen: set[str] = set()
    out: list[str] = []
    tries = 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        p = makers[kinds[len(out) % len(kinds)]]()
        if p not in seen:
            seen.add(p)
            out.append(p)
    rng.shuffle(out)
    return out


# Second turns, written for this project. A chat user's follow-up reads the first answer as
# context; the target answers it greedily like the first turn.
FOLLOW_UPS = [
    "Can you make that shorter?", "Please explain that in simpler words.", "Can you give me an example?",
    "Summarize your answer in three bullet points.", "Why? Explain your reasoning.",
    "Thanks! Can you say more about the most important part?", "Turn your answer into a short poem.",
    "Is there anything you left out?", "What is a common mistake people make here?",
    "Could you put the main points in a table?", "Now explain it to a ten-year-old.",
    "Give me three questions I could ask next about this.", "Are you sure? Please check your answer.",
    "Say it again, but more formally.", "Say it again, but in a friendly and casual tone.",
    "What are the pros and cons?", "How would you explain this to a beginner?",
    "Can you write that as a numbered list?", "What is the single most useful tip from your answer?",
    "Tell me more.", "Continue.", "Please add a short conclusion.", "Translate the first sentence into French.",
    "Add comments that explain each step.", "Now write a short test for it.",
    "What would change if the numbers were twice as large?", "Give it a catchy title.",
    "Write a one-sentence summary.", "Now do the same for a different example.",
    "Which part of this is the hardest to understand, and why?",
]


def build_conversations(n: int = 4000, seed: int = 0, p_follow_up: float = 0.5) -> list[list[str]]:
    """User turns of n conversations: build_prompts' first turns, and with probability
    p_follow_up a second turn from FOLLOW_UPS. Deterministic for a given seed."""
    return with_follow_ups(build_prompts(n, seed), seed, p_follow_up)


def with_follow_ups(prompts: list[str], seed: int, p_follow_up: float) -> list[list[str]]:
    """Each prompt as a conversation; with probability p_follow_up a second turn from FOLLOW_UPS."""
    rng = random.Random(seed + 7919)
    return [[p, rng.choice(FOLLOW_UPS)] if rng.random() < p_follow_up else [p] for p in prompts]


def load_conversations(path) -> list[list[str]]:
    """User turns from a JSONL file, one conversation a line: {"turns": [...]} (every turn is
    answered in order, each with the earlier answers as context) or {"prompt": "..."}."""
    out: list[list[str]] = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i + 1}: not JSON ({e})") from None
            turns = obj.get("turns") if isinstance(obj, dict) else None
            if turns is None and isinstance(obj, dict) and isinstance(obj.get("prompt"), str):
                turns = [obj["prompt"]]
            if not turns or not all(isinstance(x, str) and x for x in turns):
                raise ValueError(f"{path}:{i + 1}: a line needs \"prompt\" or non-empty \"turns\"")
            out.append(list(turns))
    if not out:
        raise ValueError(f"{path}: no conversations")
    return out
