"""Generation corpora are YAML files (like ICL tasks): the shipped ones carry the paper's Table 4
lengths, a user corpus is one more file passed by path, and a bad file fails early naming the
file and the problem."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from emo_ray.evaluation.config import EvalConfigError, load_eval_config
from emo_ray.evaluation.corpora import CORPORA, CORPUS_DIR, Corpus, CorpusError, get_corpus, load_corpus_file
from emo_ray.evaluation.prompts import make_prompts, text_units
from tests.evaluation.conftest import write_jsonl

# EMO (Ren et al., ICLR 2024) Table 4: prefix / generation lengths in tokens.
TABLE4 = {
    "wikitext-2": (20, 80),
    "wikitext-103": (20, 80),
    "webtext": (20, 80),
    "ptb": (5, 25),
    "writingprompts": (35, 80),
    "ag_news": (10, 30),
}
SHIPPED = sorted(CORPUS_DIR.glob("*.yaml"))
VALID_KEYS = "\\['gen_tokens', 'newlines_to_spaces', 'prefix_tokens', 'scan_rows', 'source', 'text_field', 'unit', 'windows_per_unit'\\]"


def test_every_table4_domain_is_shipped():
    assert {p.stem for p in SHIPPED} == set(TABLE4) == set(CORPORA)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_file_loads_with_table4_lengths_and_cites_it(path):
    corpus = load_corpus_file(path)
    assert corpus == CORPORA[path.stem] == get_corpus(path.stem) == get_corpus(str(path))
    assert (corpus.prefix_tokens, corpus.gen_tokens) == TABLE4[path.stem]
    first = path.read_text().splitlines()[0]
    assert first.startswith("#") and "Table 4" in first


def test_shipped_settings_are_unchanged():
    # scan_rows: the official test_batch reads eval_num=4000 rows in slices of 64 (4032); the local
    # WikiText-2 file lacks HF's leading blank row
    assert CORPORA["wikitext-2"] == Corpus("${EMO_RAY_DATA}/wikitext-2/test.jsonl", 20, 80, unit="paragraph", scan_rows=4031)
    assert CORPORA["wikitext-103"] == Corpus("hf:wikitext:wikitext-103-raw-v1:test", 20, 80, unit="paragraph", scan_rows=4032)
    assert CORPORA["webtext"] == Corpus(
        "${EMO_RAY_DATA}/webtext/test.jsonl", 20, 80, newlines_to_spaces=True, windows_per_unit=2
    )
    assert CORPORA["ptb"] == Corpus("hf:ptb_text_only:penn_treebank:test", 5, 25, text_field="sentence", scan_rows=4032)
    assert CORPORA["ag_news"] == Corpus("${EMO_RAY_DATA}/ag_news/test.jsonl", 10, 30, scan_rows=4032)
    assert CORPORA["writingprompts"] == Corpus("hf:euclaise/writingprompts:test", 35, 80, text_field="story")
    assert "hub only" in (CORPUS_DIR / "writingprompts.yaml").read_text()


def _user_corpus(folder: Path, rows=None, **extra) -> Path:
    """A local Penn Treebank-like corpus: JSON Lines data and its YAML file."""
    rows = rows or [{"sentence": f"the company said it expects sales number {i} to rise sharply next year"} for i in range(12)]
    data = write_jsonl(folder / "ptb.jsonl", rows)
    lines = ["# my PTB copy, Table 4 lengths 5/25", f"source: {data}", "prefix_tokens: 5", "gen_tokens: 25",
             "text_field: sentence", *(f"{k}: {v}" for k, v in extra.items())]
    path = folder / "my_ptb.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_user_file_by_path_end_to_end(tmp_path, tiny):
    _, tok = tiny
    path = _user_corpus(tmp_path)
    corpus = get_corpus(str(path))
    assert (corpus.prefix_tokens, corpus.gen_tokens, corpus.text_field) == (5, 25, "sentence")
    assert len(text_units(corpus)) == 12
    prompts, counts = make_prompts(corpus, tok, num_prompts=10, seed=0)
    assert len(prompts) == 10 and counts["units"] == 12
    assert all(len(p.prefix_ids) >= 5 and len(p.reference_ids) == 25 for p in prompts)


def test_user_file_paths_expand(tmp_path, monkeypatch):
    path = _user_corpus(tmp_path)
    expected = get_corpus(str(path))
    monkeypatch.chdir(tmp_path)
    assert get_corpus("my_ptb.yaml") == expected  # relative to the working directory
    monkeypatch.setenv("HOME", str(tmp_path))
    assert get_corpus("~/my_ptb.yaml") == expected
    monkeypatch.setenv("EMO_RAY_DATA", str(tmp_path))
    assert get_corpus("${EMO_RAY_DATA}/my_ptb.yaml") == expected


def test_data_paths_inside_a_user_file_expand(tmp_path, monkeypatch):
    (tmp_path / "ptb").mkdir()
    write_jsonl(tmp_path / "ptb" / "test.jsonl", [{"sentence": "a b c"}, {"sentence": "d e"}])
    monkeypatch.setenv("EMO_RAY_DATA", str(tmp_path))
    path = tmp_path / "c.yaml"
    path.write_text("source: ${EMO_RAY_DATA}/ptb/test.jsonl\nprefix_tokens: 5\ngen_tokens: 25\ntext_field: sentence\n")
    assert text_units(get_corpus(str(path))) == ["a b c", "d e"]


def test_eval_config_accepts_a_corpus_path(tmp_path):
    path = str(_user_corpus(tmp_path))
    cfg = load_eval_config(None, tree={"generation": {"corpora": ["ptb", path]}})
    assert cfg.generation.corpora == ("ptb", path)
    cfg = load_eval_config(None, [f"generation.corpora=[webtext, {path}]"])
    assert cfg.generation.corpora == ("webtext", path)


def test_eval_config_rejects_a_bad_corpus_file_at_load(tmp_path):
    path = _user_corpus(tmp_path, prefix_tokens_x=3)
    with pytest.raises(EvalConfigError) as err:
        load_eval_config(None, tree={"generation": {"corpora": [str(path)]}})
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: unknown key(s) ['prefix_tokens_x']; valid: [")


def _bad(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return str(path)


OK = "source: x.jsonl\nprefix_tokens: 5\ngen_tokens: 25\n"


@pytest.mark.parametrize(
    "text, message",
    [
        (OK + "window: 3\n", f"unknown key\\(s\\) \\['window'\\]; valid: {VALID_KEYS}"),
        ("source: x.jsonl\nprefix_tokens: 5\n", "missing key\\(s\\) \\['gen_tokens'\\]"),
        ("prefix_tokens: 5\ngen_tokens: 25\n", "missing key\\(s\\) \\['source'\\]"),
        ("source: x.jsonl\nprefix_tokens: five\ngen_tokens: 25\n", "prefix_tokens: expected an integer, got 'five'"),
        ("source: x.jsonl\nprefix_tokens: 5\ngen_tokens: 25.5\n", "gen_tokens: expected an integer, got 25.5"),
        ("source: x.jsonl\nprefix_tokens: true\ngen_tokens: 25\n", "prefix_tokens: expected an integer, got True"),
        (OK + "newlines_to_spaces: 1\n", "newlines_to_spaces: expected true/false, got 1"),
        (OK + "text_field: [a, b]\n", "text_field: expected a string, got \\['a', 'b'\\]"),
        ("source: 3\nprefix_tokens: 5\ngen_tokens: 25\n", "source: expected a string, got 3"),
        ("source: x.jsonl\nprefix_tokens: 0\ngen_tokens: 25\n", "prefix_tokens must be positive, got 0"),
        ("source: x.jsonl\nprefix_tokens: 5\ngen_tokens: -25\n", "gen_tokens must be positive, got -25"),
        (OK + "windows_per_unit: 0\n", "windows_per_unit must be positive, got 0"),
        (OK + "unit: sentence\n", "unit: 'sentence' is not one of \\['document', 'paragraph'\\]"),
        (OK + "scan_rows: -1\n", "scan_rows must be >= 0 \\(0 = all rows\\), got -1"),
        ("source: 'hf:ptb_text_only'\nprefix_tokens: 5\ngen_tokens: 25\n", "source: 'hf:ptb_text_only': expected hf:NAME\\[:CONFIG\\]:SPLIT"),
        ("- source: x.jsonl\n", "expected a mapping of corpus keys"),
        ("", "expected a mapping of corpus keys .*, got NoneType"),
        ("source: [x.jsonl\n", "not valid YAML"),
    ],
    ids=["unknown-key", "missing-gen", "missing-source", "str-length", "float-length", "bool-length", "int-flag",
         "list-field", "int-source", "zero-prefix", "negative-gen", "zero-windows", "unknown-unit", "negative-scan", "bad-hf",
         "list-file", "empty-file", "yaml-syntax"],
)
def test_bad_file_names_the_file_and_the_problem(tmp_path, text, message):
    path = _bad(tmp_path, text)
    with pytest.raises(CorpusError, match=f"^{re.escape(path)}: {message}") as err:
        get_corpus(path)
    assert "\n" not in str(err.value)
    with pytest.raises(EvalConfigError, match=message):
        load_eval_config(None, tree={"generation": {"corpora": [path]}})


def test_unknown_name_or_missing_file(tmp_path):
    with pytest.raises(CorpusError, match="'lambada' is not a generation corpus; valid: \\['ag_news', 'ptb', 'webtext', "
                                          "'wikitext-103', 'wikitext-2', 'writingprompts'\\] \\(or a path to a corpus YAML file\\)"):
        get_corpus("lambada")
    with pytest.raises(CorpusError, match=re.escape(f"corpus file {tmp_path}/nope.yaml does not exist")):
        get_corpus(str(tmp_path / "nope.yaml"))
    with pytest.raises(EvalConfigError, match="does not exist"):
        load_eval_config(None, [f"generation.corpora=[{tmp_path}/nope.yaml]"])


def test_a_corpus_file_goes_by_its_stem_in_metric_keys():
    from emo_ray.evaluation.corpora import corpus_label

    assert corpus_label("wikitext-2") == "wikitext-2"
    assert corpus_label("~/data/my_ptb.yaml") == "my_ptb"
    assert corpus_label("${EMO_RAY_DATA}/corpora/ptb_local.yml") == "ptb_local"
