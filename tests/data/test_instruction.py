"""Prompt/response (instruction) data, paper appendix C: parsing and its errors (file:line), the
loss mask (0 exactly on prompt tokens, 1 on response + EOS), packing that keeps ids and mask
aligned across block boundaries, separate cache keys from the text format, labels in the worker,
and every registered loss skipping the prompt (materialised and chunked)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from emo_ray.config import ConfigError, DataConfig, load_config
from emo_ray.data import DataError, prepare_blocks
from emo_ray.data import packing
from emo_ray.data.packing import _cache_key, _pack_masked, tokenize_example
from emo_ray.data.sources import (ALPACA_PROMPT_INPUT, ALPACA_PROMPT_NO_INPUT, Example, InstructionFields,
                                  read_examples)
from emo_ray.models.tiny import byte_tokenizer

TOK = byte_tokenizer()
EOS = TOK.eos_token_id


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMO_RAY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def rows(n=30):
    out = []
    for i in range(n):
        row = {"instruction": f"Add {i} and {i + 1}.", "output": f"{2 * i + 1}"}
        if i % 2:
            row["input"] = f"numbers {i}, {i + 1}"
        out.append(row)
    return out


def instruction_cfg(path, **kw) -> DataConfig:
    base = dict(train=str(path), format="instruction", block_size=32, validation_fraction=0.1,
                max_validation_blocks=0)
    return DataConfig(**{**base, **kw})


# --- parsing ---------------------------------------------------------------------------------


def test_alpaca_templates_with_and_without_input(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [
        {"instruction": "Double it.", "input": "21", "output": "42"},
        {"instruction": "Say hi.", "output": "hi"},
        {"instruction": "Say ho.", "input": "", "output": "ho"},  # empty input: the no-input template
    ])
    ex = read_examples(str(p))
    assert ex[0] == Example(ALPACA_PROMPT_INPUT.format(instruction="Double it.", input="21"), "42")
    assert ex[1] == Example(ALPACA_PROMPT_NO_INPUT.format(instruction="Say hi."), "hi")
    assert ex[2].prompt == ALPACA_PROMPT_NO_INPUT.format(instruction="Say ho.")
    assert ex[0].prompt.endswith("### Input:\n21\n\n### Response:")
    assert ex[1].prompt.startswith("Below is an instruction that describes a task. Write a response")


def test_custom_field_names(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"q": "Say hi.", "ctx": "to Bob", "a": "hi Bob"}])
    (ex,) = read_examples(str(p), InstructionFields("q", "ctx", "a"))
    assert ex == Example(ALPACA_PROMPT_INPUT.format(instruction="Say hi.", input="to Bob"), "hi Bob")


@pytest.mark.parametrize("bad, match", [
    ({"output": "x"}, r"d\.jsonl:2: no instruction field 'instruction' \(found \['output'\]\)"),
    ({"instruction": "x"}, r"d\.jsonl:2: no output field 'output'"),
    ({"instruction": 3, "output": "x"}, r"d\.jsonl:2: field 'instruction' is int, not a string"),
    ({"instruction": "x", "output": ["y"]}, r"d\.jsonl:2: field 'output' is list, not a string"),
    ({"instruction": "x", "input": 5, "output": "y"}, r"d\.jsonl:2: field 'input' is int, not a string"),
    ({"instruction": "  ", "output": "y"}, r"d\.jsonl:2: field 'instruction' is empty"),
    ("{broken", r"d\.jsonl:2: malformed JSON line"),
    ("[1, 2]", r"d\.jsonl:2: expected a JSON object, got list"),
])
def test_bad_lines_fail_naming_file_and_line(tmp_path, bad, match):
    p = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "ok", "output": "ok"}, bad])
    with pytest.raises(DataError, match=match):
        read_examples(str(p))


def test_bad_line_fails_before_packing_through_prepare_blocks(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [*rows(5), {"instruction": "x"}])
    with pytest.raises(DataError, match=r"d\.jsonl:6: no output field"):
        prepare_blocks(instruction_cfg(p), TOK)


def test_text_files_and_empty_files_are_refused(tmp_path):
    t = tmp_path / "d.txt"
    t.write_text("hello\n")
    with pytest.raises(DataError, match="reads JSON Lines"):
        read_examples(str(t))
    e = tmp_path / "e.jsonl"
    e.write_text("\n")
    with pytest.raises(DataError, match="instruction data is empty"):
        read_examples(str(e))


def test_config_fields_and_validation(tmp_path):
    cfg = load_config(None, ["data.format=instruction", "data.output_field=answer"])
    assert cfg.data.format == "instruction" and cfg.data.output_field == "answer"
    assert load_config(None, []).data.format == "text"  # the default is unchanged
    with pytest.raises(ConfigError, match="data.format"):
        load_config(None, ["data.format=chat"])
    with pytest.raises(ConfigError, match="must differ"):
        load_config(None, ["data.format=instruction", "data.output_field=instruction"])
    with pytest.raises(ConfigError, match="non-empty"):
        load_config(None, ["data.format=instruction", "data.instruction_field="])


def test_shipped_example_config_and_data():
    cfg = load_config("configs/instruction_tiny.yaml")
    assert cfg.data.format == "instruction"
    ex = read_examples(cfg.data.train, InstructionFields.of(cfg.data))
    assert 35 <= len(ex) <= 50


# --- the mask ----------------------------------------------------------------------------------


def test_mask_is_zero_exactly_on_prompt_tokens():
    prompt, response = TOK("Q: 2+2?", add_special_tokens=False)["input_ids"], TOK("4", add_special_tokens=False)["input_ids"]
    ids, mask = tokenize_example(prompt, response, EOS)
    assert ids == prompt + response + [EOS]
    assert mask == [0] * len(prompt) + [1] * (len(response) + 1)


def test_packed_mask_matches_each_example(tmp_path):
    """Decoding the blocks with their masks gives back, in order, each example's response + EOS
    (mask 1) and its prompt (mask 0), also for examples split across block boundaries."""
    p = write_jsonl(tmp_path / "d.jsonl", rows(30))
    cfg = instruction_cfg(p, validation_fraction=0.0, block_size=29)  # 29: nothing aligns with anything
    packed = prepare_blocks(cfg, TOK, cache=False)
    assert packed.train_mask.shape == packed.train.shape and packed.train_mask.dtype == np.uint8
    flat_ids, flat_mask = packed.train.reshape(-1), packed.train_mask.reshape(-1)
    # The same examples, in the seeded order, tokenised one by one, concatenated.
    ex = read_examples(str(p))
    order = np.random.default_rng(cfg.seed).permutation(len(ex))
    want_ids, want_mask = [], []
    for i in order:
        e = ex[i]
        ids, mask = tokenize_example(TOK(e.prompt, add_special_tokens=False)["input_ids"],
                                     TOK(e.response, add_special_tokens=False)["input_ids"], EOS)
        want_ids += ids
        want_mask += mask
    n = len(flat_ids)
    assert n == packed.train.size and n <= len(want_ids) < n + cfg.block_size  # remainder dropped
    assert flat_ids.tolist() == want_ids[:n]
    assert flat_mask.tolist() == want_mask[:n]
    # Every EOS ends a response, so is trained; the first token after it is a prompt token.
    eos_pos = np.flatnonzero(flat_ids == EOS)
    assert len(eos_pos) and flat_mask[eos_pos].all()
    after = eos_pos[eos_pos + 1 < n] + 1
    assert not flat_mask[after].any()
    # The responses, read through the mask, are the outputs (each closed by EOS).
    text = TOK.decode(flat_ids[flat_mask == 1].tolist())
    assert text.startswith(ex[order[0]].response + "<eos>" + ex[order[1]].response + "<eos>")
    # Examples do straddle block boundaries here (so the flat comparison above covers them):
    # some block after the first starts in the middle of an example, not right after an EOS.
    assert any(packed.train[b - 1, -1] != EOS for b in range(1, len(packed.train)))
    assert packed.stats["train_target_tokens"] == int(packed.train_mask[:, 1:].sum())


def test_pack_masked_cuts_ids_and_mask_at_the_same_offsets():
    pairs = [([1, 2, 3, 4, 5], [0, 0, 1, 1, 1]), ([6, 7, 8], [0, 1, 1]), ([9, 10, 11, 12], [0, 0, 0, 1])]
    ids, mask, used = _pack_masked(pairs, 4)
    assert ids.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    assert mask.tolist() == [[0, 0, 1, 1], [1, 0, 1, 1], [0, 0, 0, 1]]
    assert used == 3
    ids, mask, used = _pack_masked(pairs, 4, max_blocks=1)
    assert ids.tolist() == [[1, 2, 3, 4]] and mask.tolist() == [[0, 0, 1, 1]] and used == 1


def test_validation_blocks_carry_their_mask(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", rows(40))
    packed = prepare_blocks(instruction_cfg(p, validation_fraction=0.25), TOK, cache=False)
    assert packed.validation_mask is not None and packed.validation_mask.shape == packed.validation.shape
    assert 0 < packed.validation_mask.sum() < packed.validation_mask.size
    assert packed.stats["validation_target_tokens"] == int(packed.validation_mask[:, 1:].sum())


def test_text_format_has_no_mask(tmp_path):
    p = write_jsonl(tmp_path / "t.jsonl", [{"text": f"document {i} " * 5} for i in range(30)])
    packed = prepare_blocks(DataConfig(train=str(p), block_size=32), TOK, cache=False)
    assert packed.train_mask is None and packed.validation_mask is None
    assert "train_target_tokens" not in packed.stats


# --- cache ---------------------------------------------------------------------------------------


def _old_text_key(cfg: DataConfig, docs, val_docs) -> str:
    """The text cache key as computed before ``data.format`` existed."""
    params = {k: v for k, v in asdict(cfg).items() if k not in ("train", "validation") + packing.INSTRUCTION_KEYS}
    blob = json.dumps([packing.CACHE_VERSION, packing.tokenizer_digest(TOK), packing.documents_digest(docs),
                       None if val_docs is None else packing.documents_digest(val_docs), params],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:40]


def test_cache_keys_differ_from_text_and_text_keys_are_unchanged(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{**r, "text": r["instruction"]} for r in rows(20)])
    text = DataConfig(train=str(p), block_size=32)
    docs = packing.read_documents(str(p))
    assert _cache_key(text, TOK, docs, None) == _old_text_key(text, docs, None)
    # Changing an instruction-only field leaves a text key alone.
    assert _cache_key(replace(text, output_field="x"), TOK, docs, None) == _cache_key(text, TOK, docs, None)
    inst = replace(text, format="instruction")
    ex = read_examples(str(p))
    key_inst = _cache_key(inst, TOK, ex, None)
    assert key_inst != _cache_key(text, TOK, docs, None)
    assert _cache_key(replace(inst, input_field="context"), TOK, ex, None) != key_inst


def test_text_and_instruction_packings_of_one_file_never_share_an_entry(tmp_path, tmp_cache):
    p = write_jsonl(tmp_path / "d.jsonl", [{**r, "text": r["instruction"] + " " + r["output"]} for r in rows(40)])
    text = DataConfig(train=str(p), block_size=32, validation_fraction=0.1)
    inst = replace(text, format="instruction")
    a = prepare_blocks(text, TOK)
    b = prepare_blocks(inst, TOK)
    assert (a.cache, b.cache) == ("miss", "miss")
    assert len(list((tmp_cache / "packed").glob("*.npz"))) == 2
    b2 = prepare_blocks(inst, TOK)
    a2 = prepare_blocks(text, TOK)
    assert (a2.cache, b2.cache) == ("hit", "hit")
    assert a2.train_mask is None
    np.testing.assert_array_equal(b2.train, b.train)
    np.testing.assert_array_equal(b2.train_mask, b.train_mask)
    np.testing.assert_array_equal(b2.validation_mask, b.validation_mask)
    assert b2.stats == b.stats


# --- labels in the worker, and every loss skipping the prompt ------------------------------------


def test_worker_labels_ignore_the_prompt():
    from emo_ray.losses import IGNORE_INDEX
    from emo_ray.train.batches import MaskedBatch, compute_args, masked_labels

    ids = torch.tensor([[5, 6, 7, 8]])
    labels = masked_labels(ids, torch.tensor([[0, 1, 0, 1]]))
    assert labels.tolist() == [[IGNORE_INDEX, 6, IGNORE_INDEX, 8]]
    batch = MaskedBatch(ids, labels).to("cpu")
    assert compute_args(batch)[1] is batch.labels and compute_args(ids) == (ids,)


def _loss_names():
    from emo_ray.losses import LOSSES

    return sorted(LOSSES)


def _response_case(seed=0, B=3, T=11, V=37, d=8):
    """Ids, a prompt/response mask (one row all prompt, one block starting inside a response),
    the masked labels, and the (b, t) positions whose *next* token is a trained target."""
    from emo_ray.train.batches import masked_labels

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1],
                         [1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0],
                         [0] * T])[:B, :T]
    labels = masked_labels(ids, mask)
    pred = [(b, t) for b in range(B) for t in range(T - 1) if mask[b, t + 1]]
    return ids, mask, labels, pred, g


def _only_response(x, ids, pred):
    """``x`` ``(B, T, ...)`` rows at the predicting positions as one sequence ``(1, N + 1, ...)``
    (a trailing dummy row, which predicts nothing) and labels ``(1, N + 1)`` whose every shifted
    target is a response token: the loss on the response positions alone, without any ignore_index."""
    rows = torch.stack([x[b, t] for b, t in pred] + [x[0, 0] * 0])
    targets = torch.tensor([0] + [int(ids[b, t + 1]) for b, t in pred])
    return rows.unsqueeze(0), targets.unsqueeze(0)


@pytest.mark.parametrize("name", _loss_names())
def test_every_loss_on_masked_labels_equals_the_loss_on_response_positions_only(name):
    from emo_ray.losses import LOSSES, get_loss

    ids, _, labels, pred, g = _response_case()
    V = 37
    logits = torch.randn(*ids.shape, V, generator=g, dtype=torch.float64)
    cost = torch.randn(V, 11, generator=g, dtype=torch.float64)
    fn = get_loss(name, cost_embedding=cost if LOSSES[name].needs_cost_embedding else None)
    a = logits.clone().requires_grad_(True)
    out = fn(a, labels)
    b = logits.clone().requires_grad_(True)
    sub_logits, sub_labels = _only_response(b, ids, pred)
    ref = fn(sub_logits, sub_labels)
    assert out.n_tokens == ref.n_tokens == len(pred)
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-10, atol=1e-12)
    out.loss.backward()
    ref.loss.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12)
    # Prompt positions get no gradient at all.
    trained = torch.zeros(ids.shape, dtype=torch.bool)
    for bb, t in pred:
        trained[bb, t] = True
    assert a.grad[~trained].abs().max() == 0


@pytest.mark.parametrize("name", _loss_names())
def test_every_chunked_loss_on_masked_labels_equals_the_loss_on_response_positions_only(name):
    from emo_ray.losses import LOSSES, has_chunked_form
    from emo_ray.losses.chunked import chunked_loss

    if not has_chunked_form(name):
        pytest.skip(f"{name} has no chunked form")
    ids, _, labels, pred, g = _response_case(seed=1)
    V, d = 37, 8
    hidden = torch.randn(*ids.shape, d, generator=g, dtype=torch.float64)
    weight = torch.randn(V, d, generator=g, dtype=torch.float64) * 0.4
    bias = torch.randn(V, generator=g, dtype=torch.float64) * 0.5
    cost = torch.randn(V, d + 3, generator=g, dtype=torch.float64) if LOSSES[name].needs_cost_embedding else None
    leaves = [[t.clone().requires_grad_(True) for t in (hidden, weight, bias)] for _ in range(2)]
    (h1, w1, b1), (h2, w2, b2) = leaves
    out = chunked_loss(name, h1, w1, labels, head_bias=b1, cost_embedding=cost, chunk_size=4)
    sub_h, sub_labels = _only_response(h2, ids, pred)
    ref = chunked_loss(name, sub_h, w2, sub_labels, head_bias=b2, cost_embedding=cost, chunk_size=4)
    assert out.n_tokens == ref.n_tokens == len(pred)
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-10, atol=1e-12)
    out.loss.backward()
    ref.loss.backward()
    for mine, theirs in ((h1, h2), (w1, w2), (b1, b2)):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-9, atol=1e-12)


def _tiny_llama(V=37):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).double()


@pytest.mark.parametrize("impl", ["reference", "chunked"])
@pytest.mark.parametrize("loss", ["mle", "tailr", "mixce", "emo"])
def test_objective_compute_takes_labels_on_both_paths(loss, impl):
    """``objective.compute(engine, ids, labels)``: the same as the loss on the model's logits with
    those labels, and different from the unmasked loss (``compute(engine, ids)``)."""
    from emo_ray.losses import get_loss
    from emo_ray.train.objective import build_objective

    model = _tiny_llama()
    cfg = load_config(None, [f"train.loss={loss}", f"train.loss_impl={impl}", "train.loss_chunk_size=5",
                             "train.cost_embedding=adaptive"])
    objective = build_objective(cfg, model)
    assert objective.chunked == (impl == "chunked")
    ids, _, labels, pred, _ = _response_case()
    out = objective.compute(model, ids, labels)
    logits = model(input_ids=ids).logits
    cost = model.get_output_embeddings().weight.detach() if loss == "emo" else None
    ref = get_loss(loss, cost_embedding=cost)(logits, labels)
    assert out.n_tokens == len(pred)
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-9, atol=1e-12)
    full = objective.compute(model, ids)
    assert full.n_tokens == ids.shape[0] * (ids.shape[1] - 1)
    assert not torch.allclose(full.loss, out.loss)
