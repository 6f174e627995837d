"""A BackupStore over an S3 bucket (Cinder's s3 driver layout: bucket = container, key = object name).

Ranged GETs only (``Range: bytes=a-b``); a whole data object is never requested.  The
client is boto3's, built from an endpoint and a credentials file holding
``{"access_key": ..., "secret_key": ...}`` (the sandbox's radosgw user, a target's [s3]).
"""

from __future__ import annotations

import json
import os
from typing import Any

from drills.restore.errors import BackupFormatError, MissingObjectError
from drills.restore.store import SMALL_OBJECT_LIMIT_BYTES


def s3_client(endpoint: str, credentials_file: str | os.PathLike[str]) -> Any:
    import boto3
    from botocore.config import Config

    with open(credentials_file) as f:
        creds = json.load(f)
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=creds["access_key"],
                        aws_secret_access_key=creds["secret_key"], region_name="us-east-1",
                        config=Config(retries={"max_attempts": 3, "mode": "standard"},
                                      max_pool_connections=64, s3={"addressing_style": "path"}))


def _is_missing(error: Exception) -> bool:
    code = str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


class S3BackupStore:
    """Ranged reads from one bucket; boto3 clients are thread-safe, so one may serve many stores."""

    def __init__(self, client: Any, bucket: str, key_prefix: str = "") -> None:
        self._client = client
        self.bucket = bucket
        self._key_prefix = key_prefix
        self.description = f"s3:{bucket}/{key_prefix}" if key_prefix else f"s3:{bucket}"

    def _key(self, name: str) -> str:
        return f"{self._key_prefix}{name}"

    def open_object(self, name: str) -> int:
        from botocore.exceptions import ClientError

        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._key(name))
        except ClientError as e:
            if _is_missing(e):
                raise MissingObjectError(f"object missing from {self.description}", object_name=name) from None
            raise
        return int(head["ContentLength"])

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        from botocore.exceptions import ClientError

        if length <= 0:
            return b""
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(name),
                                               Range=f"bytes={offset}-{offset + length - 1}")
        except ClientError as e:
            if _is_missing(e):
                raise MissingObjectError(f"object vanished from {self.description}", object_name=name) from None
            if str(e.response.get("Error", {}).get("Code")) == "InvalidRange":
                return b""  # offset at or past the end
            raise
        body = response["Body"]
        try:
            return body.read()
        finally:
            body.close()

    def get_small(self, name: str, limit: int = SMALL_OBJECT_LIMIT_BYTES) -> bytes:
        size = self.open_object(name)
        if size > limit:
            raise BackupFormatError(f"{size} bytes, larger than the {limit}-byte limit", object_name=name)
        return self.read_range(name, 0, size)

    # Writing is for making test backups only.
    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client.create_bucket(Bucket=self.bucket)
        except ClientError as e:
            if str(e.response.get("Error", {}).get("Code")) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def put_object(self, name: str, data: bytes) -> None:
        self._client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)

    def delete_object(self, name: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._key(name))
