"""The CLI's error reporting: broken checkpoints, unwritable --out, one error line, the error boundary."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from synbt_factory.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from synbt_factory.config import config_to_dict
from synbt_factory.store import CaseStore

KINDS = ("vqvae", "diffusion", "tissue", "segmenter")
# another kind whose contents are saved under this kind's label
OTHER_KIND = {"vqvae": "tissue", "diffusion": "vqvae", "tissue": "vqvae", "segmenter": "vqvae"}
VARIANTS = (
    "config_wrong_type",
    "config_not_a_dict",
    "config_key_missing",
    "weights_missing",
    "tensor_wrong_shape",
    "tensor_missing",
    "other_kind_contents",
)
META = ("kind", "config", "synbt_version")


# ---------------------------------------------------------------------------- tiny valid checkpoints
def _save_vqvae(path: Path) -> Path:
    import dataclasses

    from synbt_factory.models.vqvae import PatchVolumeVQVAE
    from synbt_factory.training.vqvae import train_presets

    config, _ = train_presets("tiny", "patch")
    model = PatchVolumeVQVAE(config)
    payload = {"model": model.state_dict(), "latent_norm": dataclasses.asdict(model.latent_norm()), "stage": "patch"}
    return save_checkpoint(path, payload, kind="vqvae", config=config_to_dict(config))


def _save_diffusion(path: Path) -> Path:
    import dataclasses

    from synbt_factory.models.autoencoder import LatentNorm
    from synbt_factory.models.diffusion import MaskConditionedDenoiser
    from synbt_factory.training.diffusion import diffusion_train_preset
    from synbt_factory.training.runs import make_ema

    config, _ = diffusion_train_preset("tiny")
    model = MaskConditionedDenoiser(config)
    payload = {
        "model": model.state_dict(),
        "ema": make_ema(model).state_dict(),
        "latent_norm": dataclasses.asdict(LatentNorm()),
        "vqvae_sha256": "",
    }
    return save_checkpoint(path, payload, kind="diffusion", config=config_to_dict(config))


def _save_tissue(path: Path) -> Path:
    from synbt_factory.models.tissue import build_tissue_model
    from synbt_factory.tissue.config import TissueTrainConfig
    from synbt_factory.tissue.train import _checkpoint_payload

    config = TissueTrainConfig.preset("tiny")
    payload = _checkpoint_payload(build_tissue_model(config.model), None, 0, config, {})
    return save_checkpoint(path, payload, kind="tissue", config=config_to_dict(config.model))


def _save_segmenter(path: Path) -> Path:
    from synbt_factory.data.mixing import MixConfig
    from synbt_factory.models.segmenters import SegmenterConfig, build_segmenter
    from synbt_factory.training.segmentation import SegTrainConfig

    size = (16, 16, 16)
    config = SegTrainConfig(
        model=SegmenterConfig(name="unet", preset="tiny", patch_size=size),
        data=MixConfig(crop=size),
        real="prepared.zarr",
    )
    payload = {"model": build_segmenter(config.model).state_dict(), "step": 0}
    return save_checkpoint(path, payload, kind="segmenter", config=config_to_dict(config))


SAVERS: dict[str, Callable[[Path], Path]] = {
    "vqvae": _save_vqvae,
    "diffusion": _save_diffusion,
    "tissue": _save_tissue,
    "segmenter": _save_segmenter,
}
# where each kind keeps the config its loader rebuilds, a key of it that shapes the network, and its weights
CONFIG_ENTRY = {"vqvae": "config", "diffusion": "config", "tissue": "train_config", "segmenter": "config"}
WEIGHTS_ENTRY = {"vqvae": "model", "diffusion": "ema", "tissue": "model", "segmenter": "model"}


def _arch(data: dict[str, Any], kind: str) -> tuple[dict[str, Any], str]:
    config = data[CONFIG_ENTRY[kind]]
    if kind == "tissue":
        return config["model"], "channels"
    if kind == "segmenter":
        return config["model"], "preset"
    return config, "channels"


def _first_weight(weights: dict[str, Any]) -> str:
    return next(k for k, v in weights.items() if isinstance(v, torch.Tensor) and v.ndim >= 2)


def _break(valid: dict[str, Path], kind: str, variant: str, dst: Path) -> Path:
    """A copy of ``kind``'s valid checkpoint with one defect, re-saved with the project's save function."""
    source = valid[OTHER_KIND[kind]] if variant == "other_kind_contents" else valid[kind]
    data = torch.load(source, weights_only=True)
    if variant == "config_wrong_type":
        arch, key = _arch(data, kind)
        arch[key] = "abc"
    elif variant == "config_not_a_dict":
        data[CONFIG_ENTRY[kind]] = [1, 2, 3]
    elif variant == "config_key_missing":
        arch, key = _arch(data, kind)
        del arch[key]
    elif variant == "weights_missing":
        del data[WEIGHTS_ENTRY[kind]]
    elif variant == "tensor_wrong_shape":
        weights = data[WEIGHTS_ENTRY[kind]]
        weights[_first_weight(weights)] = torch.zeros(1)
    elif variant == "tensor_missing":
        weights = data[WEIGHTS_ENTRY[kind]]
        del weights[_first_weight(weights)]
    payload = {k: v for k, v in data.items() if k not in META}
    return save_checkpoint(dst, payload, kind=kind, config=data["config"])


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    return {kind: SAVERS[kind](root / f"{kind}.pt") for kind in KINDS}


@pytest.fixture(scope="module")
def nifti_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 16³ NIfTI case folder (<ID>_0000, <ID>_0001) and a tumor mask on its grid."""
    root = tmp_path_factory.mktemp("case")
    folder = root / "CASE_001"
    folder.mkdir()
    for phase in ("0000", "0001"):
        nib.save(nib.Nifti1Image(np.full((16, 16, 16), 0.5, np.float32), np.eye(4)), str(folder / f"C_{phase}.nii.gz"))
    mask = np.zeros((16, 16, 16), np.uint8)
    mask[6:10, 6:10, 6:10] = 1
    nib.save(nib.Nifti1Image(mask, np.eye(4)), str(root / "mask.nii.gz"))
    return folder, root / "mask.nii.gz"


def _store(path: Path, cases: int = 0) -> Path:
    """A prepared store with ``cases`` small cases (an enhancing cube as tumor)."""
    store = CaseStore.create(path, kind="prepared", card={})
    for i in range(cases):
        pre = np.full((32, 32, 16), 0.4, np.float32)
        post = pre.copy()
        post[12:20, 12:20, 6:10] = 1.5
        mask = (post > 1).astype(np.uint8)
        store.write_case(
            f"CASE_{i:03d}",
            {"image": np.stack([pre, post]).astype(np.float16), "mask": mask},
            {"affine": np.eye(4).tolist(), "spacing": [1, 1, 1], "split": "train"},
        )
    return path


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "error:" in line]


def _assert_one_error(result: Any, *, code: int, names: list[str]) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = _error_lines(result.output)
    assert len(lines) == 1, result.output
    for name in names:
        assert name in lines[0], result.output
    return lines[0]


# ---------------------------------------------------------------------------- broken checkpoints
@pytest.mark.parametrize("kind", KINDS)
def test_valid_tiny_checkpoints_load(valid: dict[str, Path], kind: str) -> None:
    from synbt_factory.models.diffusion import load_diffusion
    from synbt_factory.models.vqvae import load_vqvae
    from synbt_factory.tissue.infer import load_tissue_model
    from synbt_factory.training.segmentation import load_segmenter

    loader = {
        "vqvae": load_vqvae,
        "diffusion": load_diffusion,
        "tissue": load_tissue_model,
        "segmenter": load_segmenter,
    }[kind]
    model = loader(valid[kind])[0]
    assert isinstance(model, torch.nn.Module) and not model.training


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", KINDS)
def test_loaders_raise_one_checkpoint_error_naming_the_file(valid, kind: str, variant: str, tmp_path: Path) -> None:
    from synbt_factory.models.diffusion import load_diffusion
    from synbt_factory.models.vqvae import load_vqvae
    from synbt_factory.tissue.infer import load_tissue_model
    from synbt_factory.training.segmentation import load_segmenter

    loader = {
        "vqvae": load_vqvae,
        "diffusion": load_diffusion,
        "tissue": load_tissue_model,
        "segmenter": load_segmenter,
    }[kind]
    broken = _break(valid, kind, variant, tmp_path / f"{kind}_{variant}.pt")
    assert load_checkpoint(broken, kind=kind)["kind"] == kind  # well-formed: only its contents are wrong
    with pytest.raises(CheckpointError) as info:
        loader(broken)
    message = str(info.value)
    assert str(broken) in message and "\n" not in message and "train" in message


def _command(kind: str, ckpt: Path, valid: dict[str, Path], tmp_path: Path, nifti_case: tuple[Path, Path]) -> list[str]:
    """The command that loads a ``kind`` checkpoint first, with ``ckpt`` in that role."""
    if kind in ("vqvae", "diffusion"):
        folder, mask = nifti_case
        vq, diff = (ckpt, valid["diffusion"]) if kind == "vqvae" else (valid["vqvae"], ckpt)
        return [
            "generate-one",
            "--case",
            str(folder),
            "--mask",
            str(mask),
            "--vqvae",
            str(vq),
            "--diffusion",
            str(diff),
            "--out",
            str(tmp_path / "out.nii.gz"),
            "--device",
            "cpu",
        ]
    if kind == "tissue":
        return [
            "data",
            "tissue",
            "--ckpt",
            str(ckpt),
            "--data",
            str(_store(tmp_path / "prepared.zarr")),
            "--device",
            "cpu",
        ]
    return ["segment", "eval", "--ckpt", str(ckpt), "--data", str(tmp_path / "prepared.zarr"), "--device", "cpu"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", KINDS)
def test_broken_checkpoint_is_one_error_line(valid, nifti_case, kind: str, variant: str, tmp_path: Path) -> None:
    """generate-one (VQ-VAE, denoiser), data tissue and segment eval: exit 2, one line naming the file."""
    broken = _break(valid, kind, variant, tmp_path / f"{kind}_{variant}.pt")
    result = CliRunner().invoke(app, _command(kind, broken, valid, tmp_path, nifti_case))
    _assert_one_error(result, code=2, names=[str(broken)])
    assert not (tmp_path / "out.nii.gz").exists()


def _other_command(name: str, ckpt: Path, valid: dict[str, Path], tmp_path: Path) -> list[str]:
    if name == "generate --vqvae":
        return [
            "generate",
            "--n",
            "1",
            "--out",
            str(tmp_path / "syn.zarr"),
            "--data",
            str(tmp_path / "p.zarr"),
            "--bank",
            str(tmp_path / "bank.zarr"),
            "--vqvae",
            str(ckpt),
            "--diffusion",
            str(valid["diffusion"]),
            "--device",
            "cpu",
        ]
    if name == "generate --diffusion":
        return [
            "generate",
            "--n",
            "1",
            "--out",
            str(tmp_path / "syn.zarr"),
            "--data",
            str(tmp_path / "p.zarr"),
            "--bank",
            str(tmp_path / "bank.zarr"),
            "--vqvae",
            str(valid["vqvae"]),
            "--diffusion",
            str(ckpt),
            "--device",
            "cpu",
        ]
    if name == "train diffusion --vqvae":
        return [
            "train",
            "diffusion",
            "--vqvae",
            str(ckpt),
            "--data",
            str(tmp_path / "p.zarr"),
            "--out",
            str(tmp_path / "run"),
            "--preset",
            "tiny",
            "--device",
            "cpu",
        ]
    if name == "train vqvae --init":
        return [
            "train",
            "vqvae",
            "--data",
            str(_store(tmp_path / "p.zarr", cases=1)),
            "--out",
            str(tmp_path / "run"),
            "--stage",
            "volume",
            "--init",
            str(ckpt),
            "--preset",
            "tiny",
            "--steps",
            "1",
            "--device",
            "cpu",
        ]
    assert name == "eval vqvae"
    return [
        "eval",
        "vqvae",
        "--ckpt",
        str(ckpt),
        "--data",
        str(tmp_path / "p.zarr"),
        "--out",
        str(tmp_path / "ev"),
        "--device",
        "cpu",
    ]


@pytest.mark.parametrize("variant", ["config_wrong_type", "tensor_wrong_shape"])
@pytest.mark.parametrize(
    "name", ["generate --vqvae", "generate --diffusion", "train diffusion --vqvae", "train vqvae --init", "eval vqvae"]
)
def test_broken_checkpoint_in_other_commands(valid, name: str, variant: str, tmp_path: Path) -> None:
    kind = "diffusion" if name.endswith("--diffusion") else "vqvae"
    broken = _break(valid, kind, variant, tmp_path / f"{kind}_{variant}.pt")
    result = CliRunner().invoke(app, _other_command(name, broken, valid, tmp_path))
    _assert_one_error(result, code=2, names=[str(broken)])


def test_console_script_reports_a_broken_checkpoint_in_one_line(valid, nifti_case, tmp_path: Path) -> None:
    """The ``synbt`` entry point (cli.main:main) in a fresh process: stderr is one line, no traceback."""
    broken = _break(valid, "vqvae", "tensor_wrong_shape", tmp_path / "vq.pt")
    args = _command("vqvae", broken, valid, tmp_path, nifti_case)
    proc = subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "80", "SYNBT_DEBUG": ""},
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and str(broken) in lines[0], proc.stderr


# ---------------------------------------------------------------------------- unwritable --out
def _out_commands(tmp_path: Path, out: Path, valid: dict[str, Path], device: str = "cpu") -> dict[str, list[str]]:
    from synbt_factory.synthesis.bank import build_bank

    store = str(_store(tmp_path / "p.zarr", cases=2))
    bank = tmp_path / "bank.zarr"
    if not bank.exists():
        build_bank(store, bank)
    dev = ["--device", device]
    return {
        "data phantom": ["data", "phantom", "--out", str(out), "--n", "1", "--size", "tiny"],
        "train vqvae": ["train", "vqvae", "--data", store, "--out", str(out), "--preset", "tiny", "--steps", "1", *dev],
        "train diffusion": [
            "train",
            "diffusion",
            "--vqvae",
            str(valid["vqvae"]),
            "--data",
            store,
            "--out",
            str(out),
            "--preset",
            "tiny",
            "--steps",
            "1",
            *dev,
        ],
        "train tissue": [
            "train",
            "tissue",
            "--labels",
            store,
            "--out",
            str(out),
            "--preset",
            "tiny",
            "--steps",
            "1",
            *dev,
        ],
        "segment train": [
            "segment",
            "train",
            "--real",
            store,
            "--out",
            str(out),
            "--preset",
            "tiny",
            "--patch",
            "16",
            "--steps",
            "1",
            *dev,
        ],
        "segment eval": [
            "segment",
            "eval",
            "--ckpt",
            str(valid["segmenter"]),
            "--data",
            store,
            "--split",
            "train",
            "--out",
            str(out),
            *dev,
        ],
        "eval vqvae": [
            "eval",
            "vqvae",
            "--ckpt",
            str(valid["vqvae"]),
            "--data",
            store,
            "--split",
            "train",
            "--out",
            str(out),
            *dev,
        ],
        "store preview": ["store", "preview", store, "--out", str(out)],
        "bank preview": ["bank", "preview", "--data", store, "--bank", str(bank), "--out", str(out)],
        "demo": ["demo", "--out", str(out), "--preset", "tiny", *dev],
    }


OUT_COMMANDS = [
    "data phantom",
    "train vqvae",
    "train diffusion",
    "train tissue",
    "segment train",
    "segment eval",
    "eval vqvae",
    "store preview",
    "bank preview",
    "demo",
]
DEVICE_COMMANDS = [
    "train vqvae",
    "train diffusion",
    "train tissue",
    "segment train",
    "segment eval",
    "eval vqvae",
    "demo",
]


@pytest.mark.parametrize("name", OUT_COMMANDS)
def test_out_below_a_file_is_one_error_line_naming_the_flag(valid, name: str, tmp_path: Path) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder\n")
    out = blocker / "run"
    result = CliRunner().invoke(app, _out_commands(tmp_path, out, valid)[name])
    _assert_one_error(result, code=2, names=["--out", str(out)])
    assert blocker.read_text() == "a file, not a folder\n"


@pytest.mark.parametrize("name", OUT_COMMANDS)
def test_read_only_out_folder_is_one_error_line(valid, name: str, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        out = locked / "run"
        result = CliRunner().invoke(app, _out_commands(tmp_path, out, valid)[name])
        _assert_one_error(result, code=2, names=["--out", str(locked)])
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("name", DEVICE_COMMANDS)
def test_cuda_without_a_gpu_is_one_line_and_nothing_else(valid, name: str, tmp_path: Path) -> None:
    """eval vqvae printed 'DeviceError: …' and the demo printed its header before the error."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, _out_commands(tmp_path, out, valid, device="cuda")[name])
    line = _assert_one_error(result, code=2, names=["--device cuda"])
    assert "DeviceError" not in line
    assert [text for text in result.output.splitlines() if text.strip()] == [line], result.output
    assert not out.exists()


def test_segment_eval_without_out_writes_next_to_the_checkpoint(valid, tmp_path: Path) -> None:
    """segment eval saved nothing unless --out was given."""
    import shutil

    ckpt = tmp_path / "run" / "best.pt"
    ckpt.parent.mkdir()
    shutil.copy(valid["segmenter"], ckpt)
    store = _store(tmp_path / "p.zarr", cases=1)
    result = CliRunner().invoke(
        app, ["segment", "eval", "--ckpt", str(ckpt), "--data", str(store), "--split", "train", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "eval_train" / "summary.json").is_file()
    assert (tmp_path / "run" / "eval_train" / "metrics.csv").is_file()


# ---------------------------------------------------------------------------- exactly one error line
@pytest.mark.parametrize(
    "args",
    [
        ["generate", "--n", "1", "--out", "{tmp}/syn.zarr", "--data", "{tmp}/p.zarr", "--bank", "{tmp}/bank.zarr"],
        [
            "train",
            "diffusion",
            "--vqvae",
            "{vq}",
            "--data",
            "{tmp}/p.zarr",
            "--out",
            "{tmp}/run",
            "--crop",
            "8",
            "8",
            "0",
        ],
    ],
)
def test_a_failing_command_prints_one_error_line(valid, args: list[str], tmp_path: Path) -> None:
    """fail() inside a command's ``try`` that catches RuntimeError used to add a second line 'error: 2'."""
    argv = [a.format(tmp=tmp_path, vq=valid["vqvae"]) for a in args]
    result = CliRunner().invoke(app, argv)
    line = _assert_one_error(result, code=2, names=[])
    assert line.strip() != "error: 2"


# ---------------------------------------------------------------------------- the boundary
def _bank_open_raising(monkeypatch: pytest.MonkeyPatch, make: Callable[[], Any]) -> None:
    """``bank info`` calls TumorBank.open: make it raise what ``make`` raises."""
    from synbt_factory.synthesis.bank import TumorBank

    def fake_open(*args: Any, **kwargs: Any) -> Any:
        return make()

    monkeypatch.setattr(TumorBank, "open", fake_open)


def _raise(exc: BaseException) -> Callable[[], Any]:
    def make() -> Any:
        raise exc

    return make


def test_unexpected_exception_is_one_line_with_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNBT_DEBUG", raising=False)
    _bank_open_raising(monkeypatch, _raise(ZeroDivisionError("boom")))
    result = CliRunner().invoke(app, ["bank", "info", "bank.zarr"])
    line = _assert_one_error(result, code=1, names=["ZeroDivisionError", "boom", "-v"])
    assert "unexpected" in line


@pytest.mark.parametrize("how", ["global flag", "env"])
def test_verbose_shows_the_traceback(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    monkeypatch.delenv("SYNBT_DEBUG", raising=False)
    _bank_open_raising(monkeypatch, _raise(ZeroDivisionError("boom")))
    if how == "env":
        monkeypatch.setenv("SYNBT_DEBUG", "1")
        argv = ["bank", "info", "bank.zarr"]
    else:
        argv = ["-v", "bank", "info", "bank.zarr"]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 1
    assert "Traceback" in result.output and "fake_open" in result.output
    assert len(_error_lines(result.output)) == 1


def test_traceback_request_does_not_leak_into_the_next_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNBT_DEBUG", raising=False)
    _bank_open_raising(monkeypatch, _raise(ZeroDivisionError("boom")))
    runner = CliRunner()
    assert "Traceback" in runner.invoke(app, ["-v", "bank", "info", "bank.zarr"]).output
    assert "Traceback" not in runner.invoke(app, ["bank", "info", "bank.zarr"]).output


def _project_value_error() -> Any:
    from synbt_factory.device import resolve_device

    return resolve_device("tpu")


def _library_value_error() -> Any:
    return np.zeros(-1)


@pytest.mark.parametrize(
    ("make", "code", "names"),
    [
        (
            _raise(PermissionError(13, "Permission denied", "/data/bank.zarr")),
            2,
            ["Permission denied", "/data/bank.zarr"],
        ),
        (_raise(OSError(28, "No space left on device", "/data/bank.zarr")), 2, ["No space left", "/data/bank.zarr"]),
        (_project_value_error, 2, ["'tpu'"]),
        (_library_value_error, 1, ["unexpected ValueError", "negative"]),
    ],
    ids=["permission", "disk-full", "synbt-validation", "library-value-error"],
)
def test_expected_errors_exit_2_others_exit_1(monkeypatch: pytest.MonkeyPatch, make, code: int, names) -> None:
    monkeypatch.delenv("SYNBT_DEBUG", raising=False)
    _bank_open_raising(monkeypatch, make)
    result = CliRunner().invoke(app, ["bank", "info", "bank.zarr"])
    _assert_one_error(result, code=code, names=names)


def test_project_error_types_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    from synbt_factory.store.case_ids import CaseIdError

    _bank_open_raising(monkeypatch, _raise(CaseIdError("case id '..x' is not safe; rename it")))
    result = CliRunner().invoke(app, ["bank", "info", "bank.zarr"])
    _assert_one_error(result, code=2, names=["'..x' is not safe"])


def test_exits_and_usage_errors_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer

    _bank_open_raising(monkeypatch, _raise(typer.Exit(3)))
    result = CliRunner().invoke(app, ["bank", "info", "bank.zarr"])
    assert result.exit_code == 3 and _error_lines(result.output) == []
    _bank_open_raising(monkeypatch, _raise(typer.BadParameter("must be a bank", param_hint="'BANK'")))
    result = CliRunner().invoke(app, ["bank", "info", "bank.zarr"])
    assert result.exit_code == 2 and "must be a bank" in result.output and "unexpected" not in result.output


def test_ctrl_c_prints_interrupted_and_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    _bank_open_raising(monkeypatch, _raise(KeyboardInterrupt()))
    result = CliRunner().invoke(app, ["bank", "info", "bank.zarr"])
    assert result.exit_code == 130
    assert "interrupted" in result.output and "Traceback" not in result.output


def test_console_script_unexpected_error_and_debug_env(tmp_path: Path) -> None:
    """cli.main:main in a fresh process: one line and exit 1; SYNBT_DEBUG=1 adds the traceback."""
    code = (
        "from synbt_factory.synthesis.bank import TumorBank\n"
        "def fake_open(*a, **k):\n    raise ZeroDivisionError('boom')\n"
        "TumorBank.open = fake_open\n"
        "from cli.main import main\nmain()\n"
    )
    env = {**os.environ, "COLUMNS": "80", "SYNBT_DEBUG": ""}
    quiet = subprocess.run(
        [sys.executable, "-c", code, "bank", "info", "bank.zarr"], capture_output=True, text=True, timeout=120, env=env
    )
    assert quiet.returncode == 1
    lines = [line for line in quiet.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "ZeroDivisionError: boom" in lines[0] and "Traceback" not in quiet.stderr
    loud = subprocess.run(
        [sys.executable, "-c", code, "bank", "info", "bank.zarr"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "SYNBT_DEBUG": "1"},
    )
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "fake_open" in loud.stderr
