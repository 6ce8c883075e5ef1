"""Generated MLS vectors for the post-quantum suites (SPEC §6.1): deterministic, equal to
the published files, accepted by ``samizdat-harness vectors``, and a tampered value fails.

Self-consistency only: these are produced by this implementation (SPEC §6.1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.conformance.generate import GENERATORS, generate

PUBLISHED = Path(__file__).parent / "data" / "pq-mls-vectors"


def test_generated_pq_vectors_pass_the_harness(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["vectors", "--generate", str(tmp_path), str(tmp_path)]) == 0
    out = capsys.readouterr().out
    n = 2 * len(GENERATORS)  # one case per PQ suite and kind
    assert f"{n} passed, 0 failed, 0 skipped" in out
    assert "not implemented" not in out and "ERROR" not in out


def test_generation_is_deterministic_and_equals_the_published_files(tmp_path: Path) -> None:
    paths = generate(tmp_path / "a")
    assert sorted(p.name for p in PUBLISHED.glob("*.json")) == sorted(p.name for p in paths)
    for path in paths:
        assert path.read_bytes() == (PUBLISHED / path.name).read_bytes(), path.name
    other = generate(tmp_path / "b", seed=b"another seed")
    assert all(p.read_bytes() != q.read_bytes() for p, q in zip(paths, other, strict=True))


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("key-schedule.json", ("epochs", 1, "external_pub")),
        ("crypto-basics.json", ("encrypt_with_label", "kem_output")),
        ("welcome.json", ("init_priv",)),
        ("passive-client-welcome.json", ("epochs", 2, "epoch_authenticator")),
        ("treekem.json", ("update_paths", 1, "commit_secret")),
    ],
)
def test_a_tampered_pq_vector_fails(
    tmp_path: Path, kind: str, field: tuple[object, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    cases = json.loads((PUBLISHED / kind).read_text())
    node = cases[0]
    for key in field[:-1]:
        node = node[key]
    value = node[field[-1]]
    node[field[-1]] = value[:-2] + ("00" if value[-2:] != "00" else "01")
    (tmp_path / kind).write_text(json.dumps(cases))
    assert main(["vectors", str(tmp_path)]) == 1
    assert "1 passed, 1 failed, 0 skipped" in capsys.readouterr().out
