"""Atomic writes: a failed write (exception, full disk) keeps the old file whole and leaves no temp file,
and every file the package writes goes through hftraining.atomic (an audit of the source)."""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

import pytest
import torch

from hftraining import atomic
from hftraining import checkpoint as ckpt

PACKAGE = Path(__file__).resolve().parents[1] / "hftraining"


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_write_replaces_the_file_and_creates_folders(tmp_path):
    target = tmp_path / "a" / "b" / "file.json"
    atomic.write_json(target, {"x": 1})
    atomic.write_json(target, {"x": 2})
    assert ckpt.read_json(target) == {"x": 2}
    assert not leftovers(tmp_path)


def test_an_exception_inside_the_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "config.yaml"
    atomic.write_text(target, "old: 1\n")

    def half_then_crash(tmp: Path) -> None:
        tmp.write_text("new: ")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write(target, half_then_crash)
    assert target.read_text() == "old: 1\n"
    assert not leftovers(tmp_path)


def test_disk_full_mid_write_keeps_the_old_file_and_names_it(tmp_path, monkeypatch):
    target = tmp_path / "model.safetensors"
    atomic.write_bytes(target, b"old checkpoint")

    def disk_full(path: Path, data: bytes) -> None:
        with open(path, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")      # as write() raises it: no file name

    monkeypatch.setattr(atomic, "_write_all", disk_full)
    with pytest.raises(OSError) as caught:
        atomic.write_bytes(target, b"new checkpoint that does not fit")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert target.read_bytes() == b"old checkpoint"
    assert not leftovers(tmp_path)


def test_checkpoint_save_on_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    first = {"w": torch.arange(6.0).reshape(2, 3)}
    ckpt.save_tensors(path, first)
    def disk_full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "_write_all", disk_full)
    with pytest.raises(OSError):
        ckpt.save_tensors(path, {"w": torch.zeros(2, 3)})
    assert torch.equal(ckpt.load_tensors(path)["w"], first["w"])
    assert not leftovers(tmp_path)


def test_files_are_readable_and_keep_their_mode(tmp_path):
    fresh = atomic.write_text(tmp_path / "fresh.txt", "x")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask   # as open() would make it, not mkstemp's 0600
    private = tmp_path / "private.txt"
    private.write_text("x")
    private.chmod(0o600)
    atomic.write_text(private, "y")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_text_is_utf8(tmp_path):
    path = atomic.write_text(tmp_path / "t.txt", "Δ price ≥ 0\n")
    assert path.read_bytes() == "Δ price ≥ 0\n".encode("utf-8")


# --- audit: every write in hftraining/ goes through atomic.py ------------------------------------

WRITE_CALLS = re.compile(
    r"\.write_text\(|\.write_bytes\(|\.to_csv\(|\.to_parquet\(|\bnp\.save|\.savefig\(|\btorch\.save\(|"
    r"\bsave_file\(|\bjson\.dump\(|\byaml\.(safe_)?dump\(|\bos\.open\(|\bopen\([^)]*[\"'][wax]b?\+?[\"']")

# (module, text on the line): why that write is fine. Anything else must use hftraining.atomic.
ALLOWED = {
    ("report.py", "return frame.to_csv(index=False"): "renders CSV text; written by atomic.write_text",
    ("report_figures.py", "fig.savefig(buffer"): "renders a PNG into memory for the HTML page",
    ("config.py", "yaml.safe_dump(config.model_dump(mode=\"json\"), buffer"): "renders YAML text into a StringIO",
    ("forecasting/cache.py", "with open(tmp, \"wb\")"): "writes the temp file inside atomic_write's callback",
    ("forecasting/cache.py", "np.savez("): "into that temp file's handle (same callback)",
    ("paper.py", "with open(path, \"a\""): "append-only decision journal, fsynced; the state counts its lines "
                                         "and _read_lines drops lines written after the last state",
    ("run_log.py", "self.stream = open(path, \"a\""): "append-only run log (logs/<run>.log), flushed per line; "
                                                  "nothing reads it back, a crash loses at most its last line",
    ("trials.py", "fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND"):
        "append-only trial registry: one write() per line, readers skip a torn line",
}


def test_every_write_in_the_package_is_atomic():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = str(path.relative_to(PACKAGE))
        if module == "atomic.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if not WRITE_CALLS.search(code) or "atomic." in code or "atomic_write(" in code:
                continue
            if any(module == mod and text in code for mod, text in ALLOWED):
                continue
            offenders.append(f"{module}:{number}: {line.strip()}")
    assert not offenders, "write these through hftraining.atomic (or justify them in ALLOWED):\n" + "\n".join(
        offenders)


def test_the_allowed_exceptions_still_exist():
    """Keep ALLOWED honest: an entry whose line is gone should be removed."""
    for module, text in ALLOWED:
        assert text in (PACKAGE / module).read_text(), (module, text)


def test_atomic_write_is_what_checkpoints_use(tmp_path, monkeypatch):
    calls = []
    real = atomic.atomic_write
    monkeypatch.setattr(atomic, "atomic_write", lambda path, write: calls.append(Path(path).name) or real(path, write))
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters())
    ckpt.save_tensors(tmp_path / ckpt.WEIGHTS, model.state_dict())
    ckpt.save_training_state(tmp_path, model, optimizer, torch.Generator(), {"step": 1})
    assert calls == [ckpt.WEIGHTS, "state.safetensors", "state.json"]
    assert sorted(os.listdir(tmp_path / "last")) == ["state.json", "state.safetensors"]
