import pytest
from transformers import AutoTokenizer

from core.config import UserError
from core.tokenizer import check_chat_contract, load_tokenizer


def test_round_trip_and_specials(tokenizer):
    text = "One day Tom went to the park.\nQuestion: What is 3 plus 4?\nAnswer: 3 plus 4 is 7."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len({tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id}) == 3
    # world words are single tokens, and a name is the same token in the prompt and in the answer
    assert len(tokenizer(" Tom", add_special_tokens=False)["input_ids"]) == 1
    assert tokenizer.convert_ids_to_tokens(tokenizer("<|user|> Tom<|assistant|> Tom")["input_ids"]).count("ĠTom") == 2


def test_contract_holds_after_save_and_stock_load(tokenizer, tmp_path):
    check_chat_contract(tokenizer)
    tokenizer.save_pretrained(tmp_path)
    stock = AutoTokenizer.from_pretrained(tmp_path)
    check_chat_contract(stock)
    convo = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert stock.apply_chat_template(convo, tokenize=False) == "<|bos|><|user|> Hi<|assistant|> Hello!<|eos|>"
    assert stock.apply_chat_template(convo[:1], tokenize=False, add_generation_prompt=True) == "<|bos|><|user|> Hi<|assistant|>"


def test_contract_catches_pad_equal_to_eos(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    broken = AutoTokenizer.from_pretrained(tmp_path)
    broken.pad_token = broken.eos_token
    with pytest.raises(UserError, match="pad token equals eos token"):
        check_chat_contract(broken)


def test_contract_catches_template_without_generation_markers(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    broken = AutoTokenizer.from_pretrained(tmp_path)
    broken.chat_template = broken.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    with pytest.raises(UserError, match="generation"):
        check_chat_contract(broken)


def test_contract_catches_duplicate_eos(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    broken = AutoTokenizer.from_pretrained(tmp_path)
    broken.chat_template = broken.chat_template.replace("{{ eos_token }}{% endgeneration %}",
                                                        "{{ eos_token }}{% endgeneration %}{{ eos_token }}")
    with pytest.raises(UserError, match="exactly one EOS per assistant turn"):
        check_chat_contract(broken)


def test_load_tokenizer_missing_dir_is_clear(tmp_path):
    with pytest.raises(UserError, match="tokenizer/model directory not found"):
        load_tokenizer(tmp_path / "nope")
