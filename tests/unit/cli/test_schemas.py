import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def lifecycle_v1() -> dict:
    return json.loads((REPO / "schemas" / "lifecycle-event" / "v1.avsc").read_text())


def test_compatible_proposal_exits_zero(tmp_path: Path) -> None:
    schema = lifecycle_v1()
    schema["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
    proposal = tmp_path / "v2.avsc"
    proposal.write_text(json.dumps(schema))
    result = run("schemas", "check", str(proposal), "--subject", "lifecycle-event")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "compatible with lifecycle-event (BACKWARD_TRANSITIVE" in result.stdout


def test_incompatible_proposal_names_each_problem_on_its_own_line(tmp_path: Path) -> None:
    schema = lifecycle_v1()
    schema["fields"].append({"name": "region", "type": "string"})
    for f in schema["fields"]:
        if f["name"] == "attempt":
            f["type"], f["default"] = "string", ""
    proposal = tmp_path / "v2.avsc"
    proposal.write_text(json.dumps(schema))
    result = run("schemas", "check", str(proposal), "--subject", "lifecycle-event")
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert any(line.startswith("/fields/region:") for line in lines)
    assert any(line.startswith("/fields/attempt/type:") for line in lines)


def test_a_default_of_the_wrong_type_is_one_plain_line(tmp_path: Path) -> None:
    schema = lifecycle_v1()
    for f in schema["fields"]:
        if f["name"] == "attempt":
            f["type"] = "string"  # default 0 no longer fits
    proposal = tmp_path / "v2.avsc"
    proposal.write_text(json.dumps(schema))
    result = run("schemas", "check", str(proposal), "--subject", "lifecycle-event")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Default value" in result.stderr


def test_bad_input_is_one_plain_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.avsc"
    broken.write_text("{not json")
    result = run("schemas", "check", str(broken), "--subject", "lifecycle-event")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "not a valid Avro schema" in result.stderr
    unknown = run("schemas", "check", str(broken), "--subject", "nope")
    assert unknown.returncode == 2
    assert "Traceback" not in unknown.stderr
