"""Generator weights trained on the phantom and shipped with the package, checked by sha256 on every use.

A demo that trains a VQ-VAE and a denoiser in a few minutes on 2 CPU cores makes tumors that do not
enhance: the autoencoder needs tens of thousands of steps before its codebook holds enhancing tissue.
So ``synbt demo`` starts from small weights trained by ``scripts/train_demo_weights.sh`` (the README's
CPU recipe, on a phantom drawn with another seed than the demo's, so every demo case is unseen) and
``synbt demo --from-scratch`` trains them again.

Layout (package data)::

    synbt_factory/weights/<set>/manifest.json    provenance: phantom, commands, files and their sha256
    synbt_factory/weights/<set>/<component>.pt   checkpoints stripped of optimizer state

The sha256 of every file is pinned here as well as in the manifest: a file that does not match is
refused, whatever its manifest says.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from synbt_factory.checkpoint import CheckpointError, file_sha256, load_checkpoint, save_checkpoint
from synbt_factory.io import atomic_path

__all__ = [
    "COMPONENTS",
    "PRETRAINED_SHA256",
    "PretrainedSet",
    "PRETRAINED_PREFIX",
    "init_checkpoint",
    "install_pretrained",
    "pack_checkpoint",
    "pretrained_set",
]

log = logging.getLogger(__name__)

#: Components of a set, in the order the pipeline uses them.
COMPONENTS: tuple[str, ...] = ("vqvae_patch", "vqvae_volume", "diffusion")

#: set name → component → sha256 of the shipped file.
PRETRAINED_SHA256: dict[str, dict[str, str]] = {
    "phantom_tiny": {
        "vqvae_patch": "9ca15dc9807fad7257b11e81d6745b35f1adfe11eedddb7423451d2dd6c3ecd9",
        "vqvae_volume": "bc83ed80340090d74c297445d11711868bf25ac0bad5d1f13a3893af9eb61932",
        "diffusion": "c24a09af7e6d49cc31e5d62eed33c155f0d9639473e7a96727fe4b4b1ee921d1",
    },
}

#: Checkpoint entries kept by :func:`pack_checkpoint` (everything a loader reads; no optimizer, RNG or case lists).
_KEEP = ("stage", "step", "model", "ema", "latent_norm", "vqvae_sha256", "crop", "seed")


@dataclass(frozen=True, kw_only=True)
class PretrainedSet:
    """One shipped set of generator weights.

    Attributes:
        name: set name (``phantom_tiny``).
        folder: where its files lie.
        manifest: provenance (phantom draw, the commands that trained it, file hashes).
    """

    name: str
    folder: Path
    manifest: dict[str, Any]

    def path(self, component: str) -> Path:
        """The verified file of ``component``.

        Raises:
            CheckpointError: unknown component, missing file, or a sha256 other than the pinned one.
        """
        pinned = PRETRAINED_SHA256[self.name].get(component)
        if pinned is None:
            raise CheckpointError(
                f"pretrained set {self.name!r} has no component {component!r}; known: {', '.join(COMPONENTS)}"
            )
        path = self.folder / f"{component}.pt"
        if not path.is_file():
            raise CheckpointError(
                f"pretrained weights {path} are missing; reinstall synbt "
                "or run 'synbt demo --from-scratch' to train them"
            )
        actual = file_sha256(path)
        if actual != pinned:
            raise CheckpointError(
                f"pretrained weights {path} have sha256 {actual[:12]}…, expected {pinned[:12]}…: "
                "the file is damaged or was replaced; reinstall synbt or run "
                "'synbt demo --from-scratch'"
            )
        return path


def pretrained_set(name: str = "phantom_tiny") -> PretrainedSet:
    """The shipped set ``name``, with its manifest read.

    Raises:
        CheckpointError: an unknown set, or one whose manifest is missing or unreadable.
    """
    if name not in PRETRAINED_SHA256:
        raise CheckpointError(f"no pretrained set {name!r}; known: {', '.join(PRETRAINED_SHA256)}")
    folder = Path(str(resources.files("synbt_factory") / "weights" / name))
    manifest_path = folder / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {manifest_path} ({exc}); reinstall synbt") from exc
    return PretrainedSet(name=name, folder=folder, manifest=manifest)


#: How a trainer's ``--init`` names a shipped set instead of a file: ``pretrained:phantom_tiny``.
PRETRAINED_PREFIX = "pretrained:"


def init_checkpoint(text: str | Path, component: str) -> Path:
    """The checkpoint a trainer warm-starts from: a file path, or ``pretrained:<set>`` for the shipped ``component``.

    ``synbt train vqvae --init pretrained:phantom_tiny`` starts from the shipped patch-stage weights, ``synbt train
    diffusion --init pretrained:phantom_tiny`` from the shipped denoiser: a short fine-tune on new data instead of
    tens of thousands of steps from random weights.

    Raises:
        CheckpointError: an unknown set or component, or a shipped file that fails its sha256 check.
    """
    text = str(text)
    if not text.startswith(PRETRAINED_PREFIX):
        return Path(text)
    return pretrained_set(text.removeprefix(PRETRAINED_PREFIX)).path(component)


def install_pretrained(name: str, component: str, dest: Path) -> str:
    """Copy the verified file of ``component`` to ``dest`` (atomic); returns its sha256.

    A file already at ``dest`` with the same sha256 is kept as it is.
    """
    source = pretrained_set(name).path(component)
    sha = PRETRAINED_SHA256[name][component]
    dest = Path(dest)
    if dest.is_file() and file_sha256(dest) == sha:
        return sha
    # a fresh temporary file with a plain open()'s permissions, renamed over ``dest`` (removed if the copy fails)
    with atomic_path(dest, unique=True) as tmp:
        shutil.copyfile(source, tmp)
    log.debug("installed pretrained %s/%s (sha256 %s…) → %s", name, component, sha[:12], dest)
    return sha


def pack_checkpoint(source: Path, dest: Path, *, replace: dict[str, Any] | None = None) -> str:
    """Write a copy of a training checkpoint with only what its loader reads; returns the new file's sha256.

    Args:
        source: a VQ-VAE or diffusion checkpoint (``final.pt``).
        dest: the packed file.
        replace: entries to set in the packed copy (e.g. a diffusion's ``vqvae_sha256`` once its VQ-VAE is packed).
    """
    ckpt = load_checkpoint(Path(source))
    payload = {k: ckpt[k] for k in _KEEP if k in ckpt}
    if "ema" in payload:
        # a denoiser samples with its averaged weights: ship only those, with ``model`` naming the same tensors
        # (saved once), so the file is half the size and either choice of weights loads
        from synbt_factory.models.diffusion import ema_weights

        payload["model"] = ema_weights(payload["ema"])
    payload.update(replace or {})
    save_checkpoint(Path(dest), payload, kind=str(ckpt["kind"]), config=ckpt["config"])
    return file_sha256(Path(dest))
