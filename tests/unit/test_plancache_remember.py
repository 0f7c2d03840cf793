"""PlanCache.remember keeps only a clean plan's outputs, and renders them only for one: a plan of
a thousand changes is never rendered in every format just to be thrown away."""

from __future__ import annotations

import json
from types import SimpleNamespace

from reconciler.plancache import Measured, PlanCache


def measured() -> Measured:
    return Measured(
        args={},
        manifests="m",
        kustomized_files=[],
        state="s",
        kernel="k",
        namespaces=[None],
        host_calls=[],
        objects={},
        paths={},
    )


def plan(**kw: object) -> SimpleNamespace:
    base = dict(has_changes=False, errors=[], warnings=[], drift=[], targeted=False, destroy=False)
    return SimpleNamespace(**{**base, **kw})


def test_a_plan_with_changes_is_not_rendered_and_drops_the_entry(tmp_path) -> None:
    cache = PlanCache(tmp_path, {})
    entry = cache.dir / cache.name
    cache.remember(measured(), plan(), lambda: {"text": ["clean"]})  # type: ignore[arg-type]
    assert json.loads(entry.read_text())["outputs"] == {"text": ["clean"]}

    def never() -> dict[str, object]:
        raise AssertionError("the outputs of a plan that is not kept were rendered")

    for unclean in (
        plan(has_changes=True),
        plan(errors=["e"]),
        plan(warnings=["w"]),
        plan(drift=["d"]),
        plan(targeted=True),
        plan(destroy=True),
    ):
        cache.remember(measured(), unclean, never)  # type: ignore[arg-type]
        assert not entry.exists()
        cache.remember(measured(), plan(), lambda: {})  # type: ignore[arg-type]
    cache.remember(None, plan(), never)  # type: ignore[arg-type]
    assert not entry.exists()
