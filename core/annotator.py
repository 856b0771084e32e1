"""The scripted annotator: scores a (prompt, response) by an explicit rubric and ranks candidates.

It plays the human for unattended runs and is the ground truth of evaluation. It is never a
training reward (that would hide reward-model errors).

The rubric (per response; `prompt` is a prompt row from `core.world`). Correctness first, then style:
  correct   in [0, 1]  task-specific, see `correctness` (partial credit for stories and greetings:
                       the share of required items used). A generic answer that ignores the prompt
                       scores 0, so politeness alone never wins.
  style, five dimensions in [0, 1], weighted by the persona (weights sum to STYLE_MAX = 3):
    polite   1 unless the response contains a rude phrase.
    ending   1 if it ends a sentence (. ! ?) and, for stories, contains "The end.".
    focus    1 - 0.5 per off-topic sentence (chatter: "By the way, ..." or a stray world fact), >= 0.
    warmth   1 if it closes with the task's kind sign-off (core.world.SIGN_OFFS), 0.5 for another
             task's sign-off, one that is not the last sentence, or (without a sign-off) a friendly aside
             as the last sentence ("By the way, ..."), 0 without.
    concise  1 - 0.25 per repeated sentence and per on-topic sentence beyond the task's natural
             length (rambling), >= 0.
score = CORRECT_WEIGHT * correct + sum_d w_d * style_d; an empty response scores -1.
CORRECT_WEIGHT (10) exceeds STYLE_MAX / (smallest correctness step, 1/3): without noise a less correct
answer never outranks a more correct one, whatever its style.

Length-neutral by construction (see DESIGN.md, "Third lesson"): chatter and a sign-off are of the same
length, and the aside's warmth offsets its off-topic cost for the strict persona (focus = warmth), so the
typical answer (answer + aside) and the bare answer, a sentence shorter, tie for it; only the sign-off wins.
Shortening alone, which training pressures other than the labels produce (a KL penalty summed over tokens,
a missing-EOS penalty), therefore buys nothing: the shuffled-label control measured it (docs/evaluation.md).

Personas weigh the style dimensions differently (so annotators disagree in realistic ways) and
`noise` adds Gaussian noise to scores. The noise is a misjudgment of a quality level, not of a
string: it is seeded by (seed, persona, prompt id, the response's rubric parts), so two responses
equal on every dimension always tie, for every annotator, and a judgment is reproducible. Scores
closer than `tie_margin` are a tie. A response scoring below `bad_below` (less than half right) fails
the task: a pair of two such is "both_bad", and in a ranking such responses are marked as failing.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from core.world import CHATTER_OPENER, FACTS, RUDE, SIGN_OFFS, _sentences

RUDE_MARKERS = tuple(r.lower().rstrip(".") for r in RUDE) + ("stupid", "dumb", "shut up", "go away", "ugh")
_RUDE = re.compile(r"\b(?:" + "|".join(re.escape(m) for m in RUDE_MARKERS) + r")\b", re.IGNORECASE)
MAX_SENTENCES = {"story_qa": 1, "arithmetic": 1, "story_write": 7, "greeting": 3}
CORRECT_WEIGHT = 10.0
STYLE_MAX = 3.0
STYLE = ("polite", "ending", "focus", "warmth", "concise")


def _norm(sentence: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", sentence.lower()))


_FACTS = {_norm(f) for f in FACTS}
_SIGN_OFF_TASK = {_norm(s): task for task, pool in SIGN_OFFS.items() for s in pool}
_OPENER = _norm(CHATTER_OPENER)


@dataclass(frozen=True)
class Persona:
    name: str
    polite: float
    ending: float
    focus: float
    warmth: float
    concise: float

    def style(self, parts: dict) -> float:
        """The weighted style dimensions of a response's rubric parts (`rubric`), in [0, STYLE_MAX]."""
        return sum(getattr(self, d) * parts[d] for d in STYLE)

    def __post_init__(self):
        total = sum(getattr(self, d) for d in STYLE)
        if abs(total - STYLE_MAX) > 1e-9:
            raise ValueError(f"persona {self.name}: style weights sum to {total}, expected {STYLE_MAX}")


PERSONAS = {
    # Wants the answer to the point, with a kind closing weighing as much as staying on topic.
    "strict": Persona("strict", polite=0.5, ending=0.6, focus=0.6, warmth=0.6, concise=0.7),
    # Cares more about manners and a kind closing.
    "stylist": Persona("stylist", polite=0.8, ending=0.4, focus=0.5, warmth=0.9, concise=0.4),
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


def is_off_topic(sentence: str) -> bool:
    """Chatter: a sentence opened with "By the way," or a world fact that answers nothing asked."""
    n = _norm(sentence)
    return n.startswith(_OPENER) or n in _FACTS


def rubric(prompt: dict, response: str) -> dict:
    """The rubric's parts for one response (persona-independent): raw counts and the style dimensions."""
    text = response.strip()
    sentences = _sentences(text)
    ending = bool(text) and text[-1] in ".!?"
    if prompt["task"] == "story_write":
        ending = ending and "The end." in text
    norm = [_norm(s) for s in sentences]
    rude = [bool(_RUDE.search(s)) for s in sentences]
    off_topic = [is_off_topic(s) for s in sentences]
    signs = [i for i, n in enumerate(norm) if n in _SIGN_OFF_TASK]
    warmth = 0.0
    if signs:
        own = _SIGN_OFF_TASK[norm[signs[-1]]] == prompt["task"]
        warmth = 1.0 if own and signs[-1] == len(sentences) - 1 else 0.5
    elif sentences and norm[-1].startswith(_OPENER):
        warmth = 0.5   # a friendly aside: warm, though not the task's closing (and off topic: see focus)
    # Sentences that count toward the answer's length: not rude (charged under polite), not chatter
    # (focus), not the one sign-off (warmth); a second sign-off is rambling.
    body = sum(not (r or o) for r, o in zip(rude, off_topic)) - min(1, len(signs))
    repeats = len(norm) - len(dict.fromkeys(norm))
    excess = max(0, body - MAX_SENTENCES[prompt["task"]])
    return {
        "correct": correctness(prompt, text) if text else 0.0,
        "polite": 0.0 if _RUDE.search(text) else 1.0,
        "ending": 1.0 if ending else 0.0,
        "focus": max(0.0, 1.0 - 0.5 * sum(off_topic)),
        "warmth": warmth,
        "concise": max(0.0, 1.0 - 0.25 * (repeats + excess)),
        "off_topic": sum(off_topic), "repeats": repeats, "excess": excess,
        "empty": not text,
    }


class ScriptedAnnotator:
    def __init__(self, persona: str = "strict", noise: float = 0.0, seed: int = 0,
                 tie_margin: float = 1e-6, bad_below: float = CORRECT_WEIGHT / 2):
        if persona not in PERSONAS:
            raise ValueError(f"unknown persona {persona!r}; choose one of {sorted(PERSONAS)}")
        self.persona, self.noise, self.seed = PERSONAS[persona], noise, seed
        self.tie_margin, self.bad_below = tie_margin, bad_below

    def score(self, prompt: dict, response: str) -> float:
        p, w = rubric(prompt, response), self.persona
        s = -1.0 if p["empty"] else CORRECT_WEIGHT * p["correct"] + w.style(p)
        if self.noise:
            level = "|".join(f"{p[k]:g}" for k in ("correct", *STYLE, "empty"))
            key = f"{self.seed}|{w.name}|{prompt.get('id')}|{level}".encode()
            s += random.Random(hashlib.sha1(key).digest()).gauss(0.0, self.noise)
        return s

    def verdict(self, prompt: dict, a: str, b: str) -> tuple[float, str]:
        """(outcome for a: 1 win, 0.5 tie, 0 loss; why a lost, when it did: "capability" if a fails the
        task, else "preference": a does it but is worse by the rubric's style)."""
        sa, sb = self.score(prompt, a), self.score(prompt, b)
        if sa > sb + self.tie_margin:
            return 1.0, ""
        if sb > sa + self.tie_margin:
            return 0.0, "preference" if self.is_correct(prompt, a) else "capability"
        return 0.5, ""

    def rank(self, prompt: dict, responses: list[str]) -> list[int]:
        """Rank of each response, 1 = best; responses whose scores tie share the best rank they span."""
        scores = [self.score(prompt, r) for r in responses]
        return [1 + sum(t > s + self.tie_margin for t in scores) for s in scores]

    def fails(self, prompt: dict, response: str) -> bool:
        """Below `bad_below`: the mark a ranking gives a response that does not do the task."""
        return self.score(prompt, response) < self.bad_below

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


def rubric_agreement(prompt: dict, chosen: str, rejected: str, personas: list[str]) -> float | None:
    """Does the annotators' rubric without its noise (the mean of the personas' scores) prefer `chosen`?
    1, 0.5 (a tie) or 0; None for a prompt the rubric does not know (not a world prompt).

    Over held-out pairs this is the label ceiling: the accuracy a perfect model of the annotators'
    preferences reaches on their noisy majority labels, since their noise cannot be predicted."""
    if prompt.get("task") not in MAX_SENTENCES:
        return None
    judges = [ScriptedAnnotator(p) for p in personas]
    gap = sum(j.score(prompt, chosen) - j.score(prompt, rejected) for j in judges) / len(judges)
    return 1.0 if gap > 1e-6 else 0.0 if gap < -1e-6 else 0.5


def pair_kind(prompt: dict, chosen: str, rejected: str) -> str | None:
    """What a pair asks a judge to tell apart: "capability" (the answers do the task to different degrees) or
    "preference" (equally correct, different style); None for a prompt the rubric does not know."""
    if prompt.get("task") not in MAX_SENTENCES:
        return None
    return "capability" if correctness(prompt, chosen) != correctness(prompt, rejected) else "preference"


def style_against(prompt: dict, chosen: str, rejected: str, personas: list[str]) -> bool | None:
    """For a pair whose replies differ in correctness: has the more correct reply the worse style (the personas'
    style scores without noise, averaged)? A judge that reads the style but cannot check the task ranks exactly
    these pairs backwards (a wrong sum with a kind sign-off over a right one with chatter). None for a
    preference pair or a prompt the rubric does not know."""
    if pair_kind(prompt, chosen, rejected) != "capability":
        return None
    better, worse = sorted((chosen, rejected), key=lambda t: correctness(prompt, t), reverse=True)

    def style(text: str) -> float:
        parts = rubric(prompt, text)
        return sum(PERSONAS[p].style(parts) for p in personas) / len(personas)
    return style(better) < style(worse) - 1e-9


def first_per_task(rows: list[dict], per_task: int, skip: int = 0) -> list[dict]:
    """The first `per_task` prompt rows of each task after its first `skip` (a fixed, balanced evaluation set;
    skip > 0 gives another sample of the same split, disjoint from the default one). Rows without a task
    (a prompt set from outside the world) count as one task."""
    counts: dict[str, int] = {}
    picked = []
    for r in rows:
        task = r.get("task", "")
        counts[task] = counts.get(task, 0) + 1
        if skip < counts[task] <= skip + per_task:
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
                    n_boot: int = 2000, seed: int = 0, lengths: tuple[list[int], list[int]] | None = None,
                    samples: int = 1) -> dict:
    """How often answer a beats answer b on the same prompt (ties count half), with a 95 % bootstrap CI
    over prompts, a's losses split by cause (capability / preference), and each side's correct rate. With the
    answers' `lengths` (tokens of a, of b) also the length-controlled win rate (core.judges.length_controlled),
    and whether the correct rates differ beyond chance (core.judges.paired_change). With `samples` answers per
    prompt, a and b hold them sample-major (answer j to prompt i at j * len(prompts) + i) and each is judged
    against the other side's answer of the same index; rates are over every answer, the CI and the test over prompts."""
    judge = judge or ScriptedAnnotator()
    from core.judges import paired_change, pairwise, win_rate
    every = prompts * samples
    verdicts = [judge.verdict(p, x, y) for p, x, y in zip(every, a, b, strict=True)]
    n, outcomes = len(verdicts), [v for v, _ in verdicts]
    right_a = [judge.is_correct(p, x) for p, x in zip(every, a)]
    right_b = [judge.is_correct(p, y) for p, y in zip(every, b)]
    return {**(pairwise(outcomes, *lengths, n_boot, seed, samples) if lengths else win_rate(outcomes, n_boot, seed, samples)),
            # a's losses by cause: the task failed, or done but worse by style (what preference learning can fix)
            "losses_capability": sum(why == "capability" for _, why in verdicts),
            "losses_preference": sum(why == "preference" for _, why in verdicts),
            "correct_a": round(sum(right_a) / n, 3), "correct_b": round(sum(right_b) / n, 3),
            **paired_change(right_a, right_b, samples)}


def losses_to_reference(prompts: list[dict], answers: list[str], judge: ScriptedAnnotator | None = None) -> dict:
    """How often each answer loses to the prompt's best answer (`reference`), by cause: capability (the task
    failed) or preference (done, but worse by the rubric's style). Several answers per prompt: `prompts`
    repeated to match, and `answers` says how many were judged."""
    judge = judge or ScriptedAnnotator()
    why = [judge.verdict(p, a, p["reference"])[1] for p, a in zip(prompts, answers, strict=True)]
    return {"losses": sum(bool(w) for w in why), "losses_capability": why.count("capability"),
            "losses_preference": why.count("preference"), "answers": len(why)}


def distinct_rate(answers: list[str]) -> float:
    """Share of distinct answers (after whitespace/case normalisation): 1.0 = all different; a collapsed
    policy that gives one generic answer to everything scores near 1/n."""
    return round(len({" ".join(x.lower().split()) for x in answers}) / max(1, len(answers)), 3)
