"""The scripted annotator: scores a (prompt, response) by an explicit rubric and ranks candidates.

It plays the human for unattended runs and is the ground truth of evaluation. It is never a
training reward (that would hide reward-model errors).

The rubric (per response; `prompt` is a prompt row from `core.world`):
  correct   in [0, 1]  task-specific, see `correctness`. A generic answer that ignores the prompt
                       scores 0, so politeness alone never wins.
  polite    1 unless the response contains a rude phrase, then 0.
  ending    1 if it ends a sentence (. ! ?) and, for stories, ends with "The end.".
  repeats   number of sentences that repeat an earlier one.
  excess    sentences beyond the task's natural length (rambling).
  empty     an empty response scores `-weights.correct` whatever else.
score = w.correct*correct + w.polite*polite + w.ending*ending - w.repeat*min(repeats, 3) - w.excess*min(excess, 4)

Personas weigh the parts differently (so annotators disagree in realistic ways) and `noise` adds
Gaussian noise to scores, seeded by (seed, persona, prompt id, response) so a judgment is
reproducible. Scores closer than `tie_margin` are a tie; when both are below `bad_below`, the
pair is "both_bad".
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from core.world import RUDE, _sentences

RUDE_MARKERS = tuple(r.lower().rstrip(".") for r in RUDE) + ("stupid", "dumb", "shut up", "go away", "ugh")
_RUDE = re.compile(r"\b(?:" + "|".join(re.escape(m) for m in RUDE_MARKERS) + r")\b", re.IGNORECASE)
MAX_SENTENCES = {"story_qa": 1, "arithmetic": 1, "story_write": 7, "greeting": 3}


@dataclass(frozen=True)
class Persona:
    name: str
    correct: float
    polite: float
    ending: float
    repeat: float
    excess: float


PERSONAS = {
    # Cares most that the answer is right.
    "strict": Persona("strict", correct=4.0, polite=1.0, ending=1.0, repeat=1.0, excess=0.5),
    # Cares more about manners and form; still prefers right answers.
    "stylist": Persona("stylist", correct=2.5, polite=2.5, ending=1.5, repeat=1.5, excess=0.75),
}


def correctness(prompt: dict, response: str) -> float:
    task, text = prompt["task"], response
    words = set(re.findall(r"[A-Za-z]+", text.lower()))
    if task == "story_qa":
        if prompt["expected"].lower() not in words:
            return 0.0
        # Hedging by listing every character's value is not an answer.
        return 0.0 if any(d.lower() in words for d in prompt["distractors"]) else 1.0
    if task == "arithmetic":
        stated = re.findall(r"\bis (\d+)", text) or re.findall(r"\d+", text)
        return 1.0 if stated and int(stated[-1]) == prompt["expected"] else 0.0
    if task in ("story_write", "greeting"):
        return sum(w.lower() in words for w in prompt["required"]) / len(prompt["required"])
    raise ValueError(f"prompt {prompt.get('id')}: unknown task {task!r}")


def rubric(prompt: dict, response: str) -> dict:
    """The rubric's parts for one response (persona-independent)."""
    text = response.strip()
    sentences = _sentences(text)
    ending = bool(text) and text[-1] in ".!?"
    if prompt["task"] == "story_write":
        ending = ending and text.endswith("The end.")
    norm = [s.lower().strip() for s in sentences]
    return {
        "correct": correctness(prompt, text) if text else 0.0,
        "polite": 0.0 if _RUDE.search(text) else 1.0,
        "ending": 1.0 if ending else 0.0,
        "repeats": len(norm) - len(dict.fromkeys(norm)),
        "excess": max(0, len(sentences) - MAX_SENTENCES[prompt["task"]] - _rude_sentences(sentences)),
        "empty": not text,
    }


def _rude_sentences(sentences: list[str]) -> int:
    # A rude sentence is charged under "polite", not a second time as excess length.
    return sum(bool(_RUDE.search(s)) for s in sentences)


class ScriptedAnnotator:
    def __init__(self, persona: str = "strict", noise: float = 0.0, seed: int = 0,
                 tie_margin: float = 1e-6, bad_below: float = 1.0):
        if persona not in PERSONAS:
            raise ValueError(f"unknown persona {persona!r}; choose one of {sorted(PERSONAS)}")
        self.persona, self.noise, self.seed = PERSONAS[persona], noise, seed
        self.tie_margin, self.bad_below = tie_margin, bad_below

    def score(self, prompt: dict, response: str) -> float:
        p, w = rubric(prompt, response), self.persona
        if p["empty"]:
            return -w.correct
        s = (w.correct * p["correct"] + w.polite * p["polite"] + w.ending * p["ending"]
             - w.repeat * min(p["repeats"], 3) - w.excess * min(p["excess"], 4))
        if self.noise:
            key = f"{self.seed}|{w.name}|{prompt.get('id')}|{response}".encode()
            s += random.Random(hashlib.sha1(key).digest()).gauss(0.0, self.noise)
        return s

    def rank(self, prompt: dict, responses: list[str]) -> list[int]:
        """Rank of each response, 1 = best; responses whose scores tie share the best rank they span."""
        scores = [self.score(prompt, r) for r in responses]
        return [1 + sum(t > s + self.tie_margin for t in scores) for s in scores]

    def compare(self, prompt: dict, a: str, b: str) -> str:
        """Pairwise verdict: "a", "b", "tie" or "both_bad"."""
        sa, sb = self.score(prompt, a), self.score(prompt, b)
        if sa < self.bad_below and sb < self.bad_below:
            return "both_bad"
        if abs(sa - sb) <= self.tie_margin:
            return "tie"
        return "a" if sa > sb else "b"

    def is_correct(self, prompt: dict, response: str) -> bool:
        return correctness(prompt, response) == 1.0


def first_per_task(rows: list[dict], per_task: int) -> list[dict]:
    """The first `per_task` prompt rows of each task (a fixed, balanced evaluation set)."""
    counts: dict[str, int] = {}
    picked = []
    for r in rows:
        if counts.get(r["task"], 0) < per_task:
            counts[r["task"]] = counts.get(r["task"], 0) + 1
            picked.append(r)
    return picked


def score_answers(prompts: list[dict], answers: list[str], judge: ScriptedAnnotator | None = None) -> dict:
    """Correct rate and mean rubric score, overall (mean over tasks) and per task."""
    judge = judge or ScriptedAnnotator()
    by_task: dict[str, list[tuple[bool, float]]] = {}
    for p, a in zip(prompts, answers, strict=True):
        by_task.setdefault(p["task"], []).append((judge.is_correct(p, a), judge.score(p, a)))
    correct = {t: round(sum(c for c, _ in v) / len(v), 3) for t, v in by_task.items()}
    score = {t: round(sum(s for _, s in v) / len(v), 3) for t, v in by_task.items()}
    return {"n": len(prompts), "correct": round(sum(correct.values()) / max(1, len(correct)), 3),
            "correct_by_task": correct, "mean_score": round(sum(score.values()) / max(1, len(score)), 3),
            "mean_score_by_task": score}


def compare_answers(prompts: list[dict], a: list[str], b: list[str], judge: ScriptedAnnotator | None = None,
                    n_boot: int = 2000, seed: int = 0) -> dict:
    """How often answer a beats answer b on the same prompt (ties count half), with a 95 % bootstrap CI
    over prompts, and each side's correct rate."""
    judge = judge or ScriptedAnnotator()
    outcome = []
    for p, x, y in zip(prompts, a, b, strict=True):
        sx, sy = judge.score(p, x), judge.score(p, y)
        outcome.append(1.0 if sx > sy + judge.tie_margin else 0.0 if sy > sx + judge.tie_margin else 0.5)
    n = len(outcome)
    rng = random.Random(seed)
    boots = sorted(sum(outcome[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    return {"n": n, "win_rate": round(sum(outcome) / n, 3),
            "ci95": [round(boots[int(0.025 * n_boot)], 3), round(boots[int(0.975 * n_boot) - 1], 3)],
            "wins": outcome.count(1.0), "ties": outcome.count(0.5), "losses": outcome.count(0.0),
            "correct_a": round(sum(judge.is_correct(p, x) for p, x in zip(prompts, a)) / n, 3),
            "correct_b": round(sum(judge.is_correct(p, y) for p, y in zip(prompts, b)) / n, 3)}


def distinct_rate(answers: list[str]) -> float:
    """Share of distinct answers (after whitespace/case normalisation): 1.0 = all different; a collapsed
    policy that gives one generic answer to everything scores near 1/n."""
    return round(len({" ".join(x.lower().split()) for x in answers}) / max(1, len(answers)), 3)
