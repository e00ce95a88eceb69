"""Issue 13, item 8: key files are never readable by others, not even for a moment.

Generated keys are written whole or not at all, 0600 from the first byte, in a 0700 directory;
a private key or secret that group or others may read is refused when loaded, naming the fix.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES
from wallet import keys
from wallet.keys import KeyFileModeError, ensure_dev_keys, read_secret_file
from wallet.settings import Settings

pytestmark = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")

GENERATED = (
    "mpp_private.pem",
    "mpp_public.pem",
    "alipayplus_private.pem",
    "alipayplus_public.pem",
    "mpp_secret.key",
    "payload.key",
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask() -> Iterator[Any]:
    """Run with a given umask, restored afterwards."""
    previous = os.umask(0o022)
    os.umask(previous)
    try:
        yield os.umask
    finally:
        os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o000, 0o077])
def test_every_generated_key_is_0600_in_a_0700_directory_whatever_the_umask(
    tmp_path: Path, umask: Any, mask: int
) -> None:
    umask(mask)
    keys_dir = tmp_path / "var" / "keys"

    ensure_dev_keys(keys_dir)

    assert mode(keys_dir) == 0o700
    assert sorted(path.name for path in keys_dir.iterdir()) == sorted(GENERATED)  # no temporary left over
    assert {name: mode(keys_dir / name) for name in GENERATED} == dict.fromkeys(GENERATED, 0o600)


def test_a_key_file_is_created_owner_only_from_its_first_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file is created by os.open with O_CREAT|O_EXCL and mode 0600 beside its final name,
    then renamed into place: there is no moment when a wider file holds key material."""
    created: list[tuple[Path, int, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            created.append((Path(path), flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(keys.os, "open", spy)
    ensure_dev_keys(tmp_path / "keys")

    assert len(created) == len(GENERATED)
    for path, flags, file_mode in created:
        assert flags & os.O_EXCL and file_mode == 0o600, path
        assert path.parent == tmp_path / "keys" and path.name.startswith(".") and path.name.endswith(".tmp")


def test_a_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys_dir = tmp_path / "keys"

    def disk_full(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keys.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        ensure_dev_keys(keys_dir)

    assert list(keys_dir.iterdir()) == []  # neither the key nor its temporary
    monkeypatch.undo()
    ensure_dev_keys(keys_dir)  # the next start makes them all
    assert sorted(path.name for path in keys_dir.iterdir()) == sorted(GENERATED)


def test_a_failed_rewrite_keeps_the_old_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "payload.key"
    keys._write_private(target, b"old key")

    def crash(source: Any, destination: Any) -> None:
        raise OSError("killed before the rename")

    monkeypatch.setattr(keys.os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        keys._write_private(target, b"new key")

    assert target.read_bytes() == b"old key" and mode(target) == 0o600
    assert [path.name for path in tmp_path.iterdir()] == ["payload.key"]


def test_an_existing_keys_directory_open_to_others_is_tightened(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir(mode=0o755)
    os.chmod(keys_dir, 0o755)  # as an older version made it

    ensure_dev_keys(keys_dir)

    assert mode(keys_dir) == 0o700


def test_dev_keys_an_older_version_left_open_are_closed_and_load(tmp_path: Path) -> None:
    ensure_dev_keys(tmp_path)
    for name in GENERATED:
        os.chmod(tmp_path / name, 0o644)  # as made before key files were private
    before = {name: (tmp_path / name).read_bytes() for name in GENERATED}

    ensure_dev_keys(tmp_path)  # what make dev / make demo run first

    assert {name: mode(tmp_path / name) for name in GENERATED} == dict.fromkeys(GENERATED, 0o600)
    assert {name: (tmp_path / name).read_bytes() for name in GENERATED} == before
    assert read_secret_file(tmp_path / "mpp_secret.key") == before["mpp_secret.key"]


def test_existing_keys_are_kept(tmp_path: Path) -> None:
    ensure_dev_keys(tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in GENERATED}

    ensure_dev_keys(tmp_path)

    assert {name: (tmp_path / name).read_bytes() for name in GENERATED} == before


# --- loading ----------------------------------------------------------------------------------


def copy_with_mode(source: Path, target: Path, file_mode: int) -> Path:
    shutil.copyfile(source, target)
    os.chmod(target, file_mode)
    return target


@pytest.mark.parametrize("file_mode", [0o644, 0o640, 0o604, 0o620, 0o666])
def test_a_secret_open_to_group_or_others_is_refused_naming_the_fix(tmp_path: Path, file_mode: int) -> None:
    secret = copy_with_mode(FIXTURES / "test_secret.key", tmp_path / "mpp_secret.key", file_mode)

    with pytest.raises(KeyFileModeError) as refused:
        read_secret_file(secret)

    message = str(refused.value)
    assert str(secret) in message and f"mode {file_mode:04o}" in message
    assert f"chmod 600 {secret}" in message and "MPP_KEY_FILE_MODE_CHECK=false" in message


@pytest.mark.parametrize("file_mode", [0o600, 0o400])
def test_an_owner_only_secret_is_read(tmp_path: Path, file_mode: int) -> None:
    secret = copy_with_mode(FIXTURES / "test_secret.key", tmp_path / "mpp_secret.key", file_mode)

    assert read_secret_file(secret) == (FIXTURES / "test_secret.key").read_bytes()


def test_the_check_can_be_turned_off_for_committed_test_keys(tmp_path: Path) -> None:
    secret = copy_with_mode(FIXTURES / "test_secret.key", tmp_path / "mpp_secret.key", 0o644)

    assert read_secret_file(secret, check_mode=False) == (FIXTURES / "test_secret.key").read_bytes()


@pytest.mark.skipif(os.name == "posix" and os.geteuid() != 0, reason="needs root to own a root-owned file")
def test_a_root_owned_secret_may_be_shared_with_the_services_group_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL's rule: a root-owned key read by a service through its group may be 0640, never 0644."""
    shared = copy_with_mode(FIXTURES / "test_secret.key", tmp_path / "mpp_secret.key", 0o640)
    monkeypatch.setattr(keys.os, "geteuid", lambda: 1000)  # the service is not root; root owns the file

    assert read_secret_file(shared) == (FIXTURES / "test_secret.key").read_bytes()
    os.chmod(shared, 0o644)
    with pytest.raises(KeyFileModeError, match="chmod 640"):
        read_secret_file(shared)


def key_settings(tmp_path: Path, mode_of: dict[str, int], **overrides: Any) -> Settings:
    """Settings over copies of the test keys, each with the mode asked (0600 unless said)."""
    files = {
        "mpp_private_key_file": "test_mpp_private.pem",
        "secret_key_file": "test_secret.key",
        "payload_key_file": "test_payload.key",
    }
    copies: dict[str, Any] = {}
    for field, name in files.items():
        copies[field] = copy_with_mode(FIXTURES / name, tmp_path / name, mode_of.get(field, 0o600))
    return Settings(
        mpp_public_key_file=FIXTURES / "test_mpp_public.pem",  # public: never checked
        alipayplus_public_key_file=FIXTURES / "test_alipayplus_public.pem",
        **copies,
        **{"key_file_mode_check": True, **overrides},  # on, whatever MPP_KEY_FILE_MODE_CHECK says
    )


@pytest.mark.parametrize("field", ["mpp_private_key_file", "secret_key_file", "payload_key_file"])
def test_settings_refuse_to_load_a_0644_private_key_or_secret(tmp_path: Path, field: str) -> None:
    settings = key_settings(tmp_path, {field: 0o644})

    with pytest.raises(KeyFileModeError, match="is open to group or others \\(mode 0644\\)") as refused:
        settings.load_keys()  # what `mpp api` and `mpp worker` do at start-up

    assert str(getattr(settings, field)) in str(refused.value)


def test_settings_refuse_a_0644_previous_payload_key(tmp_path: Path) -> None:
    old = copy_with_mode(FIXTURES / "test_payload.key", tmp_path / "payload-1.key", 0o644)
    settings = key_settings(tmp_path, {}, payload_key_id="2", payload_previous_key_files={"1": old})

    with pytest.raises(KeyFileModeError, match="payload-1.key"):
        settings.load_keys()


def test_settings_load_owner_only_keys(tmp_path: Path) -> None:
    settings = key_settings(tmp_path, {})

    settings.load_keys()

    assert settings.secret_key == (FIXTURES / "test_secret.key").read_bytes()


def test_settings_skip_the_check_when_told(tmp_path: Path) -> None:
    everything_0644 = dict.fromkeys(("mpp_private_key_file", "secret_key_file", "payload_key_file"), 0o644)
    settings = key_settings(tmp_path, everything_0644, key_file_mode_check=False)

    settings.load_keys()

    assert settings.secret_key == (FIXTURES / "test_secret.key").read_bytes()
