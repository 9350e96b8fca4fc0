"""Trial memory reservations on a local CPU Ray: large trials must not run side by side."""
from emo_ray.sweep import load_sweep_config, trial_config, trials
from emo_ray.sweep.runner import MIN_TRIAL_BYTES, trial_memory

GB = 2**30
NODE = 17.2 * GB  # Ray's `memory` resource on this 24 GB machine


def _cfg(model, **extra):
    sweep = load_sweep_config("cpu")
    t = next(t for t in trials(sweep) if t.model == model)
    return trial_config(sweep, t, {"ray": extra} if extra else None)


def test_cpu_trials_reserve_memory_by_model_size():
    small, large = trial_memory(_cfg("smollm2-135m"), NODE), trial_memory(_cfg("gemma3-270m"), NODE)
    assert 5 * GB < small < large  # measured: 5.4 GB and 9.8 GB per worker, plus the trial driver
    assert 2 * large > NODE  # two Gemma trials never run at once ...
    assert 2 * small <= NODE  # ... two SmolLM2 trials do


def test_reservation_is_capped_at_the_node_and_token_on_gpu():
    two_workers = _cfg("gemma3-270m", num_workers=4)
    assert trial_memory(two_workers) > NODE and trial_memory(two_workers, NODE) == int(NODE)
    assert trial_memory(_cfg("gemma3-270m", use_gpu=True)) == MIN_TRIAL_BYTES


def test_cluster_concurrency_is_counted_per_node_type(tmp_path):
    """An autoscaling cluster has no GPU node when the sweep starts: the concurrency comes from the
    node types it can launch, per type. cluster.yaml: 2 x p4d (8 GPUs), 4 x g5 (4 GPUs); an
    8-GPU paper trial fits only a p4d node (never 4 + 4 GPUs on two g5), so 2 at once, not 32 // 8."""
    import shutil

    from emo_ray.sweep.runner import sweep_concurrency
    from emo_ray.typed_config import REPO_ROOT

    sweep = load_sweep_config("paper")
    configs = [trial_config(sweep, t) for t in trials(sweep)]  # 8 GPU workers per trial
    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    shutil.copy(REPO_ROOT / "cluster.yaml", bootstrap)
    head_only = {"CPU": 0.0, "memory": 3e10}  # what ray.cluster_resources() shows at the start
    assert sweep_concurrency(sweep, configs, head_only, str(bootstrap)) == 2
    assert sweep_concurrency(sweep, configs, head_only, str(tmp_path / "absent.yaml")) == 1  # no autoscaler: what is up
    assert sweep_concurrency(sweep, configs, {"GPU": 64.0}, str(tmp_path / "absent.yaml")) == 8  # a static cluster
    pinned = load_sweep_config("paper", ["max_concurrent_trials=3"])
    assert sweep_concurrency(pinned, configs, head_only, str(bootstrap)) == 3


def test_the_paper_dry_run_says_how_many_trials_run_at_once_and_where():
    from emo_ray.sweep.runner import describe

    text = describe(load_sweep_config("paper"))
    assert "placement on cluster.yaml: 2 trials at once" in text
    rows = [line for line in text.splitlines() if "accelerator_type=" in line]
    assert len(rows) == 4  # one per model of the paper's scale axis
    assert all("accelerator_type=A100 on ray.worker.a100x8" in r and "1 per node x 2 nodes" in r for r in rows)
