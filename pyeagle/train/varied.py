"""A more varied self-distillation prompt set (`train data --prompt-set varied`).

The first prompt set (prompts.py) fills about a hundred short templates from a list of 120 topics.
A head trained on its answers agrees with the target 61% of the time on held-out answers to the
same templates but only 42% on MT-bench's (docs/TRAINING.md, "The template gap"): it learnt the
templates' answers, not the target. This set varies what the first one keeps fixed:

- requests shaped like real chat requests: an audience, a length or a format, several parts;
- topics from a longer list, plus words of the target's own vocabulary (any model's);
- people, places, jobs and numbers drawn per prompt; short made-up texts to extract from;
- kinds weighted like a chat assistant's traffic: writing, role-play, reasoning, math, coding,
  extraction, STEM, humanities, advice and small talk.

Everything here was written for this project; no line comes from an evaluation set (the data
command's overlap check tests every prompt against MT-bench).

    build_varied_prompts(n, seed, words) -> list[str]
"""
from __future__ import annotations

import random
import re

from .prompts import COUNTRIES, PEOPLE, TOPICS, passages

MORE_TOPICS = """the history of chess openings|remote work|electric scooters|the gig economy|ocean acidification|
urban gardening|the placebo effect|cryptocurrency regulation|the Cold War|impressionist painting|
the Byzantine Empire|the Harlem Renaissance|fermentation|the supply chain|the greenhouse effect|
microplastics|the Fibonacci sequence|game theory|the Turing test|open-source software|public transport|
noise pollution|the stock exchange|minimum wage|the Great Depression|the Ottoman Empire|Greek mythology|
Norse mythology|the Meiji Restoration|the Apollo program|the Hubble telescope|dark matter|string theory|
plate boundaries|the nitrogen cycle|CRISPR gene editing|the human microbiome|circadian rhythms|
antibiotic resistance|the placebo|stem cells|volcanic islands|the Mariana Trench|monsoons|El Nino|
the Gulf Stream|electric grids|hydrogen fuel|carbon capture|nuclear fusion|lithium mining|smart homes|
self-driving cars|drones|blockchain|machine translation|computer viruses|password security|
data privacy|the cloud|video streaming|podcasts|e-books|board games|tabletop role-playing games|
street art|film noir|silent movies|opera|hip hop|the blues|K-pop|flamenco|ballet|stand-up comedy|
photography|calligraphy|pottery|knitting|woodworking|birdwatching|rock climbing|sailing|surfing|
yoga|chess tournaments|the Tour de France|the World Cup|basketball|cricket|sumo wrestling|
the Mediterranean diet|veganism|food waste|sourdough|spices|coffee roasting|wine making|beekeeping|
homeschooling|standardized tests|student loans|online courses|bilingual education|libraries in the digital age|
the four-day work week|job interviews|negotiating a salary|starting a small business|crowdfunding|
personal budgeting|retirement savings|insurance|credit scores|inflation and interest rates|tariffs|
the European Union|the United Nations|elections|free speech|jury trials|human rights|urbanization|
housing prices|traffic jams|bike lanes|high-speed rail|space tourism|Mars colonization|asteroid mining|
exoplanets|the speed of light|gravity|magnetism|friction|sound waves|lasers|semiconductors|
the transistor|the steam engine|the printing revolution|the telephone|radio|television|the smartphone|
the Wright brothers|Marie Curie|Isaac Newton|Ada Lovelace|Leonardo da Vinci|Cleopatra|Genghis Khan|
Mahatma Gandhi|Nelson Mandela|Charles Darwin|Albert Einstein|Frida Kahlo|Mozart|Confucius|Socrates|
stoicism|utilitarianism|free will|the trolley problem|existentialism|mindfulness|procrastination|
habit formation|memory|dreams|emotional intelligence|introverts and extroverts|peer pressure|
loneliness|grief|gratitude|kindness|leadership|teamwork|public speaking|conflict resolution|
time management|burnout|parenting|adopting a pet|moving abroad|learning a musical instrument|
first aid|home repairs|camping|packing for a trip|jet lag|tiny houses|thrift shopping|fast fashion|
sneaker culture|tattoos|weddings|birthdays|New Year traditions|festivals of light|harvest festivals""".replace(
    "\n", "").split("|")

NAMES = """Aiko|Amara|Ben|Carlos|Chen|Dana|Elena|Farid|Grace|Hana|Ibrahim|Ines|Jamal|Julia|Kofi|Lars|Leila|
Marco|Maya|Nadia|Omar|Priya|Quinn|Rosa|Sam|Sofia|Tariq|Uma|Victor|Wen|Yusuf|Zoe""".replace("\n", "").split("|")
JOBS = """nurse|plumber|software engineer|teacher|farmer|pilot|lawyer|chef|journalist|architect|electrician|
firefighter|accountant|dentist|librarian|marine biologist|taxi driver|graphic designer|pharmacist|
veterinarian|tailor|mechanic|translator|data analyst|photographer|carpenter|social worker|baker""".replace(
    "\n", "").split("|")
PLACES = """a small fishing village|a busy airport|a night market|a mountain cabin|a space station|a desert oasis|
an old bookshop|a hospital waiting room|a rooftop garden|a train crossing Siberia|a school science fair|
an abandoned amusement park|a lighthouse in a storm|a jazz club|a research ship in Antarctica|
a village bakery at dawn|a crowded subway car|a museum after closing time""".replace("\n", "").split("|")
AUDIENCES = ["a ten-year-old", "a high-school student", "a busy manager", "my grandmother", "a complete beginner",
             "an expert", "a new employee", "a tourist", "a skeptical friend", "a university student"]
TONES = ["funny", "formal", "warm", "enthusiastic", "calm", "serious", "poetic", "sarcastic", "encouraging"]
FORMS = ["a poem", "a short story", "a blog post", "a product review", "a speech", "a letter", "a news article",
         "a song with two verses and a chorus", "a diary entry", "a dialogue", "a fairy tale", "a movie pitch",
         "an advertisement", "a recipe", "a limerick", "a sonnet", "a riddle", "a how-to guide"]
LANGS = ["Python", "Python", "Python", "JavaScript", "TypeScript", "C++", "C", "Java", "Go", "Rust", "SQL",
         "Bash", "C#", "Ruby"]
PROGRAMS = """a to-do list manager|a tic-tac-toe game|a URL shortener|a password generator|a unit converter|
a text adventure game|a simple calculator|a word frequency counter|a file renamer|a bank account class|
a rate limiter|a cache with expiry|a tokenizer for arithmetic expressions|a matrix class|a priority queue|
a command-line quiz|a log file parser|a JSON pretty printer|a markdown table generator|a shopping cart|
a library checkout system|an inventory tracker|a grade calculator|a temperature logger|a maze solver|
a sudoku validator|a linked list with insert and delete|a trie for autocomplete|a binary search tree|
a graph with breadth-first search|Dijkstra's shortest path|a union-find structure|an LRU-style cache|
a producer-consumer queue|a retry decorator|a simple web server|a CSV to JSON converter""".replace(
    "\n", "").split("|")
BUGS = [
    ("def average(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total / len(xs) + 1",
     "Python"),
    ("function isEven(n) {\n  return n % 2 == 1;\n}", "JavaScript"),
    ("def find_max(xs):\n    best = 0\n    for x in xs:\n        if x > best:\n            best = x\n    return best",
     "Python"),
    ("for (int i = 0; i <= n; i++) {\n    sum += arr[i];\n}", "C"),
    ("def reverse(s):\n    out = ''\n    for i in range(len(s)):\n        out += s[i]\n    return out", "Python"),
    ("SELECT name, COUNT(*) FROM orders WHERE COUNT(*) > 5 GROUP BY name;", "SQL"),
    ("def is_prime(n):\n    for d in range(2, n):\n        if n % d == 0:\n            return False\n    return True",
     "Python"),
    ("let total = 0;\nfor (const p of prices) total + p;\nconsole.log(total);", "JavaScript"),
]
PRODUCTS = ["wireless headphones", "a coffee grinder", "a hiking backpack", "a smartwatch", "an electric kettle",
            "a standing desk", "running shoes", "a mechanical keyboard", "a robot vacuum", "a phone case"]

WRITING = [
    "Write {form} about {t} for {aud}.", "Write {form} about {t} in a {tone} tone.",
    "Write {form} set in {place}.", "Write {form} about {t}, in under 150 words.",
    "Compose {form} about {t}. Make the ending surprising.",
    "Draft an email to my manager asking for two days off next week to attend {t} event. Keep it polite and brief.",
    "Write a cover letter for a {job} position. Mention {t} as a personal interest.",
    "Help me write a toast for my friend {name}'s wedding. {name} loves {t}.",
    "Write the opening paragraph of a mystery novel set in {place}.",
    "Write a product description for {product}, aimed at {aud}.",
    "Rewrite this sentence to sound more {tone}: \"We are writing to inform you that your order about {t} was delayed.\"",
    "Write a social media post announcing a community event about {t} in {country}.",
    "Write a short biography of a fictional {job} named {name} who grew up in {country}.",
    "Write an apology letter from a {job} to a customer, in a {tone} tone.",
    "Write a motivational message for someone who is learning about {t}.",
    "Write a scene in which {name} and a {job} meet in {place}. Use dialogue.",
    "Give me five creative titles for an article about {t}, each with a one-line description.",
    "Write a persuasive essay of three paragraphs arguing that schools should teach {t}.",
    "Write a review of {product} from the point of view of a {tone} customer.",
    "Write a story for children about a {w} that learns to share.",
    "Write a poem in which the word \"{w}\" appears in every stanza.",
]
ROLEPLAY = [
    "Pretend you are {p}. A visitor asks you about {t}. Answer in character.",
    "You are a {job} who has worked for thirty years. Tell a young colleague what you wish you had known.",
    "Act as a travel agent. I want to spend a week in {country} on a modest budget. What do you suggest?",
    "Let's play a game: you are {p} and I am a lost traveller in {place}. Start the scene.",
    "Imagine you are {hist}. Explain your most famous idea to a modern student.",
    "Act as a job interviewer for a {job} position and ask me your first three questions.",
    "You are a tour guide in {place}. Describe what we see as we walk.",
    "Pretend to be a {tone} robot that has just learnt about {t}. What do you say?",
    "Role-play a conversation between a {job} and a customer who is upset about {t}.",
    "You are a detective investigating a missing {w} in {place}. Describe your first clues.",
    "Act as my personal coach. I want to get better at {t}. Give me a plan for this month.",
]
REASONING = [
    "{n1} {job}s can finish a project in {a} days. How long would it take {n2} {job}s at the same pace? "
    "Explain your reasoning.",
    "{name} is taller than {name2}, and {name2} is taller than {name3}. Is {name3} taller than {name}? Why?",
    "A train leaves at {hh}:{mm} and the trip takes {a} hours and {b} minutes. When does it arrive?",
    "In a room there are {a} people. Each person shakes hands once with every other person. How many "
    "handshakes are there?",
    "If it takes {a} machines {a} minutes to make {a} widgets, how long would {n2} machines take to make "
    "{n2} widgets? Think carefully.",
    "A box has {a} red balls and {b} blue balls. If I take two at random, what is the chance both are red?",
    "What are the strongest arguments for and against {t}? Then give your own balanced view.",
    "{name} says: \"All {w}s are useful, so anything useful is a {w}.\" What is wrong with this argument?",
    "I have a {a}-liter jug and a {b}-liter jug. How can I measure exactly {c} liters?",
    "Which is a better choice for a family of four, a car or public transport, in a big city? Weigh the costs.",
    "A snail climbs {a} meters during the day and slides back {b} meters at night. The well is {d} meters deep. "
    "On which day does it get out?",
    "Explain step by step how you would decide whether {t} is worth the money.",
    "What is the next number: {s1}, {s2}, {s3}, {s4}, ...? Explain the rule.",
]
MATH = [
    "Solve the system: {a}x + {b}y = {c1} and x - y = {c2}.",
    "Find the derivative of f(x) = {a}x^3 - {b}x^2 + {c}x - 7.",
    "What is the sum of all integers from 1 to {big}?",
    "A shirt costs ${big} and is discounted by {q}%, then taxed at {pct}%. What is the final price?",
    "How many ways can {n1} books be arranged on a shelf?",
    "What is the area of a triangle with vertices at (0, 0), ({a}, 0) and ({b}, {c})?",
    "Solve x^2 - {s}x + {pq} = 0.",
    "What is the remainder when {big2} is divided by {a}?",
    "An investment of ${big} grows at {pct}% per year, compounded yearly. How much is it worth after {n1} years?",
    "Prove that the sum of two odd numbers is even.",
    "Convert {big} from base 10 to base 2 and base 16.",
    "A {job} earns ${big} a week and saves {q}% of it. How many weeks to save ${big2}?",
    "What is the probability of getting at least one six in {n1} rolls of a fair die?",
    "Integrate {a}x^2 + {b} from 0 to {c}.",
    "Find the greatest common divisor and the least common multiple of {x} and {y}.",
]
CODING = [
    "Write {lang} code for {prog}. Explain the main design choices.",
    "Implement {prog} in {lang}. Include a short usage example.",
    "How would you test {prog} written in {lang}? Give example tests.",
    "What is the time complexity of {prog}, and how could it be improved?",
    "Find the bug in this {blang} code and fix it:\n\n```\n{bug}\n```",
    "Explain what this {blang} code does, line by line:\n\n```\n{bug}\n```",
    "Write a {lang} function that {task}, and handle invalid input.",
    "Convert this {blang} code to {lang}:\n\n```\n{bug}\n```",
    "What are the differences between {lang} and {lang2} for writing {prog}?",
    "I'm getting an error \"index out of range\" in my {lang} loop. What are common causes?",
    "Write a SQL query that returns the three {job}s with the highest salary from a table employees(name, job, "
    "salary, city).",
    "Write a regular expression that matches {rx}, and explain each part.",
]
RX = ["an email address", "a date in the form YYYY-MM-DD", "a US phone number", "a hex color like #a3f2c1",
      "a word that starts and ends with the same letter", "an IPv4 address", "a time like 23:59"]
EXTRACTION = [
    "Extract every person's name, job and city from this text and return them as JSON:\n\n{story}",
    "From the following reviews, list each product with its rating out of 5:\n\n{reviews}",
    "Summarize this text in one sentence, then list its key facts as bullet points:\n\n{story}",
    "Read this passage and answer: what is its main purpose?\n\n{passage}",
    "Turn the following notes into a table with columns Name, Job, City:\n\n{story}",
    "Identify the tone of each review (positive, negative or mixed) and explain briefly:\n\n{reviews}",
    "Give three keywords for this text and a one-line summary:\n\n{passage}",
    "Count how many people in this text live in {country}, and name them:\n\n{story}",
]
STEM = [
    "Explain how {t} works, as if to {aud}.", "What are the main scientific challenges of {t}?",
    "Why does ice float on water? Relate it to {t} if you can.",
    "Describe an experiment a student could do at home to learn about {t}.",
    "What is the difference between weather and climate, and how does {t} fit in?",
    "Explain the role of {t} in modern engineering.", "How would a {job} use physics in daily work?",
    "What happens in the body during {t}? Explain for {aud}.",
    "What are the units of energy, power and force, and how are they related?",
    "Explain the concept of \"{w}\" in a scientific context, if it has one.",
]
HUMANITIES = [
    "What were the causes and consequences of {t}?", "How did {hist} influence the world?",
    "Compare the cultures of {country} and {country2} in a short essay.",
    "Discuss the ethical questions raised by {t}.", "Why is {t} still studied today?",
    "How has {t} been portrayed in literature and film?", "What can we learn from {hist}'s life?",
    "Explain the idea of {phil} and give an everyday example.",
    "Write a short essay on how {t} has shaped society in {country}.",
    "What does the word \"{w}\" mean, where does it come from, and how is it used?",
]
ADVICE = [
    "I'm a {job} and I feel stuck in my career. What should I consider before changing jobs?",
    "How can I explain {t} to {aud} without boring them?",
    "I have {a} hours a week of free time. How should I split it between exercise, {t} and rest?",
    "My friend {name} is moving to {country}. What practical tips should I give them?",
    "I want to start learning about {t} but don't know where to begin. Suggest a plan.",
    "What are good questions to ask at the end of a job interview for a {job} position?",
    "How do I politely tell a coworker that their {w} habit bothers me?",
    "Give me a weekly meal plan on a budget for someone who loves {t}.",
    "Hello! I'm planning a trip to {country} with my family. What should we not miss?",
    "Thanks for the help yesterday! Today I'm curious about {t}. Can you tell me something surprising?",
]
HISTORICAL = """Isaac Newton|Marie Curie|Ada Lovelace|Leonardo da Vinci|Cleopatra|Confucius|Socrates|Galileo|
Charles Darwin|Albert Einstein|Mozart|Frida Kahlo|Mahatma Gandhi|Nelson Mandela|Queen Victoria|
Ibn Battuta|Hypatia|Nikola Tesla|Rosalind Franklin|Alan Turing""".replace("\n", "").split("|")
PHILOSOPHY = ["stoicism", "utilitarianism", "the social contract", "free will", "the golden mean", "empiricism",
              "the categorical imperative", "existentialism", "pragmatism", "the veil of ignorance"]


def _story(rng: random.Random) -> str:
    people = rng.sample(NAMES, rng.randint(3, 5))
    lines = []
    for p in people:
        job, country, t = rng.choice(JOBS), rng.choice(COUNTRIES), rng.choice(TOPICS + MORE_TOPICS)
        form = rng.choice(["{p} works as a {j} in {c} and spends weekends reading about {t}.",
                           "{p}, a {j}, moved to {c} last year; friends say {p} never stops talking about {t}.",
                           "In {c}, {p} trained as a {j}. Lately {p} has been giving talks on {t}."])
        lines.append(form.format(p=p, j=job, c=country, t=t))
    return " ".join(lines)


def _reviews(rng: random.Random) -> str:
    out = []
    for prod in rng.sample(PRODUCTS, rng.randint(2, 4)):
        stars = rng.randint(1, 5)
        good = rng.choice(["works well", "looks great", "was cheap", "arrived quickly", "is easy to use"])
        bad = rng.choice(["broke after a month", "is too loud", "feels flimsy", "has a confusing manual",
                          "drains the battery"])
        text = {1: f"Terrible: it {bad}.", 2: f"It {good}, but it {bad}.", 3: f"Okay. It {good}; it also {bad}.",
                4: f"Good overall, it {good}.", 5: f"Love it! It {good} and {rng.choice(['I use it daily', 'it was a gift'])}."}
        out.append(f"- {prod}: {text[stars]} ({stars}/5)")
    return "\n".join(out)


def vocabulary_words(detok, n_vocab: int) -> list[str]:
    """Whole lower-case words (5-14 letters, with a leading space) among a tokenizer's tokens."""
    words = set()
    for i in range(n_vocab):
        s = detok(i)
        if re.fullmatch(r" [a-z]{5,14}", s):
            words.add(s[1:])
    return sorted(words)


def build_varied_prompts(n: int, seed: int, words: list[str]) -> list[str]:
    """n distinct prompts; deterministic for a given seed and word list."""
    rng = random.Random(seed)
    texts = passages()
    topics = TOPICS + MORE_TOPICS
    r = rng.randint
    from .prompts import CODING_TASKS

    def fill(frame: str) -> str:
        a, b = r(2, 12), r(2, 12)
        x, y = r(2, 9) * r(2, 15), r(2, 9) * r(2, 15)
        s0, d = r(1, 9), r(2, 7)
        n1 = r(3, 9)
        name, name2, name3 = rng.sample(NAMES, 3)
        bug, blang = rng.choice(BUGS)
        lang, lang2 = rng.sample(sorted(set(LANGS)), 2)
        lang = rng.choice(LANGS) if rng.random() < 0.5 else lang
        u, v = r(1, 9), r(1, 9)
        t = rng.choice(words) if words and rng.random() < 0.25 else rng.choice(topics)
        return frame.format(
            t=t, w=rng.choice(words) if words else rng.choice(topics), form=rng.choice(FORMS),
            aud=rng.choice(AUDIENCES), tone=rng.choice(TONES), place=rng.choice(PLACES), job=rng.choice(JOBS),
            name=name, name2=name2, name3=name3, product=rng.choice(PRODUCTS), country=rng.choice(COUNTRIES),
            country2=rng.choice(COUNTRIES), p=rng.choice(PEOPLE).strip(), hist=rng.choice(HISTORICAL),
            phil=rng.choice(PHILOSOPHY), lang=lang, lang2=lang2, prog=rng.choice(PROGRAMS),
            task=rng.choice(CODING_TASKS).strip(), bug=bug, blang=blang, rx=rng.choice(RX),
            story=_story(rng), reviews=_reviews(rng), passage=rng.choice(texts),
            a=a, b=b, c=r(2, 20), d=r(10, 40), n1=n1, n2=n1 * r(2, 4), hh=r(5, 22), mm=f"{r(0, 11) * 5:02d}",
            big=r(50, 2000), big2=r(2000, 99999), q=r(5, 60), pct=r(2, 12), x=x, y=y, s=u + v, pq=u * v,
            c1=a * u + b * v, c2=u - v, s1=s0, s2=s0 + d, s3=s0 + 2 * d + 1, s4=s0 + 3 * d + 3)

    kinds = [(WRITING, 3), (ROLEPLAY, 2), (REASONING, 2), (MATH, 2), (CODING, 3), (EXTRACTION, 2), (STEM, 2),
             (HUMANITIES, 2), (ADVICE, 2)]
    pool = [frames for frames, w in kinds for _ in range(w)]
    seen: set[str] = set()
    out: list[str] = []
    tries = 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        p = fill(rng.choice(rng.choice(pool)))
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def word_runs(s: str, k: int = 8) -> set[tuple[str, ...]]:
    """Every run of k consecutive words of s (lower case, letters, digits and apostrophes)."""
    w = re.findall(r"[a-z0-9']+", s.lower())
    return {tuple(w[i:i + k]) for i in range(len(w) - k + 1)}


def shared_runs(prompts: list[str], others: list[str], k: int = 8) -> list[tuple[int, str]]:
    """(index, run) for every prompt that shares a run of k words with any of `others`."""
    theirs: set[tuple[str, ...]] = set().union(*(word_runs(o, k) for o in others)) if others else set()
    hits = []
    for i, p in enumerate(prompts):
        common = word_runs(p, k) & theirs
        if common:
            hits.append((i, " ".join(sorted(common)[0])))
    return hits
