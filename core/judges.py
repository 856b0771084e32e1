"""Judges: who decides which of two answers to the same prompt is better, for the report card.

  scripted      the world's annotator (core.annotator): only for world prompts, whose rows carry the
                task fields it checks (a clear error otherwise).
  reward_model  any stock sequence-classification checkpoint with one score (the project's own reward
                model or a public one): the higher score wins; equal scores tie.
  llm           a local causal LM asked, with JUDGE_PROMPT, which answer is better, in both orders so
                that a preference for the first (or second) position cancels: the two verdicts must
                agree, otherwise the pair is a tie. A reply that names neither answer is a parse failure,
                counted and scored as a tie, never guessed.

Every judge gives outcomes for answer a (1 win, 0.5 tie, 0 loss); `pairwise` turns them into the win
rate with a 95 % bootstrap CI and a length-controlled win rate (AlpacaEval 2 style: the outcome
regressed on the length difference, read at a difference of zero), so a judge that simply likes
longer answers shows up; `agreement` scores a judge on labelled pairs so a reader can see how far to
trust it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from core.config import UserError

KINDS = ("scripted", "reward_model", "llm")

JUDGE_PROMPT = """Which response answers the request better: correct, on topic, complete and polite?

[Request]
{request}

[Response A]
{a}

[Response B]
{b}

Reply with one letter, A or B."""

_VERDICT = re.compile(r"^\W*(?:response\s*)?([AB])\b", re.IGNORECASE)


@dataclass
class JudgeSettings:
    kind: str = "scripted"             # scripted | reward_model | llm
    path: str = ""                     # reward_model / llm: checkpoint directory, or hf:<owner/name> (GPU configs)
    max_new_tokens: int = 8            # llm: length of its verdict
    batch_size: int = 16

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"judge.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")


def is_world_prompt(prompt: dict) -> bool:
    from core.annotator import MAX_SENTENCES
    return prompt.get("task") in MAX_SENTENCES


def require_world_prompt(prompt: dict, who: str, fix: str) -> None:
    """The scripted annotator checks the world's task fields: any other prompt is a clear error."""
    if not is_world_prompt(prompt):
        raise UserError(f"{who}: prompt {prompt.get('id')!r} is not a world prompt (no world task), so the scripted "
                        f"annotator cannot judge it; {fix}")


class ScriptedJudge:
    name = "scripted annotator"

    def __init__(self, prompts: list[dict]):
        from core.annotator import ScriptedAnnotator
        for p in prompts:
            require_world_prompt(p, "judge.kind scripted", "choose judge.kind reward_model or llm")
        self.annotator, self.parse_failures = ScriptedAnnotator(), 0

    def compare(self, prompts: list[dict], a: list[str], b: list[str]) -> list[float]:
        return [self.annotator.verdict(p, x, y)[0] for p, x, y in zip(prompts, a, b, strict=True)]


def _checkpoint(path: str) -> tuple[str, str]:
    """(name for from_pretrained, its architecture): a local checkpoint directory or `hf:owner/name` (GPU configs)."""
    from transformers import AutoConfig
    name = path[3:] if path.startswith("hf:") else path
    if name == path and not (Path(path) / "config.json").is_file():
        raise UserError(f"judge.path {path}: not a checkpoint directory (no config.json); or hf:<owner/name>")
    return name, (AutoConfig.from_pretrained(name).architectures or ["?"])[0]


def _chat_tokenizer(name: str, path: str):
    """The judge's own tokenizer: it only needs a chat template (and a pad token, to batch)."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(name)
    if not tok.chat_template:
        raise UserError(f"judge.path {path}: the tokenizer has no chat template to render the conversation with")
    if tok.pad_token_id is None:
        raise UserError(f"judge.path {path}: the tokenizer has no pad token (needed to score answers in batches)")
    return tok


class RewardModelJudge:
    def __init__(self, path: str, batch_size: int = 16):
        import torch
        from transformers import AutoModelForSequenceClassification

        from core.model import to_inference_device
        name, arch = _checkpoint(path)
        if not arch.endswith("ForSequenceClassification"):
            raise UserError(f"judge.path {path}: a reward_model judge is a sequence-classification checkpoint, this "
                            f"one is {arch}; use judge.kind llm for a causal LM")
        self.model = to_inference_device(AutoModelForSequenceClassification.from_pretrained(name, dtype=torch.float32).eval())
        if self.model.config.num_labels != 1:
            raise UserError(f"judge.path {path}: a reward model has one score (num_labels=1), this one has "
                            f"{self.model.config.num_labels}")
        self.tok, self.batch_size, self.parse_failures = _chat_tokenizer(name, path), batch_size, 0
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tok.pad_token_id
        self.name = f"reward model {path}"

    def compare(self, prompts: list[dict], a: list[str], b: list[str]) -> list[float]:
        from core.reward import reward_scores
        convs = [p["messages"] + [{"role": "assistant", "content": x}] for p, pair in zip(prompts, zip(a, b))
                 for x in pair]
        s = reward_scores(self.model, self.tok, convs, self.batch_size)
        return [1.0 if sa > sb else 0.0 if sb > sa else 0.5 for sa, sb in zip(s[0::2], s[1::2])]


def parse_verdict(reply: str) -> str | None:
    """"A" or "B" when the reply opens by naming one ("B", "Response A.", "**a**"), else None."""
    m = _VERDICT.match(reply.strip())
    return m.group(1).upper() if m else None


class LLMJudge:
    def __init__(self, path: str, max_new_tokens: int = 8, batch_size: int = 16):
        import torch
        from transformers import AutoModelForCausalLM

        from core.model import to_inference_device
        name, arch = _checkpoint(path)
        if not arch.endswith("ForCausalLM"):
            raise UserError(f"judge.path {path}: an llm judge is a causal LM, this one is {arch}; use judge.kind "
                            "reward_model for a sequence-classification checkpoint")
        self.tok = _chat_tokenizer(name, path)
        self.model = to_inference_device(AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32).eval())
        self.max_new_tokens, self.batch_size, self.parse_failures, self.asked = max_new_tokens, batch_size, 0, 0
        self.name = f"LLM judge {path}"

    def _ask(self, prompts: list[dict], first: list[str], second: list[str]) -> list[str | None]:
        from core.generation import Decoding, chat
        request = ["\n\n".join(m["content"] if m["role"] == "user" else f"[{m['role']}] {m['content']}"
                               for m in p["messages"]) for p in prompts]
        convs = [[{"role": "user", "content": JUDGE_PROMPT.format(request=r, a=x, b=y)}]
                 for r, x, y in zip(request, first, second)]
        replies = chat(self.model, self.tok, convs, Decoding(0.0, max_new_tokens=self.max_new_tokens),
                       batch_size=self.batch_size)
        verdicts = [parse_verdict(c.text) for c in replies]
        self.asked += len(verdicts)
        self.parse_failures += verdicts.count(None)
        return verdicts

    def compare(self, prompts: list[dict], a: list[str], b: list[str]) -> list[float]:
        ab, ba = self._ask(prompts, a, b), self._ask(prompts, b, a)
        return [1.0 if (x, y) == ("A", "B") else 0.0 if (x, y) == ("B", "A") else 0.5 for x, y in zip(ab, ba)]


def make_judge(cfg: JudgeSettings, prompts: list[dict]):
    """The configured judge, checked against the prompts it will see, before any work."""
    cfg.validate()
    if cfg.kind != "scripted" and not cfg.path:
        raise UserError(f"judge.path: a {cfg.kind} judge needs a checkpoint (judge.path=<dir> or hf:<owner/name>; "
                        "make eval JUDGE=<dir>)")
    if cfg.kind == "scripted":
        return ScriptedJudge(prompts)
    if cfg.kind == "reward_model":
        return RewardModelJudge(cfg.path, cfg.batch_size)
    return LLMJudge(cfg.path, cfg.max_new_tokens, cfg.batch_size)


def rank(judge, prompt: dict, texts: list[str]) -> list[int]:
    """Ranks (1 = best) of one prompt's responses from every pairwise verdict, asked in one batch: a
    response's rank is 1 + the number of responses with more wins (a tie counts half to each)."""
    pairs = [(i, j) for i in range(len(texts)) for j in range(i + 1, len(texts))]
    out = judge.compare([prompt] * len(pairs), [texts[i] for i, _ in pairs], [texts[j] for _, j in pairs])
    wins = [0.0] * len(texts)
    for (i, j), o in zip(pairs, out):
        wins[i] += o
        wins[j] += 1.0 - o
    return [1 + sum(w > v for w in wins) for v in wins]


def choice(outcome: float) -> str:
    """A pairwise outcome for the first answer as the store's verdict: "a", "b" or "tie"."""
    return "a" if outcome == 1.0 else "b" if outcome == 0.0 else "tie"


NO_LENGTH_CONTROL = "n/a (the lengths barely overlap)"  # how a None length-controlled win rate reads


def length_controlled(outcomes: list[float], len_a: list[int], len_b: list[int], support: float = 0.1) -> float | None:
    """The win rate with the length difference regressed out: a logistic fit of the outcome (ties as 0.5) on
    tanh(length difference / its standard deviation), read at a difference of zero.

    None where that reading would be an extrapolation: fewer than `support` of the prompts have a at least
    as long as b, or at most as long (a policy that got shorter everywhere says nothing about equal lengths).
    """
    n = len(outcomes)
    diff = [x - y for x, y in zip(len_a, len_b)]
    if n and min(sum(d >= 0 for d in diff), sum(d <= 0 for d in diff)) < support * n:
        return None
    sd = math.sqrt(sum(d * d for d in diff) / n) if n else 0.0
    if sd == 0:
        return round(sum(outcomes) / n, 3)
    x = [math.tanh(d / sd) for d in diff]
    w0 = w1 = 0.0
    for _ in range(50):  # Newton steps on the two parameters, a small ridge keeps separable data finite
        p = [1 / (1 + math.exp(-(w0 + w1 * xi))) for xi in x]
        g0 = sum(y - q for y, q in zip(outcomes, p)) - 1e-3 * w0
        g1 = sum((y - q) * xi for y, q, xi in zip(outcomes, p, x)) - 1e-3 * w1
        h00 = sum(q * (1 - q) for q in p) + 1e-3
        h01 = sum(q * (1 - q) * xi for q, xi in zip(p, x))
        h11 = sum(q * (1 - q) * xi * xi for q, xi in zip(p, x)) + 1e-3
        det = h00 * h11 - h01 * h01
        s0, s1 = (h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det
        w0, w1 = w0 + s0, w1 + s1
        if abs(s0) + abs(s1) < 1e-9:
            break
    return round(1 / (1 + math.exp(-w0)), 3)


def win_rate(outcomes: list[float], n_boot: int = 2000, seed: int = 0, samples: int = 1) -> dict:
    """Mean outcome (ties half) with a 95 % bootstrap CI over prompts, and the counts. With `samples` answers per
    prompt (sample-major: prompt i's j-th answer at j * prompts + i) the CI resamples prompts, each with all its
    answers; the counts are over every answer."""
    import torch  # here, not at the top: the scripted annotators' stages never load it
    n = _prompts(outcomes, samples)
    per_prompt = torch.tensor(outcomes, dtype=torch.float64).view(samples, n).mean(0)
    gen = torch.Generator().manual_seed(seed)
    boots = per_prompt[torch.randint(n, (n_boot, n), generator=gen)].mean(1).sort().values.tolist()  # one tensor op
    return {"n": n, "answers_per_prompt": samples, "win_rate": round(sum(outcomes) / len(outcomes), 3),
            "ci95": [round(boots[int(0.025 * n_boot)], 3), round(boots[int(0.975 * n_boot) - 1], 3)],
            "wins": outcomes.count(1.0), "ties": outcomes.count(0.5), "losses": outcomes.count(0.0)}


def _prompts(answers: list, samples: int) -> int:
    if samples < 1 or len(answers) % samples:
        raise ValueError(f"{len(answers)} outcomes are not {samples} per prompt")
    return len(answers) // samples


def pairwise(outcomes: list[float], len_a: list[int], len_b: list[int], n_boot: int = 2000, seed: int = 0,
             samples: int = 1) -> dict:
    """`win_rate` and its length-controlled twin."""
    return {**win_rate(outcomes, n_boot, seed, samples),
            "length_controlled_win_rate": length_controlled(outcomes, len_a, len_b)}


def paired_change(a_right: list[bool], b_right: list[bool], samples: int = 1) -> dict:
    """Did a's correct rate really move from b's on the same prompts? The prompts a gets right more often than
    b, and the other way round, and the two-sided exact sign test on those prompts (with one answer per prompt:
    McNemar's test): where one task sits near chance (story lookups), both sides flip answers at random and a
    1-2 point difference is often just that. With `samples` answers per prompt (sample-major) a prompt counts
    by its mean, so the test stays one vote per prompt."""
    n = _prompts(a_right, samples)
    if len(b_right) != len(a_right):
        raise ValueError(f"{len(a_right)} answers against {len(b_right)}")
    diff = [sum(a_right[j * n + i] - b_right[j * n + i] for j in range(samples)) for i in range(n)]
    only_a, only_b = sum(d > 0 for d in diff), sum(d < 0 for d in diff)
    n, k = only_a + only_b, min(only_a, only_b)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
    return {"correct_only_a": only_a, "correct_only_b": only_b, "correct_change_p": round(p, 3)}


def describe_change(r: dict) -> str:
    """`paired_change`'s figures as a parenthesis after a pair of correct rates ("" for metrics written before it)."""
    if "correct_change_p" not in r:
        return ""
    return (f" (right only here / only there {r['correct_only_a']} / {r['correct_only_b']}, "
            f"p {r['correct_change_p']:.2f})")


def agreement(judge, prompts: dict[str, dict], rows: list[dict]) -> dict | None:
    """How often the judge prefers the labelled chosen answer on held-out preference rows (ties half);
    `prompts` maps prompt ids to prompt rows (a row's own prompt turns are used when its id is unknown)."""
    if not rows:
        return None
    ps = [prompts.get(r.get("prompt_id"), {"messages": r["prompt"]}) for r in rows]
    out = judge.compare(ps, [r["chosen"][-1]["content"] for r in rows], [r["rejected"][-1]["content"] for r in rows])
    return {"pairs": len(rows), "accuracy": round(sum(out) / len(out), 3)}
