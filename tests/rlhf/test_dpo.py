"""The DPO stage on a micro model, and the pure pieces of the alignment evaluation."""

import json

import pytest
import torch

from core.annotator import compare_answers, distinct_rate
from core.config import UserError, load_config
from rlhf import dpo


def cfg(*over):
    return load_config(dpo.DPOStageConfig, None, ["train.max_steps=3", "train.batch_size=4", "train.lr=0.01",
                                                  "train.max_length=128", "train.save_every=2", "eval.per_task=2",
                                                  "eval.max_new_tokens=6", *over])


@pytest.mark.parametrize("over", [[], ["loss_type=robust", "label_smoothing=0.1", "divergence=forward_kl",
                                       "lora.enabled=true", "lora.r=4"]],
                         ids=["sigmoid-full", "robust-forward_kl-lora"])
def test_dpo_stage_moves_the_policy_and_reports_the_effect(tmp_path, base_model_dir, world_dir, pairs, over):
    from transformers import AutoModelForCausalLM
    out = tmp_path / "dpo"
    m = dpo.main(cfg(*over), str(base_model_dir), str(pairs[0]), str(world_dir / "prompts_heldout.jsonl"), str(out),
                 test=str(pairs[1]))
    assert (out / "DONE").exists() and m["steps"] == 3 and m["pairs"] == 40
    assert m["divergence"] == ("forward_kl" if "divergence=forward_kl" in over else "reverse_kl")
    implicit = m["implicit_reward_test"]  # the trained policy's own reward on the reward model's held-out pairs
    assert implicit["pairs"] == 8 and 0 <= implicit["accuracy"] <= 1 and implicit["mean_margin"] != 0
    before = AutoModelForCausalLM.from_pretrained(base_model_dir)
    after = AutoModelForCausalLM.from_pretrained(out / "model")  # stock load; LoRA was merged
    assert not torch.equal(before.model.layers[0].self_attn.q_proj.weight, after.model.layers[0].self_attn.q_proj.weight)
    assert set(m["vs_sft"]) == {"temperature=0.7, max_new_tokens=6", "greedy, max_new_tokens=6", "kl"}
    greedy = m["vs_sft"]["greedy, max_new_tokens=6"]
    assert greedy["n"] == 8 and 0 <= greedy["win_rate"] <= 1 and greedy["ci95"][0] <= greedy["win_rate"] <= greedy["ci95"][1]
    assert 0.5 <= greedy["ceiling"] <= 1
    assert m["vs_sft"]["kl"]["mean_tokens"] > 0
    guards = m["guards"]  # the KL guard checked at the last step (every 50 by default) and did not fire
    assert guards["guard"] is None and [c["step"] for c in guards["checks"]] == [3] and guards["kl_budget"] == 12


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_dpo_that_ends_past_its_kl_budget_keeps_the_weights_of_its_last_check_within_it(tmp_path, base_model_dir,
                                                                                       world_dir, pairs, lora):
    from safetensors.torch import load_file
    out = tmp_path / "dpo"
    # a budget this small: every check after the policy moved (at lr 0.01, from step 1 on) is past it, so the run
    # trains to its end and then hands on the weights it started from
    m = dpo.main(cfg("guards.kl_budget=0.001", "guards.every=2", "guards.prompts=8", "guards.max_new_tokens=8",
                     "train.max_steps=6", *(["lora.enabled=true", "lora.r=4"] if lora else [])),
                 str(base_model_dir), str(pairs[0]), str(world_dir / "prompts_heldout.jsonl"), str(out))
    fired, checks = m["guards"]["guard"], m["guards"]["checks"]
    assert m["steps"] == 6 and [c["step"] for c in checks] == [2, 4, 6] and all(c["kl"] > 0.001 for c in checks)
    assert fired == {"guard": "kl_budget", "step": 6, "kl": checks[-1]["kl"], "budget": 0.001, "rolled_back_to_step": 0}
    before, after = load_file(base_model_dir / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)  # the SFT weights, bit for bit
    assert (out / "DONE").exists() and m["vs_sft"]["kl"]["kl_per_sequence"] == pytest.approx(0, abs=1e-4)


def test_a_check_past_the_kl_budget_mid_way_does_not_stop_a_run_that_ends_within_it(tmp_path, base_model_dir,
                                                                                   world_dir, pairs):
    from transformers import TrainerControl, TrainerState

    from core.model import load_causal_lm
    from core.tokenizer import load_tokenizer
    from core.training import KLGuardSettings, kl_guard
    policy, reference = load_causal_lm(base_model_dir), load_causal_lm(base_model_dir)
    guard = kl_guard(KLGuardSettings(kl_budget=1.0, every=1, prompts=4, max_new_tokens=6), reference,
                     load_tokenizer(base_model_dir), [[{"role": "user", "content": "What is 2 plus 3?"}]], seed=0)
    state, control = TrainerState(max_steps=3), TrainerControl()
    guard.on_train_begin(None, state, control, model=policy)
    start = {n: p.clone() for n, p in policy.named_parameters()}
    for step, scale in ((1, 0.0), (2, 5.0), (3, 0.0)):   # step 2: far from SFT (noise on the head); step 3: back
        with torch.no_grad():
            for n, p in policy.named_parameters():
                p.copy_(start[n] + scale * torch.randn_like(p) * n.endswith("embed_tokens.weight"))
        state.global_step = step
        guard.on_step_end(None, state, control, model=policy)
    guard.on_train_end(None, state, control, model=policy)
    kls = [c["kl"] for c in guard.report()["checks"]]
    assert kls[1] > 1.0 >= max(kls[0], kls[2]) and not control.should_training_stop and guard.report()["guard"] is None


def test_dpo_config_refuses_unknown_losses_divergences_and_misplaced_smoothing():
    with pytest.raises(UserError, match="loss_type must be one of"):
        cfg("loss_type=hinge2")
    with pytest.raises(UserError, match="divergence must be one of reverse_kl, forward_kl, js_divergence"):
        cfg("divergence=alpha_divergence")
    with pytest.raises(UserError, match="robust only"):
        cfg("label_smoothing=0.1")


def test_win_rate_counts_ties_half_and_its_interval_holds_it():
    prompts = [{"task": "arithmetic", "expected": 5, "id": str(i)} for i in range(4)]
    right, wrong = "2 plus 3 is 5.", "2 plus 3 is 6."
    r = compare_answers(prompts, [right, right, wrong, right], [wrong, right, right, wrong])
    # win, tie, loss, win -> (1 + 0.5 + 0 + 1) / 4
    assert (r["wins"], r["ties"], r["losses"], r["win_rate"]) == (2, 1, 1, 0.625)
    assert r["ci95"][0] <= 0.625 <= r["ci95"][1] and (r["correct_a"], r["correct_b"]) == (0.75, 0.5)
    assert distinct_rate(["The end.", "the  END.", "Hi."]) == round(2 / 3, 3)


def test_kl_of_a_policy_to_itself_is_zero(base_model_dir, world_dir):
    from core.compare import kl_to_reference
    from core.data import load_rows
    from core.model import load_causal_lm
    from core.tokenizer import load_tokenizer
    model, tok = load_causal_lm(base_model_dir), load_tokenizer(base_model_dir)
    prompts = load_rows(world_dir / "prompts_heldout.jsonl")[:4]
    kl = kl_to_reference(model, model, tok, prompts, max_new_tokens=6)
    assert abs(kl["kl_per_sequence"]) < 1e-3 and kl["mean_tokens"] > 0


def test_effect_report_states_the_ceiling_a_perfect_policy_would_reach(base_model_dir, world_dir):
    from core.compare import EvalSettings, policy_vs_reference
    from core.data import load_rows
    from core.model import load_causal_lm
    from core.tokenizer import load_tokenizer
    model, tok = load_causal_lm(base_model_dir), load_tokenizer(base_model_dir)
    prompts = load_rows(world_dir / "prompts_heldout.jsonl")[:6]
    settings = EvalSettings(temperatures=[0.0, 0.7], max_new_tokens=6, answers_per_prompt=3)
    report = policy_vs_reference(model, model, tok, prompts, settings)
    r = report["greedy, max_new_tokens=6"]
    # the same policy ties itself everywhere; the references beat an untrained model's answers everywhere
    assert (r["win_rate"], r["ties"]) == (0.5, 6) and r["ceiling"] == 1.0 and r["headroom_used"] == 0.0
    assert r["length_controlled_win_rate"] == 0.5  # the same lengths: nothing to regress out
    # sampled: three answers per prompt, each against the other side's answer of the same seed (here itself)
    s = report["temperature=0.7, max_new_tokens=6"]
    assert (s["n"], s["answers_per_prompt"], s["ties"], s["win_rate"]) == (6, 3, 18, 0.5)
    assert s["policy_losses_to_best"]["answers"] == 18 and s["correct_only_a"] == s["correct_only_b"] == 0


def test_sampled_answers_are_sample_major_and_the_first_is_a_one_answer_runs(base_model_dir, world_dir):
    from core.compare import sample_answers
    from core.data import load_rows
    from core.generation import Decoding, chat
    from core.model import load_causal_lm
    from core.tokenizer import load_tokenizer
    model, tok = load_causal_lm(base_model_dir), load_tokenizer(base_model_dir)
    convs = [p["messages"] for p in load_rows(world_dir / "prompts_heldout.jsonl")[:4]]
    hot = Decoding(1.0, max_new_tokens=6)
    many = sample_answers(model, tok, convs, hot, seed=3, answers_per_prompt=3)
    one = chat(model, tok, convs, hot, seed=3)
    assert len(many) == 12 and [c.token_ids for c in many[:4]] == [c.token_ids for c in one]
    assert [c.token_ids for c in many[4:]] != [c.token_ids for c in many[:4]]  # other seeds, other answers
    assert len(sample_answers(model, tok, convs, Decoding(max_new_tokens=6), answers_per_prompt=3)) == 4  # greedy: one


def test_a_win_that_is_only_shorter_answers_is_taken_out_by_the_length_control():
    from core.annotator import compare_answers
    prompts = [{"task": "arithmetic", "a": 2, "b": 3, "op": "plus", "expected": 5, "messages": [], "reference": ""}] * 40
    short, chatty = "2 plus 3 is 5.", "2 plus 3 is 5. By the way, the sun is hot. The moon is in the sky at night."
    # a is shorter than b exactly where it wins; where both are short they tie
    a = [short] * 40
    b = [chatty] * 20 + [short] * 20
    lengths = ([5] * 40, [25] * 20 + [5] * 20)
    r = compare_answers(prompts, a, b, lengths=lengths)
    assert r["win_rate"] == 0.75 and r["length_controlled_win_rate"] < 0.6


def test_the_capability_pairs_of_skipped_tasks_are_left_to_the_reward_model(tmp_path, base_model_dir, world_dir, pairs):
    from core.data import load_rows
    rows = load_rows(pairs[0])
    marked = tmp_path / "train.jsonl"   # every third pair a capability pair; its task as the world named it
    marked.write_text("".join(json.dumps({**r, "kind": "capability" if i % 3 == 0 else "preference"}) + "\n"
                              for i, r in enumerate(rows)))
    tasks = {r["task"] for i, r in enumerate(rows) if i % 3 == 0}
    skip = sorted(tasks)[:1]
    expected = sum(1 for i, r in enumerate(rows) if i % 3 == 0 and r["task"] in skip)
    m = dpo.main(cfg(f"skip_capability_tasks=[{skip[0]}]", "train.max_steps=1", "guards.kl_budget=0"),
                 str(base_model_dir), str(marked), str(world_dir / "prompts_heldout.jsonl"), str(tmp_path / "dpo"))
    assert expected > 0 and m["pairs"] == 40 - expected and m["capability_pairs_skipped"] == {skip[0]: expected}
    only = tmp_path / "capability.jsonl"
    only.write_text("".join(json.dumps({**r, "kind": "capability", "task": "sum"}) + "\n" for r in rows))
    with pytest.raises(UserError, match="every pair is a capability pair of skip_capability_tasks"):
        dpo.main(cfg("skip_capability_tasks=[sum]"), str(base_model_dir), str(only),
                 str(world_dir / "prompts_heldout.jsonl"), str(tmp_path / "dpo2"))
