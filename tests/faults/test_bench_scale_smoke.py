"""``bench/scale.py`` runs end to end (tiny, against the session's RGW); no timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests import s3

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("upload_mib_s_fs", "upload_mib_s_s3", "pull_mib_s_fs", "pull_mib_s_s3",
        "s3_ratio_vs_boto3_raw")


def test_bench_scale_prints_its_figures_as_json() -> None:
    account = s3.account()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": account.access_key,
           "AWS_SECRET_ACCESS_KEY": account.secret_key}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale.py"), "--mib", "6", "--chunk-mib", "2",
         "--s3-endpoint", account.endpoint, "--bucket", s3.BUCKET, "--json"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout)
    for key in KEYS:
        assert isinstance(figures[key], int | float) and figures[key] > 0, key
