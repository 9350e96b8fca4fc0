"""The native ICL pipeline makes the same predictions as OpenICL 0.1.8 (what the paper ran) on
SST-2 with SmolLM2: TopkRetriever (8 demonstrations) + PPLInferencer, the EMO icl.py template.

OpenICL pins transformers 4.28; it is installed here with ``pip install --no-deps openicl==0.1.8``
and run on transformers 5 through the shims below. Skipped when OpenICL is absent.
"""
from __future__ import annotations

import importlib.util
import random
import sys
import types

import pytest

from emo_ray.evaluation.config import EvalConfig, ICLConfig
from tests.evaluation.conftest import LOCAL, needs_data, needs_minilm, needs_smollm2, write_jsonl, write_task

pytestmark = [
    pytest.mark.realmodel,
    needs_smollm2,
    needs_data,
    needs_minilm,
    pytest.mark.skipif(importlib.util.find_spec("openicl") is None, reason="pip install --no-deps openicl==0.1.8"),
]

N_TRAIN, N_TEST = 400, 24


def install_shims(monkeypatch) -> None:
    """What OpenICL imports but the PPL/top-k path never uses (API clients, BLEU/ROUGE/BM25),
    ``encode_plus``, which transformers 5 tokenizers no longer have, and a ``to(device)`` of
    OpenICL's collator wrapper that accepts the ``non_blocking`` transformers 5 passes."""
    stubs = {"openai": {}, "evaluate": {"load": None}, "rank_bm25": {"BM25Okapi": object}}
    for name, attrs in stubs.items():
        if importlib.util.find_spec(name) is None:
            mod = types.ModuleType(name)
            for k, v in attrs.items():
                setattr(mod, k, v)
            monkeypatch.setitem(sys.modules, name, mod)
    from transformers import PreTrainedTokenizerBase

    if not hasattr(PreTrainedTokenizerBase, "encode_plus"):
        monkeypatch.setattr(PreTrainedTokenizerBase, "encode_plus", lambda self, text, **kw: self(text, **kw), raising=False)
    from openicl.utils.collators import ListWrapper

    monkeypatch.setattr(ListWrapper, "to", lambda self, *a, **kw: self.data)


def test_same_predictions_as_openicl(tmp_path, monkeypatch):
    from emo_ray.evaluation.icl.evaluate_task import evaluate_task
    from emo_ray.evaluation.icl.retriever import resolve_retriever
    from emo_ray.evaluation.rows import read_rows
    from emo_ray.models import load_model, materialize

    train = read_rows("${EMO_RAY_DATA}/sst2/train.jsonl")[:N_TRAIN]
    test = random.Random(0).sample(read_rows("${EMO_RAY_DATA}/sst2/test.jsonl"), N_TEST)
    (tmp_path / "data").mkdir()
    task = write_task(
        tmp_path, name="sst2_small", template='Review: "{text}" It is {label}.', label_words=["negative", "positive"],
        train=write_jsonl(tmp_path / "data" / "train.jsonl", train), test=write_jsonl(tmp_path / "data" / "test.jsonl", test),
        demonstrations=8, selection="topk",
    )
    cfg = EvalConfig(icl=ICLConfig(retriever="all-minilm-l6-v2", normalization="openicl", scorer="shared_prefix"), execution=LOCAL)
    ours = evaluate_task("smollm2-135m", task, cfg).tables["icl/sst2_small.json"]

    install_shims(monkeypatch)
    from datasets import Dataset, DatasetDict
    from openicl import DatasetReader, PPLInferencer, PromptTemplate, TopkRetriever

    reader = DatasetReader(
        DatasetDict({"train": Dataset.from_list(train), "test": Dataset.from_list(test)}),
        input_columns=["text"], output_column="label",
    )
    # DRSY/EMO icl.py's sst2 template, keyed by this data's label order (0 = negative).
    template = PromptTemplate(
        {0: '</E>Review: "<X>" It is negative.', 1: '</E>Review: "<X>" It is positive.'},
        column_token_map={"text": "<X>"}, ice_token="</E>",
    )
    retriever = TopkRetriever(
        reader, ice_num=8, sentence_transformers_model_name=resolve_retriever("all-minilm-l6-v2"),
        tokenizer_name=materialize("smollm2-135m"),
    )
    model, tok = load_model("smollm2-135m")
    inferencer = PPLInferencer(model_name=model.eval(), tokenizer_name=tok, batch_size=4, output_json_filepath=str(tmp_path / "openicl"))
    theirs = inferencer.inference(retriever, ice_template=template)

    assert [list(d) for d in ours["demos"]] == retriever.retrieve()
    words = ["negative", "positive"]
    assert list(ours["prediction"]) == [words[p] for p in theirs]
