"""Where sampling time goes in fp32 and bf16 (the real ``Sampler``, SmolLM2-135M, 16 WikiText-2
prompts x 48 tokens, ancestral, one thread): CPU seconds and the top ops by self CPU time.

    python benchmarks/profile_sampling_bf16.py      # -> results/sampling_bf16_profile.csv
"""
import os, time
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch, pandas as pd
torch.set_num_threads(1)
from torch.profiler import profile, ProfilerActivity
from emo_ray.models import materialize, load_tokenizer
from emo_ray.evaluation.corpora import get_corpus
from emo_ray.evaluation.prompts import make_prompts
from emo_ray.inference.sampler import Sampler
path = materialize("smollm2-135m"); tok = load_tokenizer(path)
prompts, _ = make_prompts(get_corpus("wikitext-2"), tok, num_prompts=16, seed=0)
rows = pd.DataFrame([{"prompt_id": p.prompt_id, "seed": 0, "decoder": "ancestral", "prefix_ids": p.prefix_ids} for p in prompts])
rows_out = []
for dt in ("fp32", "bf16"):
    s = Sampler(path, gen_tokens=48, threads=1, dtype=dt); s(rows.iloc[:2])
    c0 = time.process_time()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        s(rows)
    cpu = time.process_time() - c0
    ev = prof.key_averages(); tot = sum(e.self_cpu_time_total for e in ev)
    top = sorted(ev, key=lambda e: -e.self_cpu_time_total)[:7]
    rows_out.append({"dtype": dt, "cpu_s": f"{cpu:.2f}",
                     "top_ops": "; ".join(f"{e.key} {e.self_cpu_time_total/tot:.0%}" for e in top)})
    print(rows_out[-1], flush=True)
from _results import RESULTS, write_csv
out = RESULTS / "sampling_bf16_profile.csv"
write_csv(out, rows_out)
print(f"wrote {out}")
