"""Screenshot of an MLflow experiment, for the README: the objectives side by side.

    python scripts/mlflow_screenshot.py --tracking-uri sqlite:////tmp/objectives/mlflow.db \\
        --experiment emo-ray-objectives --out docs/images/mlflow_runs.png

Starts ``mlflow server`` on 127.0.0.1 (a free port) against the store, opens the page in
headless Chromium (Debian: ``apt-get install chromium``) and saves a PNG, then stops exactly the
server it started (its own process group, by PID). Views:

* ``runs`` (default): the experiment's runs table (``#/experiments/<id>/runs``, table mode);
* ``charts``: the same page in chart mode (one chart per metric, a bar or curve per run);
* ``compare``: MLflow's run comparison page for the experiment's runs: params and metrics of
  every run side by side (``#/compare-runs?runs=[...]``).

``--sweep <parent run id>`` opens the page a finished sweep prints at its end: its shared view
(trials as flat rows, headline metrics as columns), written on the experiment by the report.
``--query`` appends any other runs-page URL state (e.g. ``viewStateShareKey=<key>``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"mlflow server at {base} not healthy after {timeout:.0f} s")


# The browser reaches the loopback server under this name (Chromium maps it to 127.0.0.1): MLflow
# 3.17 auto-opens its Assistant side panel, which covers a third of the page, only for pages
# served as localhost / 127.0.0.1.
BROWSER_HOST = "mlflow-runs.test"


def page_url(base: str, experiment_id: str, run_ids: list[str], view: str, query: str = "") -> str:
    if view == "compare":
        q = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([experiment_id])})
        return f"{base}/#/compare-runs?{q}"
    mode = "CHART" if view == "charts" else "TABLE"
    extra = "&".join(part for part in query.split("&") if part and not part.startswith("compareRunsMode="))
    return f"{base}/#/experiments/{experiment_id}/runs?compareRunsMode={mode}" + (f"&{extra}" if extra else "")


def sweep_view_query(client, experiment_id: str, parent_run_id: str) -> str:
    """The URL query of the shared view the sweep's report wrote (the link the sweep prints)."""
    from emo_ray.report.mlflow_view import SHARED_VIEW_TAG, share_key

    key = share_key(parent_run_id)
    if SHARED_VIEW_TAG + key not in client.get_experiment(experiment_id).tags:
        raise SystemExit(f"no shared view for sweep {parent_run_id} in this experiment: run `emo-ray report` on it first")
    return f"viewStateShareKey={key}"


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError("no chromium: apt-get install -y chromium")


def screenshot(url: str, out: str, *, width: int, height: int, budget_ms: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--host-resolver-rules=MAP {BROWSER_HOST} 127.0.0.1",
               f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--virtual-time-budget={budget_ms}", f"--screenshot={os.path.abspath(out)}", url]
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracking-uri", required=True, help="the MLflow store, e.g. sqlite:////tmp/x/mlflow.db")
    p.add_argument("--experiment", required=True, help="experiment name")
    p.add_argument("--out", default="docs/images/mlflow_runs.png")
    p.add_argument("--view", choices=("runs", "charts", "compare"), default="runs")
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=900)
    p.add_argument("--sweep", metavar="PARENT_RUN_ID", help="open this sweep's shared view (the link it prints)")
    p.add_argument("--query", default="", help="extra runs-page URL state, e.g. viewStateShareKey=<key>")
    p.add_argument("--budget-ms", type=int, default=20000, help="Chromium's virtual time budget for the page")
    args = p.parse_args(argv)

    from mlflow import MlflowClient

    client = MlflowClient(args.tracking_uri)
    exp = client.get_experiment_by_name(args.experiment)
    if exp is None:
        raise SystemExit(f"no experiment {args.experiment!r} in {args.tracking_uri}")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    run_ids = [r.info.run_id for r in runs]
    query = "&".join(q for q in (sweep_view_query(client, exp.experiment_id, args.sweep) if args.sweep else "",
                                 args.query) if q)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with tempfile.TemporaryDirectory() as artifacts:
        log_path = os.path.join(artifacts, "server.log")
        log = open(log_path, "w")
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", args.tracking_uri,
             "--default-artifact-root", artifacts, "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--allowed-hosts", f"127.0.0.1:{port},localhost:{port},{BROWSER_HOST}:{port}",
             "--cors-allowed-origins", f"http://{BROWSER_HOST}:{port}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            # no background job consumers (GenAI features; scripts/mlflow_server.sh says why)
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        try:
            try:
                wait_healthy(base, server)
            except (RuntimeError, TimeoutError):
                log.flush()
                print(open(log_path).read()[-3000:], file=sys.stderr)
                raise
            url = page_url(f"http://{BROWSER_HOST}:{port}", exp.experiment_id, run_ids, args.view, query)
            screenshot(url, args.out, width=args.width, height=args.height, budget_ms=args.budget_ms)
        finally:
            # Exactly the server started here: its own session / process group (uvicorn workers).
            try:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(server.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            log.close()
    print(f"{args.out}: {len(run_ids)} runs of {args.experiment!r} ({url})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
