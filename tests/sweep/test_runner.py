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


def test_cluster_concurrency_comes_from_the_capacity_the_autoscaler_can_reach(tmp_path):
    """An autoscaling cluster has no GPU node when the sweep starts: the concurrency must come from
    the node types it can launch (cluster.yaml: 2 x p4d with 8 GPUs, 4 x g5 with 4), not from 0."""
    import shutil

    from emo_ray.sweep.runner import reachable_resources, sweep_concurrency
    from emo_ray.typed_config import REPO_ROOT

    sweep = load_sweep_config("paper")
    cfg = trial_config(sweep, trials(sweep)[0])  # 8 GPU workers per trial
    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    shutil.copy(REPO_ROOT / "cluster.yaml", bootstrap)
    head_only = {"CPU": 0.0, "memory": 3e10}  # what ray.cluster_resources() shows at the start
    reach = reachable_resources(head_only, str(bootstrap))
    assert reach["GPU"] == 2 * 8 + 4 * 4
    assert sweep_concurrency(sweep, cfg, head_only, str(bootstrap)) == 32 // 8
    assert sweep_concurrency(sweep, cfg, head_only, str(tmp_path / "absent.yaml")) == 1  # no autoscaler: what is up
    assert sweep_concurrency(sweep, cfg, {"GPU": 64.0}, str(bootstrap)) == 8  # more up than the config says
    pinned = load_sweep_config("paper", ["max_concurrent_trials=3"])
    assert sweep_concurrency(pinned, cfg, head_only, str(bootstrap)) == 3


def test_the_autoscalers_worker_budget_caps_the_node_types(tmp_path):
    import yaml

    from emo_ray.sweep.runner import reachable_resources

    conf = {"max_workers": 3, "head_node_type": "head",
            "available_node_types": {"head": {"resources": {"CPU": 0}, "max_workers": 0},
                                     "gpu": {"resources": {"CPU": 8, "GPU": 4}, "max_workers": 10}}}
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(conf))
    assert reachable_resources({}, str(path)) == {"CPU": 24, "GPU": 12}


def test_the_worker_budget_is_shared_across_node_types(tmp_path):
    import yaml

    from emo_ray.sweep.runner import reachable_resources

    conf = {"max_workers": 3, "head_node_type": "head",
            "available_node_types": {"head": {"resources": {"CPU": 0}, "max_workers": 0},
                                     "small": {"resources": {"GPU": 1}, "max_workers": 5},
                                     "big": {"resources": {"GPU": 8}, "max_workers": 2}}}
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(conf))
    assert reachable_resources({}, str(path))["GPU"] == 2 * 8 + 1 * 1
