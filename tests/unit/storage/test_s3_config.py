"""S3 blob store settings: ``s3://`` urls, credentials (never in a repr), error translation."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from exchange.config import ConfigError, ServerConfig
from exchange.errors import StorageError
from exchange.storage._s3io import Conflict, Missing, S3Credentials, S3Location, translate
from exchange.storage.errors import BlobStoreUnavailable, InsufficientStorage, InvalidValue


def test_location_parses_bucket_and_prefix() -> None:
    here = S3Location.parse("s3://evidence/exchange/a", endpoint="https://rgw.example:7480")
    assert (here.bucket, here.prefix, here.endpoint) == ("evidence", "exchange/a/",
                                                          "https://rgw.example:7480")
    assert here.url == "s3://evidence/exchange/a"
    assert S3Location.parse("s3://evidence").prefix == ""
    for bad in ("http://evidence/x", "s3://Evidence/x", "s3://ab/x", "s3://evidence/a//b",
                "s3://evidence/../x", "s3://evidence/x?y=1"):
        with pytest.raises(InvalidValue):
            S3Location.parse(bad)
    with pytest.raises(InvalidValue):
        S3Location.parse("s3://evidence/x", endpoint="ftp://rgw.example")


def test_credentials_come_from_a_private_file_or_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "s3.credentials"
    secret_file.write_text("# exchange\nAKIDEXAMPLE\nvery-secret\n")
    secret_file.chmod(0o644)
    with pytest.raises(InvalidValue, match="readable by others"):
        S3Credentials.load(secret_file)
    secret_file.chmod(0o600)
    loaded = S3Credentials.load(secret_file)
    assert loaded == S3Credentials("AKIDEXAMPLE", "very-secret")
    assert "very-secret" not in repr(loaded)
    secret_file.write_text("only-one-line\n")
    with pytest.raises(InvalidValue, match="two lines"):
        S3Credentials.load(secret_file)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    assert S3Credentials.load() == S3Credentials("AKIDENV", "env-secret")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert S3Credentials.load() is None


def test_server_config_accepts_only_s3_urls(tmp_path: Path) -> None:
    ok = ServerConfig(data_dir=tmp_path, origin="o", blob_store="s3://evidence/x",
                      s3_endpoint="http://127.0.0.1:7480")
    assert ok.blob_store == "s3://evidence/x"
    with pytest.raises(ConfigError):
        ServerConfig(data_dir=tmp_path, origin="o", blob_store="/srv/blobs")
    with pytest.raises(ConfigError):
        ServerConfig(data_dir=tmp_path, origin="o", s3_endpoint="http://127.0.0.1:7480")


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "PutObject")


def test_client_errors_become_storage_errors() -> None:
    assert isinstance(translate(_client_error("NoSuchKey", 404), "x"), Missing)
    assert isinstance(translate(_client_error("PreconditionFailed", 412), "x"), Conflict)
    assert isinstance(translate(_client_error("QuotaExceeded", 403), "x"), InsufficientStorage)
    for code, status in (("SlowDown", 503), ("InternalError", 500), ("AccessDenied", 403),
                         ("NoSuchBucket", 404)):
        assert isinstance(translate(_client_error(code, status), "x"), BlobStoreUnavailable)
    assert isinstance(translate(EndpointConnectionError(endpoint_url="http://x"), "x"),
                      BlobStoreUnavailable)
    assert isinstance(translate(TimeoutError(), "x"), BlobStoreUnavailable)
    odd = translate(_client_error("InvalidArgument", 400), "x")
    assert type(odd) is StorageError
    assert BlobStoreUnavailable.http_status == 503 and InsufficientStorage.http_status == 507
