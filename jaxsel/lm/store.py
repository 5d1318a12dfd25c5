"""Checkpoints of adapter training: one directory, resumable, bound to what it was trained from.

An `AdapterStore` is a `jaxsel.shards.VerifiedStore` (the verified store of score and count
shards): its manifest `<dir>/<meta_file>` holds an `AdapterRecord` (format, model fingerprint,
training identity), and each epoch is a unit: `<dir>/ckpt/<epoch>/`, an orbax checkpoint of the
`TrainState` plus the per-epoch losses, committed by `<dir>/ckpt-<epoch>.sha256`, written
atomically last, which holds the store's tag of every file of the checkpoint. A resumed run
verifies the epoch it reuses; one that does not verify is deleted with a warning and retrained.

A directory made for another model is refused (AssetError), one with other training settings or
another training set too (InputError naming the differing fields), and one written in another
format (an older jaxsel's checksums) is refused with one line rather than retrained over, so
nothing trained for another job is ever resumed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import NamedTuple

from jaxsel.errors import AssetError, InputError
from jaxsel.shards import VerifiedStore, tree_digest

log = logging.getLogger(__name__)

# 3: the epoch's commit file holds the verified store's tag (2: a sha256 of its own)
FORMAT = 3


class AdapterRecord(NamedTuple):
    """What an adapter directory was trained from: its manifest."""

    format: int  # the directory's layout version (`FORMAT`)
    model: str  # fingerprint of the frozen model
    train: dict  # JSON identity of the training run (settings, training-set fingerprint)


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


class AdapterStore(VerifiedStore):
    """An adapter checkpoint directory (see the module docstring).

    Args:
      path: the directory.
      fingerprint: the frozen model's fingerprint.
      identity: JSON-serialisable description of the training run (settings, training-set
        fingerprint); None opens an existing directory for reading whatever it holds.
      meta_file: name of the record file (e.g. "lamdas.json").
      what: how errors name the adapter ("prefix", "LoRA").
    """

    fix_manifest = "delete the directory"

    def __init__(
        self,
        path: str | os.PathLike,
        fingerprint: str,
        identity: dict | None,
        meta_file: str = "adapter.json",
        what: str = "adapter",
    ):
        import orbax.checkpoint as ocp

        self.path, self.model, self.what = Path(path), fingerprint, what
        self._meta = self.path / meta_file
        record = None if identity is None else AdapterRecord(FORMAT, fingerprint, identity)
        super().__init__(
            self.path,
            None if record is None else record._asdict(),
            manifest=meta_file,
            where=f"{what} directory",
            mismatch=lambda old: self._refuse(old, identity),
        )
        self.meta = self._typed(self.record)
        self.identity = self.meta.train
        self._ocp = ocp
        with _quiet_orbax():
            self.mgr = ocp.CheckpointManager(
                (self.path / "ckpt").absolute(),
                item_names=("state", "meta"),
                options=ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False),
            )

    def _typed(self, old) -> AdapterRecord:
        """The record as an `AdapterRecord` of this format and model, else a one-line error."""
        if (
            not isinstance(old, dict)
            or set(old) != set(AdapterRecord._fields)
            or not isinstance(old["train"], dict)
        ):
            raise InputError(f"{self._meta}: not a {self.what} record; delete the directory")
        rec = AdapterRecord(**old)
        if rec.format != FORMAT:
            raise InputError(
                f"{self._meta}: a {self.what} directory of format {rec.format} (another jaxsel "
                f"version; this one reads format {FORMAT}); delete it to retrain"
            )
        if rec.model != self.model:
            raise AssetError(
                f"{self.path}: {self.what} was trained for another model (fingerprint "
                f"{str(rec.model)[:12]}..., this model {self.model[:12]}...)"
            )
        return rec

    def _refuse(self, old, identity: dict) -> Exception:
        """The error for a record that differs from this run's (`_typed` raises its own)."""
        train = self._typed(old).train
        diff = sorted(k for k in identity.keys() | train.keys() if identity.get(k) != train.get(k))
        return InputError(
            f"{self.path}: holds a {self.what} trained with other settings or another "
            f"training set (differs in: {', '.join(diff)}); use another directory or delete it"
        )

    def epochs(self) -> list[int]:
        return sorted(self.mgr.all_steps())

    def _sum_file(self, epoch: int) -> Path:
        return self.path / f"ckpt-{epoch}.sha256"

    def _tag(self, epoch: int) -> str:
        """The store's tag of the epoch's checkpoint: every file's name and bytes."""
        return self.tag(f"ckpt-{epoch}".encode(), tree_digest(self.path / "ckpt" / str(epoch)))

    def bad_reason(self, epoch: int) -> str | None:
        """None if the epoch's checkpoint verifies, else why not (naming the file)."""
        sums = self._sum_file(epoch)
        try:
            want = sums.read_text(encoding="utf-8").strip()
        except (OSError, ValueError):
            return f"{sums}: missing or unreadable (the checkpoint was not committed)"
        if want != self._tag(epoch):
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
        """Checkpoints the state, then (atomically) its tag: only then is it committed."""
        a = self._ocp.args
        with _quiet_orbax():
            self.mgr.save(
                epoch,
                args=a.Composite(state=a.StandardSave(state), meta=a.JsonSave({"losses": losses})),
            )
            self.mgr.wait_until_finished()
        self.commit(self._sum_file(epoch), self._tag(epoch).encode())

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
