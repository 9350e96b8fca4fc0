"""CI must install exactly as the README says and run the README's test command."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, re.S)


def test_ci_runs_the_readme_commands():
    install_and_run, test_cmd = readme_commands()[:2]
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    steps = [s.strip() for s in install_and_run.split("&&")]
    installs = [s for s in steps if s.startswith("pip install")]
    assert installs and all(s in ci_lines for s in installs), (installs, ci_lines)
    assert any(s.startswith("emo-ray ") for s in steps)  # the main job on the embedded default
    assert test_cmd.strip() in ci_lines
