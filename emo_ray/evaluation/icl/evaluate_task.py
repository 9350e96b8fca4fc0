"""In-context learning evaluation of one task (paper 4.2, Table 5 templates, Appendix A.4):
retrieve demonstrations, fill one prompt per label, score them on Ray Data, take the label with
the lowest perplexity, report accuracy next to the label-prior baseline."""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from emo_ray.evaluation.config import EvalConfig
from emo_ray.evaluation.icl.predict import predict, prior_baseline
from emo_ray.evaluation.icl.prompts import candidate_prompts
from emo_ray.evaluation.icl.retriever import embed, fixed_shots, resolve_retriever, topk
from emo_ray.evaluation.icl.scorer import BATCH_TOKENS, CandidateNLL, get_scorer
from emo_ray.evaluation.icl.tasks import Task, TaskData, load_task, load_task_data
from emo_ray.evaluation.open_ended import SectionResult
from emo_ray.inference.executor import ModelActor, map_rows, torch_threads
from emo_ray.tracking import keys


class ICLScorer(ModelActor):
    """Ray Data stage: rows ``prompts`` (one per label) -> ``nll_sum, n_tokens`` per candidate."""

    def __init__(self, model_path: str, scorer: str, batch_items: int, threads: int = 1, device: str = "cpu",
                 dtype: str = "fp32", batch_tokens: int = BATCH_TOKENS):
        super().__init__(threads, device)
        from emo_ray.models.loading import load_for_eval

        # dtype: execution.dtype; the head stays fp32, the scorer's log-softmax / NLL sums are fp32
        self.model, self.tokenizer = load_for_eval(model_path, device, dtype=dtype)
        self.score = get_scorer(scorer)
        self.batch_items, self.batch_tokens = batch_items, batch_tokens

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        t0 = time.perf_counter()
        items = [[self.tokenizer(p)["input_ids"] for p in prompts] for prompts in batch["prompts"]]
        scored = self.score(self.model, items, batch_items=self.batch_items, batch_tokens=self.batch_tokens)
        per_item = (time.perf_counter() - t0) / len(batch)
        return batch.assign(
            nll_sum=[s.nll_sum for s in scored],
            n_tokens=[s.n_tokens for s in scored],
            score_seconds=per_item,
        )


def select_items(data: TaskData, num_items: int, seed: int, how: str = "random") -> list[int]:
    """``num_items`` test indices (kept in file order), or all of them: a seeded sample, or with
    ``how="longest"`` the items with the longest prompts (a smoke test of position limits and
    memory before a paper-scale run: ``configs/sweeps/cluster-smoke.yaml``)."""
    n = len(data.test)
    if not num_items or num_items >= n:
        return list(range(n))
    if how == "longest":
        lengths = prompt_lengths(data)
        return sorted(sorted(range(n), key=lambda i: -lengths[i])[:num_items])
    return sorted(random.Random(seed).sample(range(n), num_items))


def prompt_lengths(data: TaskData) -> list[int]:
    """Characters of each test item's input plus, for fixed demonstrations (MMLU's 5 dev shots of
    the item's subject), of its demonstrations' inputs: the prompt length before any retrieval."""
    task = data.task
    own = [len(input_text(task, r)) for r in data.test]
    if task.selection != "fixed":
        return own
    shots = fixed_shots(data.test, data.train, task.demonstrations, task.group_field)
    return [o + sum(len(input_text(task, data.train[j])) for j in s) for o, s in zip(own, shots)]


def input_text(task, row: dict) -> str:
    """What the retriever embeds: the input fields joined by a space (OpenICL's input corpus)."""
    return " ".join(str(row[f]) for f in task.input_fields)


def demonstration_indices(data: TaskData, items: list[int], cfg: EvalConfig) -> list[list[int]]:
    task = data.task
    if task.selection == "fixed":
        return fixed_shots([data.test[i] for i in items], data.train, task.demonstrations, task.group_field)
    kw = {"batch_size": cfg.icl.retriever_batch_size}
    with torch_threads(int(cfg.execution.cpus_per_actor)):
        pool = embed([input_text(task, r) for r in data.train], cfg.icl.retriever, **kw)
        query = embed([input_text(task, data.test[i]) for i in items], cfg.icl.retriever, **kw)
    return topk(query, pool, task.demonstrations).tolist()


def context_limit(model_path: str) -> int | None:
    """Positions the model was trained on (OPT's learned table, LLaMA's trained range); None
    when its config names none."""
    from transformers import AutoConfig

    from emo_ray.models import materialize

    mc = AutoConfig.from_pretrained(materialize(model_path))
    return getattr(mc, "max_position_embeddings", None) or getattr(mc, "n_positions", None)


def fit_demonstrations(task, item: dict, demos: list[dict], n_tokens, limit: int | None) -> tuple[list[str] | None, int]:
    """The candidate prompts with as many demonstrations as fit, and how many were dropped.

    Demonstrations are dropped from the end of the list, the farthest retrieved (``topk`` lists
    the nearest first), until every candidate prompt, the longest label included, fits ``limit``
    tokens: what OpenICL's ``PPLInferencer`` does with ``max_model_token_num``
    (``ice_idx_list[idx][:-1]`` until the prompt fits). Past the model's positions OPT indexes
    out of its position table and LLaMA-1 scores outside its trained range. None when even the
    test input alone does not fit."""
    for k in range(len(demos), -1, -1):
        prompts = candidate_prompts(task, item, demos[:k])
        if limit is None or max(n_tokens(p) for p in prompts) <= limit:
            return prompts, len(demos) - k
    return None, len(demos)


def build_rows(data: TaskData, items: list[int], demos: list[list[int]], n_tokens=len,
               limit: int | None = None) -> list[dict]:
    """One row per test item that fits ``limit`` tokens (``n_tokens`` counts a prompt's tokens),
    with the demonstrations kept and the number dropped to fit."""
    task, rows = data.task, []
    for i, d in zip(items, demos):
        prompts, dropped = fit_demonstrations(task, data.test[i], [data.train[j] for j in d], n_tokens, limit)
        if prompts is not None:
            rows.append({"item": i, "gold": data.test[i][task.label_field], "demos": list(d[: len(d) - dropped]),
                         "dropped": dropped, "prompts": prompts})
    return rows


@dataclass
class PreparedTask:
    """One task up to scoring: its items, demonstrations and candidate prompts (the driver's work)."""

    task: Task
    data: TaskData
    items: list[int]
    rows: list[dict]
    limit: int | None
    t_ret: float
    t_prepare: float


def prepare_task(model_path: str, task_name: str, cfg: EvalConfig) -> PreparedTask:
    """Load the task, sample its items, retrieve demonstrations, build the prompts that fit."""
    t0 = time.perf_counter()
    task = load_task(task_name, wording=cfg.icl.wording)
    if cfg.icl.demonstrations >= 0:
        task = replace(task, demonstrations=cfg.icl.demonstrations)
    data = load_task_data(task)
    items = select_items(data, cfg.icl.num_items, cfg.icl.seed, cfg.icl.item_selection)
    t_ret = time.perf_counter()
    demos = demonstration_indices(data, items, cfg)
    t_ret = time.perf_counter() - t_ret
    from emo_ray.models import load_tokenizer, materialize

    # The actor's tokenizer (load_for_eval resolves the name the same way), in the driver.
    tokenizer, limit = load_tokenizer(materialize(model_path)), context_limit(model_path)
    rows = build_rows(data, items, demos, lambda p: len(tokenizer(p)["input_ids"]), limit)
    return PreparedTask(task, data, items, rows, limit, t_ret, time.perf_counter() - t0)


def score_tasks(model_path: str, prepared: list[PreparedTask], cfg: EvalConfig) -> tuple[list[list[dict]], float]:
    """Every task's rows scored in ONE ``map_rows`` call, so one actor pool loads the model once
    for all tasks (a pool per task reloaded it 8 times per actor: ~2 TB of reads for 13B over
    the paper evaluation; issue 27, item 9). Returns each task's scored rows, in its own order,
    and the wall time of the pass. Each item is scored on its own prompts; only the padding of
    the batches it shares with other items (and so float rounding) depends on its neighbours."""
    rows = [{**r, "task": k} for k, p in enumerate(prepared) for r in p.rows]
    t = time.perf_counter()
    scored = map_rows(
        rows, ICLScorer, {"model_path": model_path, "scorer": cfg.icl.scorer, "batch_items": cfg.icl.batch_items},
        execution=cfg.execution, batch_size=max(cfg.icl.batch_items, 4 * cfg.icl.batch_items),
    )
    per_task: list[list[dict]] = [[] for _ in prepared]
    for r in scored:  # map_rows keeps the input order, so each task's rows stay in theirs
        per_task[int(r.pop("task"))].append(r)
    return per_task, time.perf_counter() - t


def evaluate_task(model_path: str, task_name: str, cfg: EvalConfig) -> SectionResult:
    """One task on its own (one pool for it); ``run_evaluation`` scores all tasks in one pool."""
    p = prepare_task(model_path, task_name, cfg)
    [scored], _ = score_tasks(model_path, [p], cfg)
    return task_section(p, scored, cfg)


def task_section(p: PreparedTask, scored: list[dict], cfg: EvalConfig) -> SectionResult:
    """Accuracy, baselines, timings, settings and the per-item table of one scored task. Its
    scoring time is the actor seconds spent on its own rows (the pass is shared between tasks)."""
    task, data, items, limit = p.task, p.data, p.items, p.limit
    t_score = float(sum(r["score_seconds"] for r in scored))
    preds = [
        predict(CandidateNLL(np.asarray(r["nll_sum"], float), np.asarray(r["n_tokens"])), data.label_prior, cfg.icl.normalization)
        for r in scored
    ]
    gold = [r["gold"] for r in scored]
    key = keys.icl_section(task.name)
    metrics = {
        keys.section_key(key, "accuracy"): float(np.mean([p == g for p, g in zip(preds, gold)])),
        keys.section_key(key, "prior_baseline"): prior_baseline(gold, data.label_prior),
        keys.section_key(key, "chance"): 1.0 / len(task.label_words),
        keys.section_key(key, "n_items"): float(len(scored)),
        keys.section_key(key, "n_skipped"): float(len(items) - len(scored)),  # items whose test input alone exceeds the context
        keys.section_key(key, "n_demonstrations_dropped"): float(sum(r["dropped"] for r in scored)),
        keys.section_key(key, "n_items_shortened"): float(sum(r["dropped"] > 0 for r in scored)),
        keys.time_key(key, "retrieve_s"): p.t_ret,
        keys.time_key(key, "score_s"): t_score,
        keys.time_key(key, "score_per_item_s"): t_score / max(1, len(scored)),
        keys.time_key(key, "total_s"): p.t_prepare + t_score,
    }
    retr = "fixed" if task.selection == "fixed" else f"topk({resolve_retriever(cfg.icl.retriever)})"
    params = {
        key: (
            f"wording={cfg.icl.wording} template={task.template!r} label_words={list(task.label_words)} demonstrations={task.demonstrations} "
            f"selection={retr} train={task.train} test={task.test} num_items={len(items)} item_selection={cfg.icl.item_selection} item_seed={cfg.icl.seed} "
            f"scorer={cfg.icl.scorer} normalization={cfg.icl.normalization} tie_break=train_label_prior "
            f"context={limit} (demonstrations dropped, farthest first, to fit)"
        )
    }
    words = task.label_words
    table = pd.DataFrame({
        "item": [r["item"] for r in scored],
        "gold": [words[g] for g in gold],
        "prediction": [words[p] for p in preds],
        "correct": [p == g for p, g in zip(preds, gold)],
        "demos": [list(map(int, r["demos"])) for r in scored],
        "nll_sum": [list(map(float, r["nll_sum"])) for r in scored],
        "n_tokens": [list(map(int, r["n_tokens"])) for r in scored],
        "prompt_for_gold": [r["prompts"][g] for r, g in zip(scored, gold)],
    })
    return SectionResult(metrics, params, {f"icl/{task.name}.json": table})
