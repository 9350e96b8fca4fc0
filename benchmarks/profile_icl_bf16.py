"""Where ICL scoring time goes in fp32 and bf16, and what a bf16 output head would buy.

The ICL goal of issue 11 (>= 1.8x in bf16) is missed at 1.6x over 200 items; this profiles the
real scorer (``score_shared_prefix``, SmolLM2-135M, SST-2, 8 retrieved demonstrations, one
thread) in three settings, on the same items:

* ``fp32``: everything fp32 (the reference);
* ``bf16``: bf16 body, fp32 head (``Fp32Head``: what ``execution.dtype=bf16`` runs);
* ``bf16_head``: bf16 body and head (``load_for_eval(..., fp32_head=False)``), log-softmax in fp32.

For each: CPU seconds per item, the share of CPU time in the head matmul, in the body's matmuls
and in the rest (torch.profiler, self CPU time by op), and the agreement of predictions with fp32.

    python benchmarks/profile_icl_bf16.py [--items 48]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from _results import RESULTS, print_markdown, write_csv  # noqa: E402

SETTINGS = {"fp32": ("fp32", True), "bf16": ("bf16", True), "bf16_head": ("bf16", False)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=48)
    ap.add_argument("--out", default=os.path.join(RESULTS, "icl_bf16_profile.csv"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from torch.profiler import ProfilerActivity, profile, record_function

    from emo_ray.evaluation.config import EvalConfig, ICLConfig
    from emo_ray.evaluation.icl.evaluate_task import build_rows, demonstration_indices, select_items
    from emo_ray.evaluation.icl.predict import predict
    from emo_ray.evaluation.icl.scorer import CandidateNLL, score_shared_prefix
    from emo_ray.evaluation.icl.tasks import load_task, load_task_data
    from emo_ray.models import materialize
    from emo_ray.models.loading import load_for_eval

    path = materialize("smollm2-135m")
    data = load_task_data(replace(load_task("sst2"), demonstrations=8))
    items = select_items(data, args.items, 0)
    rows = build_rows(data, items, demonstration_indices(data, items, EvalConfig(icl=ICLConfig(retriever="all-minilm-l6-v2"))))
    print(f"{len(rows)} SST-2 items, load average {os.getloadavg()[0]:.1f}", flush=True)

    results, preds = [], {}
    for name, (dtype, fp32_head) in SETTINGS.items():
        model, tok = load_for_eval(path, "cpu", dtype=dtype, fp32_head=fp32_head)
        head = model.get_output_embeddings()
        head.register_forward_pre_hook(lambda m, a: setattr(m, "_rf", record_function("HEAD").__enter__()))
        head.register_forward_hook(lambda m, a, o: m._rf.__exit__(None, None, None))
        enc = [[tok(p)["input_ids"] for p in r["prompts"]] for r in rows]
        score_shared_prefix(model, enc[:2], batch_items=4)  # warm-up
        c0 = time.process_time()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            scored = [s for i in range(0, len(enc), 4) for s in score_shared_prefix(model, enc[i:i + 4], batch_items=4)]
        cpu = time.process_time() - c0
        preds[name] = [predict(CandidateNLL(np.asarray(s.nll_sum), np.asarray(s.n_tokens)), data.label_prior)
                       for s in scored]
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        head_total = next((e.cpu_time_total for e in events if e.key == "HEAD"), 0.0)
        mm = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul"))
        head_share = head_total / total
        results.append({
            "setting": name, "items": len(rows), "cpu_s_per_item": f"{cpu / len(rows):.3f}",
            "head_share": f"{head_share:.1%}",
            "matmul_share_incl_head": f"{mm / total:.1%}",
            "agreement_vs_fp32": f"{np.mean(np.array(preds[name]) == np.array(preds['fp32'])):.1%}",
            "top_ops": "; ".join(f"{e.key} {e.self_cpu_time_total / total:.0%}"
                                 for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:5]),
        })
        print(results[-1], flush=True)
        del model
    base = float(results[0]["cpu_s_per_item"])
    for r in results:
        r["speedup_cpu_vs_fp32"] = f"{base / float(r['cpu_s_per_item']):.2f}"
    write_csv(args.out, results)
    print_markdown(results, ["setting", "cpu_s_per_item", "speedup_cpu_vs_fp32", "head_share", "matmul_share_incl_head",
                             "agreement_vs_fp32"])
    print(f"wrote {args.out}; load average now {os.getloadavg()[0]:.1f}")
    return pd.DataFrame(results)


if __name__ == "__main__":
    main()
