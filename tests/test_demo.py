"""``synbt demo`` end to end with minimal budgets: stores verify, the table is sane, reruns resume."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from synbt_factory.experiments.demo import DemoConfig, demo_preset, read_marker, run_demo

pytestmark = pytest.mark.slow


def smoke_config() -> DemoConfig:
    """Every stage with 2–4 steps on 6 tiny phantom cases (one of them in the test split)."""
    return demo_preset(
        "tiny",
        name="smoke",
        n_cases=6,
        healthy_fraction=0.0,
        vqvae_patch_steps=4,
        vqvae_volume_steps=2,
        vqvae_eval_cases=1,
        diffusion_steps=4,
        tissue_steps=3,
        n_generate=2,
        ddim_steps=2,
        generate_batch_size=2,
        seg_epochs=2,
        seg_samples_per_epoch=2,
        preview_cases=2,
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("demo") / "run"
    config = smoke_config()
    result = run_demo(out, preset=config, device="cpu", seed=0)
    return out, config, result


def _snapshot(out: Path) -> dict[str, tuple[int, bytes]]:
    """mtime and bytes of every marker, and mtimes of the checkpoints the steps wrote."""
    files = [
        *sorted((out / "steps").glob("*.done.json")),
        *sorted(out.glob("**/final.pt")),
        *sorted(out.glob("**/best.pt")),
    ]
    return {
        str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes() if p.suffix == ".json" else b"") for p in files
    }


def test_every_step_runs_and_leaves_a_marker(demo_run) -> None:
    out, config, result = demo_run
    assert [s.name for s in result.steps] == list(config.step_names())
    for step in result.steps:
        assert not step.skipped, step.name
        marker = read_marker(out, step.name)
        assert marker is not None and marker["step"] == step.name
        # the marker names the step's outputs, relative to the run folder, so a rerun can skip the step
        assert {k: out / v for k, v in marker["outputs"].items()} == step.outputs
        for path in step.outputs.values():
            assert path.exists(), f"{step.name}: {path}"
    for png in (
        "phantom/phantom_preview.png",
        "vqvae/eval/vqvae_reconstruction.png",
        "previews/synbt.png",
        "previews/syntumor.png",
        "previews/compare.png",
    ):
        assert (out / png).stat().st_size > 1000, png


def test_synthetic_stores_verify(demo_run) -> None:
    from synbt_factory.store import CaseStore
    from synbt_factory.store.verify import verify_store

    out, config, _ = demo_run
    for method in ("synbt", "syntumor"):
        location = out / f"synthetic_{method}.zarr"
        report = verify_store(location)
        assert report.ok, (method, report)
        store = CaseStore.open(location)
        ids = store.case_ids()
        assert len(ids) == config.n_generate
        arrays, attrs = store.read_case(ids[0], ("image", "synthetic_mask"))
        assert attrs["method"] == method and attrs["split"] == "train"
        assert arrays["synthetic_mask"].any()
    # same seed and case index: both methods place the same tumor in the same background
    a = CaseStore.open(out / "synthetic_synbt.zarr").read_case("SYN_000000", ("synthetic_mask",))
    b = CaseStore.open(out / "synthetic_syntumor.zarr").read_case("SYN_000000", ("synthetic_mask",))
    assert a[1]["source_case"] == b[1]["source_case"]
    assert (a[0]["synthetic_mask"] == b[0]["synthetic_mask"]).all()


def test_eval_table_has_every_arm_with_dice_in_range(demo_run) -> None:
    out, config, result = demo_run
    with open(out / "eval_table.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["arm"] for r in rows] == list(config.seg_arms)
    assert {"real", "synbt"} <= {r["arm"] for r in rows}
    for row in rows:
        dice = float(row["dice_mean"])
        assert math.isfinite(dice) and 0.0 <= dice <= 1.0, row
        assert int(row["n_cases"]) >= 1
        assert float(row["mix"]) == (0.0 if row["arm"] == "real" else config.seg_mix)
    markdown = (out / "eval_table.md").read_text()
    for row in rows:
        assert row["method"] in markdown
    assert [r["arm"] for r in result.table_rows] == list(config.seg_arms)
    # the synthetic arm really trained with the synthetic store
    import json

    saved = json.loads((out / "segment/synbt/train/config.json").read_text())
    assert saved["synthetic"].endswith("synthetic_synbt.zarr") and saved["data"]["mix"] == config.seg_mix
    assert json.loads((out / "segment/real/train/config.json").read_text())["synthetic"] is None


def test_second_run_skips_every_step(demo_run) -> None:
    out, config, first = demo_run
    before = _snapshot(out)
    assert len(before) > len(config.step_names())
    again = run_demo(out, preset=config, device="cpu", seed=0)
    assert all(s.skipped for s in again.steps), [s.name for s in again.steps if not s.skipped]
    assert [s.outputs for s in again.steps] == [s.outputs for s in first.steps]  # skipped steps report their outputs
    assert _snapshot(out) == before  # no marker rewritten, no checkpoint touched
    assert again.table_rows == first.table_rows


def test_a_removed_marker_reruns_that_step_and_the_ones_after(demo_run) -> None:
    out, config, _ = demo_run
    (out / "steps" / "previews.done.json").unlink()
    names = list(config.step_names())
    result = run_demo(out, preset=config, device="cpu", seed=0)
    ran = [s.name for s in result.steps if not s.skipped]
    assert ran == names[names.index("previews") :]
    assert all(read_marker(out, n) is not None for n in names)
    # the segmenters resumed from their finished checkpoints: same step count as before
    for arm in config.seg_arms:
        assert result.step(f"segment_{arm}").info["steps"] == config.seg_steps


def test_other_settings_are_refused(demo_run) -> None:
    out, config, _ = demo_run
    with pytest.raises(ValueError, match="other settings"):
        run_demo(out, preset=config, device="cpu", seed=1)


def test_cli_reports_a_mismatched_folder(demo_run) -> None:
    import typer
    from typer.testing import CliRunner

    from cli.demo import demo

    out, _, _ = demo_run
    app = typer.Typer()
    app.command()(demo)
    result = CliRunner().invoke(app, ["--out", str(out), "--preset", "tiny", "--device", "cpu"])
    assert result.exit_code == 2
    assert "other settings" in " ".join(result.output.split())  # rich wraps long lines


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="seg_arms"):
        demo_preset("tiny", seg_arms=("synbt",))
    with pytest.raises(ValueError, match="n_cases"):
        demo_preset("tiny", n_cases=2)
    with pytest.raises(ValueError, match="unknown demo preset"):
        demo_preset("huge")


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_every_preset_builds_valid_library_configs(tmp_path: Path, preset: str) -> None:
    """The library configs each step would run with are valid (no training, no IO)."""
    from synbt_factory.experiments.demo import DEMO_PRESETS, DemoRun

    config = DEMO_PRESETS[preset]
    run = DemoRun(tmp_path, config, device="cpu", seed=0, progress_factory=lambda _: None)  # type: ignore[arg-type]
    for stage, steps in (("patch", config.vqvae_patch_steps), ("volume", config.vqvae_volume_steps)):
        assert run.vqvae_configs(stage)[1].steps == steps
    assert run.diffusion_configs()[1].steps == config.diffusion_steps
    assert run.tissue_config().steps == config.tissue_steps
    for method in ("syntumor", "synbt"):
        assert run.generate_config(method).n == config.n_generate
    seg = {arm: run.segment_config(arm) for arm in config.seg_arms}
    assert seg["real"].data.mix == 0.0 and seg["real"].synthetic is None
    for arm, cfg in seg.items():
        assert tuple(cfg.data.crop) == tuple(config.seg_crop)
        # same budget, seed and split for every arm: only the training data differ
        assert (cfg.epochs, cfg.data.samples_per_epoch, cfg.seed, cfg.split_seed, cfg.lr) == (
            seg["real"].epochs,
            seg["real"].data.samples_per_epoch,
            seg["real"].seed,
            seg["real"].split_seed,
            seg["real"].lr,
        )
        if arm != "real":
            assert cfg.data.mix == config.seg_mix and cfg.synthetic.endswith(f"synthetic_{arm}.zarr")


def test_shipped_generators_are_installed_and_marked(demo_run) -> None:
    """The default demo installs the shipped, sha256-pinned VQ-VAE and denoiser instead of training them."""
    from synbt_factory.checkpoint import file_sha256
    from synbt_factory.pretrained import PRETRAINED_SHA256

    out, _, result = demo_run
    pinned = PRETRAINED_SHA256["phantom_tiny"]
    for step, component, rel in (
        ("vqvae_patch", "vqvae_patch", "vqvae/patch/final.pt"),
        ("vqvae_volume", "vqvae_volume", "vqvae/volume/final.pt"),
        ("diffusion", "diffusion", "diffusion/final.pt"),
    ):
        assert file_sha256(out / rel) == pinned[component]
        assert result.step(step).info["sha256"] == pinned[component]
    realism = result.step("realism").info
    assert set(realism) >= {"synbt", "syntumor", "headline"}
    assert (out / "realism/synbt/montage.png").is_file() and (out / "realism/synbt/report.json").is_file()


def test_from_scratch_trains_the_generators_with_the_cpu_recipe_and_validates_the_phantom() -> None:
    scratch = demo_preset("tiny", from_scratch=True)
    assert scratch.generators == "scratch" and scratch.vqvae_preset == "cpu" and scratch.diffusion_preset == "cpu"
    assert scratch.vqvae_patch_steps == 30_000
    with pytest.raises(ValueError, match="--from-scratch"):
        demo_preset("tiny", fov_mm=(96, 96, 64))  # the shipped weights were trained at 64×64×48


def test_untrained_generators_stop_the_demo_at_the_quality_gate(tmp_path: Path) -> None:
    """Generators trained for a few steps make no tumors: the demo fails at SynBT's generation, naming the figure,
    instead of reporting success; the steps before it are kept."""
    from synbt_factory.experiments.demo import DemoError

    config = demo_preset(
        "tiny",
        name="untrained",
        generators="scratch",
        n_cases=6,
        vqvae_patch_steps=4,
        vqvae_volume_steps=2,
        vqvae_eval_cases=1,
        diffusion_steps=4,
        tissue_steps=3,
        n_generate=4,
        ddim_steps=2,
        generate_batch_size=2,
        seg_epochs=1,
        seg_samples_per_epoch=2,
    )
    with pytest.raises(DemoError, match="quality gate") as err:
        run_demo(tmp_path / "run", preset=config, device="cpu", seed=0)
    assert err.value.step == "generate_synbt"
    assert "post/pre" in str(err.value) or "outside" in str(err.value)
    assert read_marker(tmp_path / "run", "generate_syntumor") is not None
