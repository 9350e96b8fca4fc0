"""Filled prompts of one test item, laid out as OpenICL does for a template with an ice token:

    instruction + demo_1 + separator + ... + demo_k + demo_end + test item filled with candidate label

Each demonstration is the template filled with the demonstration's own gold label word.
"""
from __future__ import annotations

from emo_ray.evaluation.icl.tasks import Task, fill, fill_instruction


def demonstrations_text(task: Task, demos: list[dict]) -> str:
    if not demos:
        return ""
    words = task.label_words
    filled = [fill(task.template, d, words[d[task.label_field]], where=f"task {task.name!r}: ") for d in demos]
    return task.separator.join(filled) + task.demo_end


def candidate_prompts(task: Task, item: dict, demos: list[dict]) -> list[str]:
    """One prompt per label word, in label order."""
    head = fill_instruction(task.instruction, item, where=f"task {task.name!r}: ") + demonstrations_text(task, demos)
    return [head + fill(task.template, item, w, where=f"task {task.name!r}: ") for w in task.label_words]
