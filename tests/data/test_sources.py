"""One parser of ``hf:NAME[:CONFIG]:SPLIT`` for training data, evaluation rows, corpora and ICL tasks."""
from __future__ import annotations

import pytest

from emo_ray.data.sources import DataError, HFSource, check_sources, parse_hf, read_documents

MALFORMED = ["hf:", "hf:wikitext", "hf:a:b:c:d", "hf::train", "hf:wikitext:", "hf:wikitext: :test"]


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("hf:SetFit/subj:train", HFSource("SetFit/subj", None, "train")),
        ("hf:wikitext:wikitext-103-raw-v1:test", HFSource("wikitext", "wikitext-103-raw-v1", "test")),
    ],
)
def test_parse_and_round_trip(spec, expected):
    assert parse_hf(spec) == expected
    assert str(expected) == spec
    assert expected.url == f"https://huggingface.co/datasets/{expected.name}"


@pytest.mark.parametrize("spec", ["data/train.jsonl", "${EMO_RAY_DATA}/sst2/test.jsonl", "/abs/hf:odd.jsonl"])
def test_local_paths_are_not_hub_sources(spec):
    assert parse_hf(spec) is None


@pytest.mark.parametrize("spec", MALFORMED)
def test_malformed_specs_fail_naming_the_grammar(spec):
    with pytest.raises(DataError, match=r"expected hf:NAME\[:CONFIG\]:SPLIT"):
        parse_hf(spec)


def test_check_sources_rejects_a_malformed_hub_spec_before_reading():
    with pytest.raises(DataError, match="expected hf:NAME"):
        check_sources("hf:wikitext")
    check_sources("hf:wikitext:wikitext-2-raw-v1:train")  # well-formed: only the hub can say more


class FakeSplit:
    """What ``HFSource.load`` returns, without a hub: columns, column access, row iteration."""

    def __init__(self, rows):
        self.rows = rows
        self.column_names = sorted(rows[0])

    def __getitem__(self, column):
        return [r[column] for r in self.rows]

    def __iter__(self):
        return iter(self.rows)


@pytest.fixture
def fake_hub(monkeypatch):
    loaded = []

    def load(self):
        loaded.append(self)
        rows = [{"text": "first doc", "label": 0}, {"text": "  ", "label": 1}, {"text": "second", "label": 1}]
        return FakeSplit(rows)

    monkeypatch.setattr(HFSource, "load", load)
    return loaded


def test_training_data_and_evaluation_rows_share_the_parser(fake_hub):
    from emo_ray.evaluation.rows import read_rows

    assert read_documents("hf:org/ds:cfg:train") == ["first doc", "second"]
    assert [r["label"] for r in read_rows("hf:org/ds:test")] == [0, 1, 1]
    assert fake_hub == [HFSource("org/ds", "cfg", "train"), HFSource("org/ds", None, "test")]
    with pytest.raises(DataError, match="no text field 'body'"):
        read_documents("hf:org/ds:train", text_field="body")


def test_evaluation_rows_reject_malformed_spec_and_report_unavailable_hub(monkeypatch):
    from emo_ray.evaluation.rows import DataUnavailable, read_rows

    with pytest.raises(ValueError, match="expected hf:NAME"):
        read_rows("hf:only-a-name")

    def offline(self):
        raise ConnectionError("no network")

    monkeypatch.setattr(HFSource, "load", offline)
    with pytest.raises(DataUnavailable, match="hf:org/ds:test: cannot load the hub dataset"):
        read_rows("hf:org/ds:test")


def test_corpora_and_tasks_validate_their_hub_specs_when_defined(tmp_path):
    from emo_ray.evaluation.corpora import CORPORA, Corpus
    from emo_ray.evaluation.icl.tasks import TaskError, load_task

    assert parse_hf(CORPORA["ptb"].source) == HFSource("ptb_text_only", "penn_treebank", "test")
    with pytest.raises(DataError, match="expected hf:NAME"):
        Corpus("hf:ptb_text_only", 5, 25)
    task = tmp_path / "bad.yaml"
    task.write_text(
        "name: bad\ntemplate: '{text} It is {label}.'\nlabel_words: [bad, good]\n"
        "train: 'hf:SetFit/subj'\ntest: x.jsonl\n"
    )
    with pytest.raises(TaskError, match="task 'bad': train: .*expected hf:NAME"):
        load_task(str(task))
