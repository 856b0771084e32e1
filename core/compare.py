"""Did alignment help? An aligned policy against its reference (the SFT policy) on held-out prompts.

For each decoding (default: temperature 0.7, and greedy) both policies answer the same prompts
with the same seeds, several times per prompt when sampling (`answers_per_prompt`: one sampled answer
per prompt left a seed's win rate at the mercy of its draw, 71.8 to 79.5 % for one DPO model over six
sampling seeds); the scripted annotator compares the answers (ties count half; 95 % bootstrap
CI over prompts) and checks correctness; `distinct` is the share of different answers, which
exposes a policy collapsed onto one generic reply. `ceiling` is what a perfect policy would score:
the world's reference answers against the same SFT answers. Ties count half, so a policy can only
win where SFT was wrong or flawed; with a strong SFT the ceiling sits far below 100 %, and
`headroom_used` = (win rate - 50 %) / (ceiling - 50 %) says how much of the possible gain was made. KL(policy || reference) is estimated on the
policy's own samples at temperature 1: mean over prompts of sum_t [log p_policy - log p_reference].
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.annotator import compare_answers, distinct_rate, losses_to_reference
from core.config import UserError
from core import answer_cache
from core.generation import Completion, Decoding, chat_prompt_ids, completion_logprobs, generate, row_seeds_for
from core.judges import NO_LENGTH_CONTROL, describe_change
from core.model import for_inference


@dataclass
class EvalSettings:
    """The `eval:` section of every aligning stage's config."""
    per_task: int = 50                 # held-out prompts per task (4 tasks: 200 prompts)
    temperatures: list[float] = field(default_factory=lambda: [0.7, 0.0])   # 0 = greedy
    max_new_tokens: int = 64
    answers_per_prompt: int = 4        # sampled answers per prompt at temperature > 0 (greedy: one)

    def validate(self) -> None:
        if self.per_task < 1 or self.answers_per_prompt < 1:
            raise UserError(f"eval.per_task and eval.answers_per_prompt must be >= 1, got {self.per_task}, "
                            f"{self.answers_per_prompt}")


SAMPLE_SEED_STRIDE = 1000  # answer j to each prompt is sampled with seed + 1000 j: answer 0 is a one-answer run's


def sample_answers(model, tokenizer, convs: list[list[dict]], decoding: Decoding, seed: int = 0,
                   answers_per_prompt: int = 1) -> list[Completion]:
    """`answers_per_prompt` answers to each conversation when sampling, one at greedy; sample-major (answer j to
    conversation i at j * len(convs) + i), as core.annotator.compare_answers takes them. Answers this model
    already gave with these numerics come from the answer cache (core/answer_cache.py) when there is one."""
    seeds = [seed + SAMPLE_SEED_STRIDE * j for j in range(answers_per_prompt if decoding.temperature > 0 else 1)]
    ids = [chat_prompt_ids(tokenizer, c) for c in convs]
    entry = answer_cache.key(model, tokenizer, ids, decoding, seeds if decoding.temperature > 0 else [])
    answers = answer_cache.load(entry)
    if answers is None:
        answers = generate(model, tokenizer, ids * len(seeds), decoding,  # one call: batches of every seed's rows
                           row_seeds=[r for s in seeds for r in row_seeds_for(s, len(ids))])
        answer_cache.store(entry, answers)
    return answers


def kl_to_reference(policy, reference, tokenizer, prompts: list[dict], max_new_tokens: int, seed: int = 0,
                    cached: bool = True) -> dict:
    """cached=False: the answers are neither read from nor kept in the answer cache (a guard's check mid-training)."""
    d = Decoding(1.0, max_new_tokens=max_new_tokens)
    prompt_ids = [chat_prompt_ids(tokenizer, p["messages"]) for p in prompts]
    comps = (sample_answers(policy, tokenizer, [p["messages"] for p in prompts], d, seed) if cached
             else generate(policy, tokenizer, prompt_ids, d, seed))
    ref = completion_logprobs(reference, prompt_ids, [c.token_ids for c in comps], tokenizer.pad_token_id)
    per_seq = [sum(c.logprobs) - sum(r) for c, r in zip(comps, ref)]
    tokens = sum(len(c.token_ids) for c in comps)
    return {"kl_per_sequence": round(sum(per_seq) / len(per_seq), 4),
            "kl_per_token": round(sum(per_seq) / max(1, tokens), 5),
            "mean_tokens": round(tokens / len(comps), 1)}


def policy_vs_reference(policy, reference, tokenizer, prompts: list[dict], settings: EvalSettings, seed: int = 0) -> dict:
    """The aligning stages' own comparison with SFT. Both models are switched to the inference numerics
    (core.model.for_inference), so they answer as the report card's do, from the same cache entries."""
    policy, reference = for_inference(policy), for_inference(reference)
    report, convs, n = {}, [p["messages"] for p in prompts], len(prompts)
    for t in settings.temperatures:
        d = Decoding(t, max_new_tokens=settings.max_new_tokens)
        mine_c = sample_answers(policy, tokenizer, convs, d, seed, settings.answers_per_prompt)
        ref_c = sample_answers(reference, tokenizer, convs, d, seed, settings.answers_per_prompt)
        k = len(mine_c) // n  # answers per prompt: one at greedy
        mine, ref = [c.text for c in mine_c], [c.text for c in ref_c]
        # Length-controlled too: the world's rubric is length-neutral, but a judge from outside it (a reward
        # model, an LLM) need not be; a win that is only length shows up as the gap between the two rates.
        r = compare_answers(prompts, mine, ref, seed=seed, samples=k,
                            lengths=([len(c.token_ids) for c in mine_c], [len(c.token_ids) for c in ref_c]))
        if all(p.get("reference") for p in prompts):
            best = [p["reference"] for p in prompts] * k
            ceiling = compare_answers(prompts, best, ref, seed=seed, samples=k)["win_rate"]
            used = (r["win_rate"] - 0.5) / (ceiling - 0.5) if ceiling > 0.5 else None
            r = {**r, "ceiling": ceiling, "headroom_used": None if used is None else round(used, 3),
                 "policy_losses_to_best": losses_to_reference(prompts * k, mine),
                 "reference_losses_to_best": losses_to_reference(prompts * k, ref)}
        # distinct: over one answer per prompt, so that repeated samples of a short answer do not count as collapse
        report[str(d)] = {**r, "distinct_policy": distinct_rate(mine[:n]), "distinct_reference": distinct_rate(ref[:n]),
                          "examples": [{"prompt": p["messages"][-1]["content"], "policy": a, "reference": b}
                                       for p, a, b in list(zip(prompts, mine, ref))[:3]]}
    report["kl"] = kl_to_reference(policy, reference, tokenizer, prompts, settings.max_new_tokens, seed)
    return report


def _lc(x: float | None) -> str:
    return NO_LENGTH_CONTROL if x is None else f"{x:.1%}"


def print_report(label: str, report: dict) -> None:
    """One line per decoding and one for KL, as every aligning stage prints at its end."""
    for name, r in report.items():
        if name != "kl":
            ceiling = (f" of at most {r['ceiling']:.1%} (reference answers vs SFT; headroom used "
                       f"{r['headroom_used']:.0%})" if r.get("headroom_used") is not None else "")
            print(f"{label} vs SFT, {name}: win rate {r['win_rate']:.1%} (95 % CI {r['ci95'][0]:.1%}-"
                  f"{r['ci95'][1]:.1%}, length-controlled {_lc(r['length_controlled_win_rate'])}){ceiling}, "
                  f"correct {r['correct_a']:.1%} vs {r['correct_b']:.1%}{describe_change(r)}, "
                  f"distinct {r['distinct_policy']:.2f} vs {r['distinct_reference']:.2f}")
    print(f"KL({label} || SFT) {report['kl']['kl_per_sequence']:.3f} per answer")


def best_of_n(policy, tokenizer, reward_model, reward_tokenizer, prompts: list[dict], n: int, temperature: float,
              max_new_tokens: int, seed: int = 0) -> dict:
    """A baseline no training can skip: sample n answers per prompt, let the reward model pick one, and
    compare that pick with the first sample (what the policy alone would have said)."""
    from core.reward import reward_scores

    convs, m = [p["messages"] for p in prompts], len(prompts)
    d = Decoding(temperature, max_new_tokens=max_new_tokens)
    # the sampled answers every comparison with this policy draws (answer k with seed + 1000 k): cached, they are shared
    answers = [c.text for c in sample_answers(policy, tokenizer, convs, d, seed, n)]
    samples = [answers[k * m:(k + 1) * m] for k in range(n)]
    scores = [reward_scores(reward_model, reward_tokenizer,
                            [c + [{"role": "assistant", "content": s}] for c, s in zip(convs, col)]) for col in samples]
    picked = [samples[max(range(n), key=lambda k: scores[k][i])][i] for i in range(len(prompts))]
    return {"samples_per_prompt": n, "decoding": str(d), **compare_answers(prompts, picked, samples[0], seed=seed)}
