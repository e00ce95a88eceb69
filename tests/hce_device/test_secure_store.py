"""The phone's secure store: AES-GCM records bound to their names, a key that never leaves the keystore."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hce_device.secure_store import DeviceKeystore, SecureStore, SecureStoreError, TamperedRecord

PAN = "5204731600001234"
RECORD = {"tokenReferenceId": "DWSPMC0001", "cardProfile": {"tokenPan": PAN, "expiryDate": "2912"}}


def _file_store(tmp_path: Path) -> tuple[SecureStore, Path]:
    keystore = DeviceKeystore(tmp_path / "device.key")
    return SecureStore(keystore, tmp_path / "records"), tmp_path / "records"


def test_round_trip_in_memory() -> None:
    store = SecureStore(DeviceKeystore())
    assert store.get("token") is None
    store.put("token", RECORD)
    assert store.get("token") == RECORD
    store.delete("token")
    assert store.get("token") is None


def test_round_trip_on_disk_is_encrypted_and_private(tmp_path: Path) -> None:
    store, directory = _file_store(tmp_path)
    store.put("token", RECORD)
    assert store.get("token") == RECORD
    files = list(directory.iterdir())
    assert [f.name for f in files] == ["token.sealed"]
    raw = files[0].read_bytes()
    assert PAN.encode() not in raw and b"DWSPMC" not in raw
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "device.key").stat().st_mode) == 0o600


def test_each_write_uses_a_fresh_nonce(tmp_path: Path) -> None:
    store, directory = _file_store(tmp_path)
    store.put("token", RECORD)
    first = (directory / "token.sealed").read_bytes()
    store.put("token", RECORD)
    second = (directory / "token.sealed").read_bytes()
    assert first[1:13] != second[1:13]  # the 96-bit nonces differ
    assert first != second


def test_the_key_survives_a_restart_from_its_file(tmp_path: Path) -> None:
    store, directory = _file_store(tmp_path)
    store.put("token", RECORD)
    reopened = SecureStore(DeviceKeystore(tmp_path / "device.key"), directory)
    assert reopened.get("token") == RECORD


@pytest.mark.parametrize("position", [0, 5, 20, -1])
def test_a_changed_byte_is_detected(tmp_path: Path, position: int) -> None:
    store, directory = _file_store(tmp_path)
    store.put("token", RECORD)
    path = directory / "token.sealed"
    raw = bytearray(path.read_bytes())
    raw[position] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(TamperedRecord, match="token"):
        store.get("token")


def test_a_truncated_record_is_detected(tmp_path: Path) -> None:
    store, directory = _file_store(tmp_path)
    store.put("token", RECORD)
    path = directory / "token.sealed"
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(TamperedRecord):
        store.get("token")


def test_a_record_moved_under_another_name_is_detected(tmp_path: Path) -> None:
    store, directory = _file_store(tmp_path)
    store.put("credentials", {"credentials": []})
    store.put("token", RECORD)
    (directory / "credentials.sealed").write_bytes((directory / "token.sealed").read_bytes())
    with pytest.raises(TamperedRecord, match="credentials"):
        store.get("credentials")


def test_another_devices_key_cannot_open_a_record(tmp_path: Path) -> None:
    store, directory = _file_store(tmp_path)
    store.put("token", RECORD)
    stranger = SecureStore(DeviceKeystore(tmp_path / "other.key"), directory)
    with pytest.raises(TamperedRecord):
        stranger.get("token")


def test_the_keystore_never_shows_its_key(tmp_path: Path) -> None:
    keystore = DeviceKeystore(tmp_path / "device.key")
    key = (tmp_path / "device.key").read_bytes()
    assert len(key) == 32
    assert key.hex() not in repr(keystore)
    public = [name for name in dir(keystore) if not name.startswith("_")]
    assert sorted(public) == ["open", "seal"]
    sealed = keystore.seal(b"secret", b"ad")
    assert keystore.open(sealed, b"ad") == b"secret"
    with pytest.raises(TamperedRecord):
        keystore.open(sealed, b"other ad")


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    DeviceKeystore(path)
    path.chmod(0o644)
    with pytest.raises(SecureStoreError, match="readable by others"):
        DeviceKeystore(path)


def test_a_key_file_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    path.write_bytes(b"short")
    path.chmod(0o600)
    with pytest.raises(SecureStoreError, match="256-bit"):
        DeviceKeystore(path)


@pytest.mark.parametrize("name", ["../escape", "a/b", "", "Token", ".hidden"])
def test_record_names_cannot_be_paths(tmp_path: Path, name: str) -> None:
    store, _ = _file_store(tmp_path)
    with pytest.raises(SecureStoreError, match="bad record name"):
        store.put(name, RECORD)
    with pytest.raises(SecureStoreError, match="bad record name"):
        SecureStore(DeviceKeystore()).get(name)
