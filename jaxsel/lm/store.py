"""Checkpoints of adapter training: one directory, resumable, bound to what it was trained from.

Layout: `<dir>/<meta_file>` (written once: format, model fingerprint, training identity) and
`<dir>/ckpt/<epoch>/` orbax checkpoints of the `TrainState` plus the per-epoch losses. A
directory made for another model is refused (AssetError), one with other training settings or
another training set too (InputError naming the differing fields), so nothing trained for another
job is ever resumed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path

from jaxsel.data.outputs import check_workdir, write_text
from jaxsel.errors import AssetError, InputError

log = logging.getLogger(__name__)

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
        check_workdir(self.path, f"{what} directory")
        meta_path = self.path / meta_file
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_bytes())
            except ValueError as e:  # JSON or UTF-8
                raise InputError(f"{meta_path}: malformed ({e}); delete the directory") from None
            if not isinstance(meta, dict) or not isinstance(meta.get("train"), dict):
                raise InputError(f"{meta_path}: not a {what} record; delete the directory")
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
            write_text(
                meta_path,
                json.dumps(
                    {"format": FORMAT, "model": fingerprint, "train": identity},
                    indent=1,
                    sort_keys=True,
                ),
            )
            self.identity = identity
        self.model, self.what = fingerprint, what
        self._ocp = ocp
        with _quiet_orbax():
            self.mgr = ocp.CheckpointManager(
                (self.path / "ckpt").absolute(),
                item_names=("state", "meta"),
                options=ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False),
            )

    def epochs(self) -> list[int]:
        return sorted(self.mgr.all_steps())

    def _sum_file(self, epoch: int) -> Path:
        return self.path / f"ckpt-{epoch}.sha256"

    def _digest(self, epoch: int) -> str:
        """sha256 over every file of the epoch's checkpoint (names and bytes), bound to the
        model and the training identity."""
        root = self.path / "ckpt" / str(epoch)
        bind = json.dumps([self.model, self.identity], sort_keys=True)
        h = hashlib.sha256(bind.encode())
        for p in sorted(q for q in root.rglob("*") if q.is_file()):
            for part in (p.relative_to(root).as_posix().encode(), p.read_bytes()):
                h.update(len(part).to_bytes(8, "little"))
                h.update(part)
        return h.hexdigest()

    def bad_reason(self, epoch: int) -> str | None:
        """None if the epoch's checkpoint verifies, else why not (naming the file)."""
        sums = self._sum_file(epoch)
        try:
            want = sums.read_text(encoding="utf-8").strip()
        except (OSError, ValueError):
            return f"{sums}: missing or unreadable (the checkpoint was not committed)"
        if want != self._digest(epoch):
            return f"{self.path / 'ckpt' / str(epoch)}: does not match {sums.name} (damaged)"
        return None

    def verified(self, upto: int) -> int | None:
        """The latest epoch <= upto whose checkpoint verifies; later ones that do not are
        deleted with a warning so they are retrained."""
        for epoch in reversed([e for e in self.epochs() if e <= upto]):
            why = self.bad_reason(epoch)
            if why is None:
                return epoch
            log.warning("%s: %s; retraining epoch %d", self.what, why, epoch)
            with _quiet_orbax():
                self.mgr.delete(epoch)
            self._sum_file(epoch).unlink(missing_ok=True)
        return None

    def save(self, epoch: int, state, losses: list[float]) -> None:
        """Checkpoints the state, then (atomically) its checksum: only then is it committed."""
        a = self._ocp.args
        with _quiet_orbax():
            self.mgr.save(
                epoch,
                args=a.Composite(state=a.StandardSave(state), meta=a.JsonSave({"losses": losses})),
            )
            self.mgr.wait_until_finished()
        write_text(self._sum_file(epoch), self._digest(epoch))

    def restore(self, epoch: int, abstract):
        """(state, losses) of a stored epoch; `abstract`: the state's ShapeDtypeStructs."""
        a = self._ocp.args
        with _quiet_orbax():
            try:
                r = self.mgr.restore(
                    epoch,
                    args=a.Composite(state=a.StandardRestore(abstract), meta=a.JsonRestore()),
                )
            except Exception as e:  # orbax/tensorstore raise many types for a bad checkpoint
                raise InputError(
                    f"{self.path / 'ckpt' / str(epoch)}: unreadable checkpoint "
                    f"({type(e).__name__}); delete it"
                ) from None
        return r["state"], list(r["meta"]["losses"])

    def close(self) -> None:
        with _quiet_orbax():
            self.mgr.close()
