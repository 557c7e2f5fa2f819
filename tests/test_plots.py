"""Figure helpers: the capability figure is a radar only when it has the three axes a radar needs."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from lm2 import plots  # noqa: E402


@pytest.mark.parametrize(("groups", "kind"), [(1, "rectilinear"), (2, "rectilinear"), (3, "polar"), (5, "polar")])
def test_capability_figure_is_a_radar_only_with_three_groups_or_more(
    tmp_path: Path, monkeypatch, groups: int, kind: str
) -> None:
    names = list(plots.CAPABILITY_GROUPS)[:groups]
    scores = {"LM2": {g: 50.0 + i for i, g in enumerate(names)}, "vanilla": {g: 20.0 for g in names}}
    drawn = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig) or save(fig, path))
    path = plots.capability_radar(scores, tmp_path / "fig3.png")
    assert path.stat().st_size > 5000
    (ax,) = drawn[0].axes[:1]
    assert ax.name == kind
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == names
    with pytest.raises(ValueError, match="no capability group"):
        plots.capability_radar({"LM2": {}}, tmp_path / "none.png")
