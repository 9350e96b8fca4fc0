"""Trial memory reservations on a local CPU Ray: large trials must not run side by side."""
from emo_ray.sweep import get_preset, trials
from emo_ray.sweep.runner import MIN_TRIAL_BYTES, trial_memory
from emo_ray.sweep.spec import trial_config

GB = 2**30
NODE = 17.2 * GB  # Ray's `memory` resource on this 24 GB machine


def _cfg(model, *extra):
    spec = get_preset("cpu")
    t = next(t for t in trials(spec) if t.model == model)
    return trial_config(spec, t, list(extra))


def test_cpu_trials_reserve_memory_by_model_size():
    small, large = trial_memory(_cfg("smollm2-135m"), NODE), trial_memory(_cfg("gemma3-270m"), NODE)
    assert 5 * GB < small < large  # measured: 5.4 GB and 9.8 GB per worker, plus the trial driver
    assert 2 * large > NODE  # two Gemma trials never run at once ...
    assert 2 * small <= NODE  # ... two SmolLM2 trials do


def test_reservation_is_capped_at_the_node_and_token_on_gpu():
    two_workers = _cfg("gemma3-270m", "ray.num_workers=4")
    assert trial_memory(two_workers) > NODE and trial_memory(two_workers, NODE) == int(NODE)
    assert trial_memory(_cfg("gemma3-270m", "ray.use_gpu=true")) == MIN_TRIAL_BYTES
