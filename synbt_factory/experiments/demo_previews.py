"""The demo's ``previews`` step: PNG montages of the synthetic stores and a background / SynTumor / SynBT comparison.

Drawn with :func:`synbt_factory.figures.case_montage`.
"""

from __future__ import annotations

from synbt_factory.experiments.demo_run import DemoRun, StepResult

__all__ = ["step_previews"]


def step_previews(run: DemoRun) -> StepResult:
    """Montages of each synthetic store and a side-by-side of background / SynTumor / SynBT."""
    from synbt_factory.figures import CaseView, case_montage
    from synbt_factory.store import CaseStore

    n = run.config.preview_cases
    outputs: dict[str, str] = {}
    stores = {m: CaseStore.open(run.synthetic(m)) for m in ("syntumor", "synbt")}
    for method, store in stores.items():
        views = []
        for case_id in store.case_ids()[:n]:
            arrays, attrs = store.read_case(case_id, ("image", "mask", "synthetic_mask"))
            views.append(
                CaseView(
                    f"{case_id} ({method}, bg {attrs.get('source_case')})",
                    arrays["image"],
                    arrays["mask"],
                    arrays["synthetic_mask"],
                )
            )
        rel = f"previews/{method}.png"
        case_montage(views, run.path(rel), title=f"{method}: red = all tumor, cyan = synthetic tumor")
        outputs[method] = rel
    # same seed and case index → same background and placement in both stores
    prepared = CaseStore.open(run.prepared)
    views = []
    common = sorted(set(stores["syntumor"].case_ids()) & set(stores["synbt"].case_ids()))[:n]
    for case_id in common:
        syn = {m: stores[m].read_case(case_id, ("image", "mask", "synthetic_mask")) for m in stores}
        background = syn["synbt"][1]["source_case"]
        bg, _ = prepared.read_case(background, ("image", "mask"))
        views.append(CaseView(f"{background} (background)", bg["image"], bg["mask"], syn["synbt"][0]["synthetic_mask"]))
        for method in ("syntumor", "synbt"):
            arrays = syn[method][0]
            views.append(CaseView(f"{case_id} {method}", arrays["image"], arrays["mask"], arrays["synthetic_mask"]))
    if views:
        case_montage(
            views, run.path("previews/compare.png"), title="background, SynTumor, SynBT (cyan: the placed tumor)"
        )
        outputs["compare"] = "previews/compare.png"
    return outputs, {"rows": n, "headline": f"{len(outputs)} PNGs"}
