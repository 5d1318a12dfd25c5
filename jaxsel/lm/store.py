"""Checkpoints of adapter training: one directory, resumable, bound to what it was trained from.

Layout: `<dir>/<meta_file>` (written once: format, model fingerprint, training identity) and
`<dir>/ckpt/<epoch>/` orbax checkpoints of the `TrainState` plus the per-epoch losses. A
directory made for another model is refused (AssetError), one with other training settings or
another training set too (InputError naming the differing fields), so nothing trained for another
job is ever resumed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from jaxsel.errors import AssetError, InputError

FORMAT = 2


@contextlib.contextmanager
def _quiet_orbax():
    """orbax logs every save/restore step at INFO through absl; keep it for warnings."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        absl.setLevel(level)


class AdapterStore:
    """An adapter checkpoint directory (see the module docstring).

    Args:
      path: the directory.
      fingerprint: the frozen model's fingerprint.
      identity: JSON-serialisable description of the training run (settings, training-set
        fingerprint); None opens an existing directory for reading whatever it holds.
      meta_file: name of the identity file (e.g. "lamdas.json").
      what: how errors name the adapter ("prefix", "LoRA").
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fingerprint: str,
        identity: dict | None,
        meta_file: str = "adapter.json",
        what: str = "adapter",
    ):
        import orbax.checkpoint as ocp

        self.path = Path(path)
        meta_path = self.path / meta_file
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
            except json.JSONDecodeError as e:
                raise InputError(f"{meta_path}: malformed ({e}); delete the directory") from e
            if meta.get("model") != fingerprint:
                raise AssetError(
                    f"{self.path}: {what} was trained for another model (fingerprint "
                    f"{str(meta.get('model'))[:12]}..., this model {fingerprint[:12]}...)"
                )
            if identity is not None and meta.get("train") != identity:
                old = meta.get("train", {})
                diff = sorted(
                    k for k in identity.keys() | old.keys() if identity.get(k) != old.get(k)
                )
                raise InputError(
                    f"{self.path}: holds a {what} trained with other settings or another "
                    f"training set (differs in: {', '.join(diff)}); use another directory or "
                    "delete it"
                )
            self.identity = meta["train"]
        elif identity is None:
            raise InputError(f"{self.path}: no {what} here ({meta_file} missing)")
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            tmp = meta_path.with_name(meta_file + ".tmp")
            tmp.write_text(
                json.dumps(
                    {"format": FORMAT, "model": fingerprint, "train": identity},
                    indent=1,
                    sort_keys=True,
                )
            )
            os.replace(tmp, meta_path)
            self.identity = identity
        self._ocp = ocp
        with _quiet_orbax():
            self.mgr = ocp.CheckpointManager(
                (self.path / "ckpt").absolute(),
                item_names=("state", "meta"),
                options=ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False),
            )

    def epochs(self) -> list[int]:
        return sorted(self.mgr.all_steps())

    def save(self, epoch: int, state, losses: list[float]) -> None:
        a = self._ocp.args
        with _quiet_orbax():
            self.mgr.save(
                epoch,
                args=a.Composite(state=a.StandardSave(state), meta=a.JsonSave({"losses": losses})),
            )
            self.mgr.wait_until_finished()

    def restore(self, epoch: int, abstract):
        """(state, losses) of a stored epoch; `abstract`: the state's ShapeDtypeStructs."""
        a = self._ocp.args
        with _quiet_orbax():
            r = self.mgr.restore(
                epoch, args=a.Composite(state=a.StandardRestore(abstract), meta=a.JsonRestore())
            )
        return r["state"], list(r["meta"]["losses"])

    def close(self) -> None:
        with _quiet_orbax():
            self.mgr.close()
