"""The docs: tables rendered from their records, every link and image resolving, every image shown, a short README."""

import re
from pathlib import Path

import pytest

from conftest import ROOT
from diffusion import render

LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_every_rendered_table_matches_its_records():
    assert render.stale() == [], "run `python -m diffusion.render` after changing a record"


def test_a_changed_record_makes_its_table_stale(tmp_path, monkeypatch):
    doc = tmp_path / "README.md"
    doc.write_text("<!-- table: seeds pretrained/fashion/metrics.json -->\n| old |\n<!-- /table -->\n")
    monkeypatch.setattr(render, "documents", lambda: [doc])
    monkeypatch.setattr(render, "ROOT", tmp_path)
    (tmp_path / "pretrained" / "fashion").mkdir(parents=True)
    record = (ROOT / "pretrained" / "fashion" / "metrics.json").read_text()
    (tmp_path / "pretrained" / "fashion" / "metrics.json").write_text(record)
    assert render.stale() == ["README.md: seeds pretrained/fashion/metrics.json"]
    assert render.main([]) == 0 and render.stale() == []
    assert "| mean ± std | 25.00 ± 0.26 |" in doc.read_text()
    (tmp_path / "pretrained" / "fashion" / "metrics.json").write_text(record.replace("25.004264", "26.004264"))
    assert render.main(["--check"]) == 1 and render.stale() != []


def test_an_unknown_table_kind_is_one_line(tmp_path, monkeypatch, capsys):
    doc = tmp_path / "x.md"
    doc.write_text("<!-- table: nonsense -->\n<!-- /table -->\n")
    monkeypatch.setattr(render, "documents", lambda: [doc])
    assert render.main([]) == 1
    assert "no table kind 'nonsense'" in capsys.readouterr().err


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md")), *sorted(ROOT.glob("pretrained/*/README.md"))]


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_and_image_resolves(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)  # code blocks hold commands, not links
    targets = [t.split("#")[0] for t in LINK.findall(text) if not re.match(r"[a-z]+:|#", t)]
    missing = [t for t in targets if not (doc.parent / t).exists()]
    assert not missing


def test_every_image_in_docs_images_is_shown_somewhere():
    shown = {(doc.parent / t).resolve() for doc in markdown_files() for t in LINK.findall(doc.read_text())}
    unused = [p.name for p in sorted((ROOT / "docs" / "images").iterdir()) if p.resolve() not in shown]
    assert not unused


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    assert any(line.startswith("make train") for line in lines) and any(line.startswith("make test") for line in lines)


def test_the_sweep_tables_render_from_a_sweeps_committed_records(tmp_path, monkeypatch):
    """docs/results.md's Tables 2 and 3 and the points table come from records under results/ (diffusion.report)."""
    import json

    from diffusion.runs import write_status

    point = tmp_path / "results" / "small" / "0-schedule=linear,timesteps=1000"
    for w, fid in ((0.2, 3.5), (0, 4.5), (0.5, 5.5)):
        folder = point / "eval" / "fast" / f"guidance={w}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({
            "data": "mnist", "schedule": "linear", "timesteps": 1000, "guidance": w, "step": 5000, "seed": 42,
            "evaluation": "fast", "num_samples": 2000, "fid": fid, "fid_inception": 10 * fid, "is": 9.5,
            "class_accuracy": 0.99, "sampler": "dpm_solver", "sampler_steps": 20}))
    write_status(point, "ok", metrics={"global_step": 5000, "fit_images": 160000, "fit_seconds": 1500.0,
                                       "fit_images_per_s": 106.7, "eval_seconds": 900.0})
    monkeypatch.setattr(render, "ROOT", tmp_path)
    table2 = render.TABLES["paper_table"](tmp_path / "doc.md", "results/small", "2")
    assert "| linear | 1000 | 0.2 | 16.19 / 9.56 | 35 / 3.5 / 9.5 |" in table2 and "| cosine | 4000 | 0.2 |" in table2
    table3 = render.TABLES["paper_table"](tmp_path / "doc.md", "results/small", "3")
    assert "| linear | 1000 | 0 | 21.12 / 9.13 | 45 / 4.5 / 9.5 |" in table3
    points = render.TABLES["sweep_points"](tmp_path / "doc.md", "results/small")
    assert "| 0-schedule=linear,timesteps=1000 | ok | 5,000 | 160,000 | 25 min 00 s | 106.7 | 15 min 00 s |" in points
