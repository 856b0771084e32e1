"""core.training: the preference dataset TRL's reward and DPO trainers batch by length."""

from core.training import preference_dataset


def test_preference_rows_carry_the_length_of_their_longer_side(tokenizer):
    prompt = [{"role": "user", "content": "What is 2 plus 3?"}]
    short = [{"role": "assistant", "content": "5."}]
    long = [{"role": "assistant", "content": "2 plus 3 is 5. I hope that helps with your sums."}]
    rows = [{"prompt": prompt, "chosen": long, "rejected": short, "task": "arithmetic"},
            {"prompt": prompt, "chosen": short, "rejected": long, "task": "arithmetic"},
            {"prompt": prompt, "chosen": short, "rejected": short, "task": "arithmetic"}]
    ds = preference_dataset(tokenizer, rows)

    def tokens(messages):
        return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    assert ds.column_names == ["prompt", "chosen", "rejected", "length"]  # only what the trainers read, and the length
    assert ds["length"] == [tokens(prompt + long), tokens(prompt + long), tokens(prompt + short)]
    assert tokens(prompt + long) > tokens(prompt + short)
