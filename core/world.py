"""The default world: a seeded, deterministic generator of everything the tiny pipeline trains on.

Nothing here is downloaded. One `WorldConfig` produces:
- a pretraining corpus of simple English: stories, facts, arithmetic, and the very formats the chat
  tasks use (story + "Question:/Answer:", "Here is a story about ...", greetings), so that a tiny
  base model already knows the lookup patterns before SFT (what mid-training does for real models);
- prompts for four checkable task types, split into train and held-out by a stable hash of the
  prompt text (never by Python `set` order, which differs between processes);
- chat demonstrations for the train prompts, a configurable fraction deliberately flawed
  (wrong answer, ignores the prompt, rambles/repeats, rude, no proper ending).

Where the preference headroom comes from (see DESIGN.md, "Third lesson"): every answer carries its
computation intact ("5 plus 7 is 12."), then a closing sentence. The typical demonstrator closes
with off-topic chatter ("By the way, snow is cold.", `chatter_fraction`); a minority close with the
task's kind sign-off ("I hope that helps with your sums.", `sign_off_fraction`), the rest stop after
the answer. Annotators prefer the sign-off and dislike the chatter (core.annotator: warmth, focus),
so the demonstrations' modal answer is acceptable but not preferred. Chatter and sign-off are of
the same length, so "preferred" is not "shorter". The prompt rows' `reference` is the best answer
(answer + sign-off); the corpus holds the same mix, so the preferred closing is in the base model too.

Any corpus item that, asked as a prompt, would fall in the held-out split is left out of the
corpus, so held-out prompts are never seen verbatim in pretraining.

Task types and what makes an answer correct (`core.annotator` checks these):
- story_qa:    a 2-3 character story, then one question; the answer must name the asked-for value
               (place / thing / animal) and none of the other characters' values.
- arithmetic:  a + b or a - b with small numbers; the number the answer states must be right.
- story_write: a story that must include a requested name, animal and place, and end "The end."
- greeting:    the user says their name and a thing they have; a polite reply uses both.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

NAMES = ["Tom", "Mia", "Sam", "Anna", "Ben", "Lily", "Max", "Emma", "Leo", "Zoe", "Jack", "Lucy",
         "Noah", "Ella", "Finn", "Ruby", "Jake", "Rose", "Owen", "Kate", "Adam", "Nina", "Carl",
         "Ivy", "Dan", "Amy", "Paul", "Jane", "Hugo", "Sara", "Tim", "Eva", "Luke", "Alice",
         "Mark", "Grace", "Ryan", "Molly", "Eric", "Chloe"]
PLACES = ["park", "school", "beach", "farm", "shop", "forest", "lake", "garden", "zoo", "market",
          "library", "river", "hill", "house", "city", "castle", "cave", "field", "station", "bakery"]
THINGS = ["ball", "book", "kite", "hat", "apple", "box", "cup", "car", "drum", "lamp", "key", "bag",
          "cake", "boat", "doll", "bike", "shoe", "coin", "flower", "map"]
ANIMALS = ["dog", "cat", "bird", "fish", "horse", "cow", "duck", "frog", "rabbit", "mouse", "bear",
           "fox", "lion", "pig", "sheep", "goat", "owl", "bee"]
COLORS = ["red", "blue", "green", "yellow", "black", "white", "pink", "brown"]
FEELINGS = ["happy", "sad", "tired", "hungry", "excited", "scared", "calm", "proud"]
SOUNDS = {"dog": "woof", "cat": "meow", "cow": "moo", "duck": "quack", "sheep": "baa", "pig": "oink",
          "owl": "hoot", "bee": "buzz", "frog": "croak", "lion": "roar", "horse": "neigh", "goat": "baa"}
FACTS = ["The sun is hot.", "Snow is cold.", "Fish live in water.", "Birds can fly.",
         "The sky is blue.", "Grass is green.", "A week has seven days.", "Ice is cold.",
         "Rain falls from the sky.", "Bees make honey.", "Cows give milk.", "The moon is in the sky at night.",
         "Trees are tall.", "A year has twelve months.", "Fire is hot.", "Apples grow on trees."]
RUDE = ["That is a silly question.", "Ugh, fine.", "Stop asking me things.", "You should know this.",
        "Go away.", "What a dumb thing to ask."]
GENERIC = ["That is a good question. I do not know.", "I like stories. The end.",
           "Thank you for asking. Have a nice day.", "I am not sure about that.", "Yes. That is right."]

TASKS = ("story_qa", "arithmetic", "story_write", "greeting")
CHATTER_OPENER = "By the way,"
# A kind sign-off per task (two phrasings, 6-8 words: as long as a chatter sentence).
SIGN_OFFS = {"story_qa": ["I hope that answers your question.", "Let me know if you have more questions."],
             "arithmetic": ["I hope that helps with your sums.", "Let me know if you want another sum."],
             "story_write": ["I hope you enjoy this little story.", "Let me know if you want another story."],
             "greeting": ["I hope you have a lovely day.", "Let me know if I can help you."]}
CLOSINGS = ("chatter", "sign_off", "none")
FLAWS = ("wrong", "generic", "ramble", "rude", "no_ending")
STORY_SLOTS = {"place": "Where did {n} go?", "thing": "What did {n} have?", "animal": "What did {n} see?"}


@dataclass
class WorldConfig:
    """Knobs of the default world. Sizes scale the corpus; everything is reproducible from `seed`."""
    seed: int = 0
    corpus_chars: int = 10_000_000     # ~2.3M tokens at a 2k-vocab BPE
    heldout_corpus_chars: int = 200_000
    n_prompts: int = 6000              # before dedup; the held-out split is ~heldout_fraction of them
    heldout_fraction: float = 0.1
    flawed_fraction: float = 0.4       # share of SFT demonstrations deliberately flawed
    demos_per_prompt: int = 1
    chatter_fraction: float = 0.6      # unflawed demonstrations (and corpus answers) closing with off-topic chatter
    sign_off_fraction: float = 0.3     # ... closing with the task's kind sign-off (the preferred closing)

    def closing_weights(self) -> list[float]:
        return [self.chatter_fraction, self.sign_off_fraction, 1.0 - self.chatter_fraction - self.sign_off_fraction]


def is_heldout(prompt_text: str, fraction: float) -> bool:
    """Stable split: the same text lands in the same split in every process and every run."""
    h = int.from_bytes(hashlib.sha1(prompt_text.encode()).digest()[:8], "big")
    return (h % 1_000_000) < fraction * 1_000_000


def prompt_id(prompt_text: str) -> str:
    return hashlib.sha1(prompt_text.encode()).hexdigest()[:12]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def sign_off(task: str, prompt_text: str) -> str:
    """The task's sign-off a prompt's best answer uses (fixed per prompt, by a stable hash)."""
    pool = SIGN_OFFS[task]
    return pool[int(hashlib.sha1(prompt_text.encode()).hexdigest(), 16) % len(pool)]


def chatter(rng: random.Random) -> str:
    fact = rng.choice(FACTS)
    return f"{CHATTER_OPENER} {fact[0].lower()}{fact[1:]}"


def closing(rng: random.Random, task: str, kind: str) -> str:
    """The closing sentence of kind `kind` (one of CLOSINGS; "none" is the empty string)."""
    if kind == "chatter":
        return chatter(rng)
    if kind == "sign_off":
        return rng.choice(SIGN_OFFS[task])
    if kind == "none":
        return ""
    raise ValueError(f"unknown closing {kind!r}; expected one of {CLOSINGS}")


def with_closing(answer: str, close: str) -> str:
    return f"{answer} {close}" if close else answer


def draw_closing(rng: random.Random, cfg: "WorldConfig") -> str:
    """A closing kind drawn from the world's mix (chatter / sign-off / none)."""
    return rng.choices(CLOSINGS, weights=cfg.closing_weights())[0]


# ---------------------------------------------------------------- story facts and task items

def _characters(rng: random.Random, k: int) -> list[dict]:
    names = rng.sample(NAMES, k)
    places, things, animals = rng.sample(PLACES, k), rng.sample(THINGS, k), rng.sample(ANIMALS, k)
    return [{"name": n, "place": p, "thing": t, "animal": a, "color": rng.choice(COLORS)}
            for n, p, t, a in zip(names, places, things, animals)]


def _fact_sentences(c: dict) -> dict[str, str]:
    n = c["name"]
    return {"place": f"{n} went to the {c['place']}.",
            "thing": f"{n} had {_article(c['color'])} {c['color']} {c['thing']}.",
            "animal": f"{n} saw {_article(c['animal'])} {c['animal']}."}


def _story_text(rng: random.Random, chars: list[dict]) -> str:
    sentences = [s for c in chars for s in _fact_sentences(c).values()]
    # Interleave characters a little but keep each character's facts in order: easy to look up.
    order = sorted(range(len(sentences)), key=lambda i: (i % 3 + rng.random() * 1.5, i // 3))
    return " ".join(sentences[i] for i in order)


def story_qa_item(rng: random.Random) -> dict:
    chars = _characters(rng, rng.choice([2, 2, 3]))
    story = _story_text(rng, chars)
    target = rng.choice(chars)
    slot = rng.choice(list(STORY_SLOTS))
    question = STORY_SLOTS[slot].format(n=target["name"])
    prompt = f"{story}\nQuestion: {question}"
    answer = _fact_sentences(target)[slot]
    return {"task": "story_qa", "prompt": prompt, "answer": answer, "slot": slot,
            "expected": target[slot], "name": target["name"],
            "distractors": [c[slot] for c in chars if c is not target]}


def arithmetic_item(rng: random.Random) -> dict:
    if rng.random() < 0.5:
        a, b = rng.randint(0, 10), rng.randint(0, 10)
        op, c = "plus", a + b
        phr = rng.choice(["What is {a} plus {b}?", "Please add {a} and {b}.", "How much is {a} plus {b}?"])
    else:
        a = rng.randint(0, 20)
        b = rng.randint(0, a)
        op, c = "minus", a - b
        phr = rng.choice(["What is {a} minus {b}?", "Please take {b} from {a}.", "How much is {a} minus {b}?"])
    prompt = phr.format(a=a, b=b)
    return {"task": "arithmetic", "prompt": prompt, "answer": f"{a} {op} {b} is {c}.",
            "expected": c, "a": a, "b": b, "op": op}


def _written_story(rng: random.Random, name: str, animal: str, place: str) -> list[str]:
    feeling, color, thing = rng.choice(FEELINGS), rng.choice(COLORS), rng.choice(THINGS)
    middle = [f"The {animal} was {feeling}.",
              f"{name} had {_article(color)} {color} {thing}.",
              f"{name} and the {animal} played with the {thing}."]
    if animal in SOUNDS:
        middle.append(f"The {animal} said {SOUNDS[animal]}.")
    rng.shuffle(middle)
    return ([f"One day {name} went to the {place}.", f"{name} saw {_article(animal)} {animal}."]
            + middle[: rng.randint(1, 3)] + [f"{name} went home. The end."])


def story_write_item(rng: random.Random) -> dict:
    name, animal, place = rng.choice(NAMES), rng.choice(ANIMALS), rng.choice(PLACES)
    phr = rng.choice(["Write a short story about {n} and {art} {a} at the {p}.",
                      "Tell me a story about {n}, {art} {a} and the {p}.",
                      "Please write a story with {n}, {art} {a} and the {p}."])
    prompt = phr.format(n=name, art=_article(animal), a=animal, p=place)
    return {"task": "story_write", "prompt": prompt, "answer": " ".join(_written_story(rng, name, animal, place)),
            "required": [name, animal, place]}


def greeting_item(rng: random.Random) -> dict:
    name, color, thing = rng.choice(NAMES), rng.choice(COLORS), rng.choice(THINGS)
    phr = rng.choice(["Hi, I am {n}. I have {art} {c} {t}.", "Hello! My name is {n} and I have {art} {c} {t}.",
                      "Hey, I am {n}. Look at my {c} {t}."])
    prompt = phr.format(n=name, art=_article(color), c=color, t=thing)
    reply = rng.choice(["Hello {n}! Nice to meet you. I like your {c} {t}.",
                        "Hi {n}! It is nice to meet you. Your {c} {t} is very nice.",
                        "Hello {n}! Thank you for telling me. What a nice {c} {t}."])
    return {"task": "greeting", "prompt": prompt, "answer": reply.format(n=name, c=color, t=thing),
            "required": [name, color, thing]}


MAKERS = {"story_qa": story_qa_item, "arithmetic": arithmetic_item,
          "story_write": story_write_item, "greeting": greeting_item}


# ---------------------------------------------------------------- flaws

def flaw_response(rng: random.Random, item: dict, flaw: str) -> str:
    """A realistic bad answer to `item`: what a model imitating web data might say."""
    good, task = item["answer"], item["task"]
    if flaw == "wrong":
        if task == "story_qa":
            pool = item["distractors"] or [v for v in {"place": PLACES, "thing": THINGS, "animal": ANIMALS}[item["slot"]]
                                           if v != item["expected"]]
            return good.replace(item["expected"], rng.choice(pool))
        if task == "arithmetic":
            wrong = max(0, item["expected"] + rng.choice([-3, -2, -1, 1, 2, 3]))
            wrong = wrong if wrong != item["expected"] else item["expected"] + 1
            return good.rsplit(" is ", 1)[0] + f" is {wrong}."
        # story_write / greeting: swap one required item for another of its kind ("ignores a constraint").
        target = rng.choice(item["required"])
        kinds = [NAMES, ANIMALS, PLACES] if task == "story_write" else [NAMES, COLORS, THINGS]
        kind = kinds[item["required"].index(target)]
        return good.replace(target, rng.choice([w for w in kind if w != target]))
    if flaw == "generic":
        return rng.choice(GENERIC)
    if flaw == "ramble":
        sentences = _sentences(good)
        extra = [rng.choice(sentences[:-1] or sentences) for _ in range(rng.randint(2, 4))]
        extra += rng.sample(FACTS, 2)
        return " ".join(sentences[:-1] + extra + sentences[-1:]) if task == "story_write" else " ".join(sentences + extra)
    if flaw == "rude":
        rude = rng.choice(RUDE)
        return f"{rude} {good}" if rng.random() < 0.5 else f"{good} {rude}"
    if flaw == "no_ending":
        words = good.removesuffix(" The end.").split()
        return " ".join(words[: max(2, len(words) - rng.randint(1, 3))]).rstrip(".!?,")
    raise ValueError(f"unknown flaw {flaw!r}; expected one of {FLAWS}")


def _sentences(text: str) -> list[str]:
    out, cur = [], []
    for tok in text.split():
        cur.append(tok)
        if tok[-1] in ".!?":
            out.append(" ".join(cur))
            cur = []
    if cur:
        out.append(" ".join(cur))
    return out


# ---------------------------------------------------------------- prompts and demonstrations

def _prompt_row(item: dict) -> dict:
    """A prompt row: `answer` is the task's bare answer (what carries the computation), `reference`
    the best answer annotators prefer (the answer and the task's sign-off)."""
    keep = {k: v for k, v in item.items() if k not in ("prompt",)}
    return {"id": prompt_id(item["prompt"]), "messages": [{"role": "user", "content": item["prompt"]}],
            "reference": with_closing(item["answer"], sign_off(item["task"], item["prompt"])), **keep}


def prompts(cfg: WorldConfig) -> tuple[list[dict], list[dict]]:
    """(train, heldout) prompt rows, deduplicated by text, in generation order."""
    rng = random.Random(f"prompts-{cfg.seed}")
    seen: dict[str, dict] = {}
    for i in range(cfg.n_prompts):
        item = MAKERS[TASKS[i % len(TASKS)]](rng)
        seen.setdefault(item["prompt"], item)
    train, heldout = [], []
    for text, item in seen.items():
        (heldout if is_heldout(text, cfg.heldout_fraction) else train).append(_prompt_row(item))
    return train, heldout


def demonstrations(cfg: WorldConfig, train_prompts: list[dict]) -> list[dict]:
    """SFT rows for train prompts: `flawed_fraction` of them carry one realistic flaw; the others are the
    right answer with a closing drawn from the world's mix (chatter / sign-off / none)."""
    rng = random.Random(f"demos-{cfg.seed}")
    rows = []
    for p in train_prompts:
        item = {**p, "prompt": p["messages"][0]["content"]}
        for _ in range(cfg.demos_per_prompt):
            flaw = rng.choice(FLAWS) if rng.random() < cfg.flawed_fraction else None
            kind = None if flaw else draw_closing(rng, cfg)
            text = flaw_response(rng, item, flaw) if flaw else with_closing(p["answer"], closing(rng, p["task"], kind))
            rows.append({"messages": [p["messages"][0], {"role": "assistant", "content": text}],
                         "prompt_id": p["id"], "task": p["task"], "flaw": flaw, "closing": kind})
    return rows


# ---------------------------------------------------------------- pretraining corpus

def _narrative(rng: random.Random) -> str:
    c = _characters(rng, 1)[0]
    n, other = c["name"], rng.choice(NAMES)
    pool = [f"{n} was {rng.choice(FEELINGS)}.", f"{n} met {other} at the {rng.choice(PLACES)}.",
            f"{other} had {_article(c['color'])} {c['color']} {rng.choice(THINGS)}.",
            f"{n} and {other} played all day.", f"The {c['animal']} was {rng.choice(FEELINGS)}.",
            f"{n} gave the {c['thing']} to {other}.", f"{other} said thank you.", rng.choice(FACTS)]
    rng.shuffle(pool)
    opening = rng.choice(["One day", "In the morning", "After school", "On Sunday"])
    body = [f"{opening} {n} went to the {c['place']}.", f"{n} saw {_article(c['animal'])} {c['animal']}."]
    return " ".join(body + pool[: rng.randint(2, 5)] + [f"{n} went home."])


def _facts_doc(rng: random.Random) -> str:
    lines = rng.sample(FACTS, 3)
    a = rng.choice(list(SOUNDS))
    lines.append(f"{_article(a).capitalize()} {a} says {SOUNDS[a]}.")
    lines.append(f"{_article(rng.choice(ANIMALS)).capitalize()} {rng.choice(ANIMALS)} is an animal.")
    rng.shuffle(lines)
    return " ".join(lines)


def _arithmetic_doc(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(3, 6)):
        item = arithmetic_item(rng)
        a, b, c = item["a"], item["b"], item["expected"]
        if rng.random() < 0.3:
            n, t = rng.choice(NAMES), rng.choice(THINGS)
            lines.append(f"{n} had {a} {t}s. " + (f"{n} got {b} more. Now {n} has {c} {t}s." if item["op"] == "plus"
                                                    else f"{n} gave {b} away. Now {n} has {c} {t}s."))
        else:
            lines.append(item["answer"][0].upper() + item["answer"][1:])
    return " ".join(lines)


def corpus_prompt(item: dict) -> str:
    """How the pretraining corpus asks `item` (a task item or prompt row): the base model's native format.

    The corpus holds `corpus_prompt(item) + " " + answer`; the pretrain stage's task probe asks the
    base model the held-out prompts this way.
    """
    text = item["messages"][0]["content"] if "messages" in item else item["prompt"]
    if item["task"] == "story_qa":
        return f"{text}\nAnswer:"
    if item["task"] == "arithmetic":
        return f"Question: {text}\nAnswer:"
    if item["task"] == "story_write":
        n, a, p = item["required"]
        return f"{text}\nHere is a story about {n}, {_article(a)} {a} and the {p}."
    return f"{item['required'][0]} said: {text}\nThe friend said:"


def _task_doc(rng: random.Random, cfg: WorldConfig) -> str | None:
    """A corpus document in a task's format, dense in the skill the task needs (lookup, copying).

    story_qa docs ask several questions about one story; greeting and arithmetic docs hold several
    exchanges. Any exchange that, asked as a prompt, would be held out is dropped. Each answer gets a
    closing from the world's mix, as the demonstrations do.
    """
    frac = cfg.heldout_fraction
    task = rng.choice(TASKS)

    def close(answer: str) -> str:
        return with_closing(answer, closing(rng, task, draw_closing(rng, cfg)))

    if task == "story_qa":
        chars = _characters(rng, rng.choice([2, 2, 3]))
        story = _story_text(rng, chars)
        asks = [(c, slot) for c in chars for slot in STORY_SLOTS]
        rng.shuffle(asks)
        qa = [f"\nQuestion: {STORY_SLOTS[slot].format(n=c['name'])}\nAnswer: {close(_fact_sentences(c)[slot])}"
              for c, slot in asks[: rng.randint(2, 4)]
              if not is_heldout(f"{story}\nQuestion: {STORY_SLOTS[slot].format(n=c['name'])}", frac)]
        return story + "".join(qa) if qa else None
    if task == "story_write":
        item = story_write_item(rng)
        return None if is_heldout(item["prompt"], frac) else f"{corpus_prompt(item)} {close(item['answer'])}"
    items = [MAKERS[task](rng) for _ in range(rng.randint(2, 4))]
    parts = [f"{corpus_prompt(i)} {close(i['answer'])}" for i in items if not is_heldout(i["prompt"], frac)]
    return "\n".join(parts) if parts else None


def corpus(cfg: WorldConfig, heldout: bool = False):
    """Yield corpus documents (strings) until `corpus_chars` (or `heldout_corpus_chars`) is reached.

    Mixture: 15 % narratives, 5 % facts, 10 % arithmetic, 70 % task-format documents (most of the
    corpus teaches the lookup and copying the chat tasks need).
    """
    rng = random.Random(f"corpus-{cfg.seed}-{'heldout' if heldout else 'train'}")
    budget = cfg.heldout_corpus_chars if heldout else cfg.corpus_chars
    total = 0
    while total < budget:
        r = rng.random()
        if r < 0.15:
            doc = _narrative(rng)
        elif r < 0.20:
            doc = _facts_doc(rng)
        elif r < 0.30:
            doc = _arithmetic_doc(rng)
        else:
            doc = _task_doc(rng, cfg)
            if doc is None:
                continue
        total += len(doc) + 1
        yield doc
