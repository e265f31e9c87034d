"""An S3-compatible endpoint for tests: moto's standalone server on 127.0.0.1.

Started as a subprocess on a free port with a bounded lifetime (`timeout`), stopped by its
PID; the tests reach it through s3fs exactly as they would reach AWS.
"""

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request


CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def moto_server(lifetime_s: int = 1800):
    """Yield the endpoint URL of a fresh moto S3 server (killed on exit, or after
    `lifetime_s` whatever happens to the test process)."""
    port = _free_port()
    command = ["timeout", "-s", "KILL", str(lifetime_s), sys.executable, "-m", "moto.server",
               "-H", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=dict(os.environ, **CREDENTIALS))
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on {endpoint}") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
